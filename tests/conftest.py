"""Shared test fixtures: where ../shared/data is, and a skip when it is absent; under pytest-xdist
(`make test`), the number of workers, each worker's share of the cores and its own cache folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The research images live beside the repository, never inside it.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _share_the_cores() -> None:
    """Under pytest-xdist, N workers share the cores: each computes on cores/N threads (at least one)
    instead of all of them, as torch and OpenMP would by default, so that the workers do not spin
    against each other. The environment variables reach the subprocesses tests start as well; a
    value the caller set is kept."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    if workers <= 1:
        return
    threads = str(max(1, _cores() // workers))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(name, threads)
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


_share_the_cores()

#: More workers than this gain little on this suite (each imports torch and collects every test
#: first, and the slowest tests take a good part of the run by themselves) and cost memory.
MAX_AUTO_WORKERS = 8


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto`: one worker per core this process may run on (its affinity mask, a container's
    cpuset included, where xdist would count the host's physical cores with psutil), at most
    MAX_AUTO_WORKERS. PYTEST_XDIST_AUTO_NUM_WORKERS, when set, still decides (xdist's own hook)."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    return min(_cores(), MAX_AUTO_WORKERS)


@pytest.fixture(scope="session", autouse=True)
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """superres's cache (community models' measurements) in this session's temporary folder, one per
    xdist worker: never the user's ~/.cache, never a file two workers write at once."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SUPERRES_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "superres-cache"))
        yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data; skips the test with a clear reason where it is absent."""
    if not (SHARED_DATA / "benchmark" / "Set5" / "HR").is_dir():
        pytest.skip(f"research data not found at {SHARED_DATA} (it sits beside the repository in CI)")
    return SHARED_DATA
