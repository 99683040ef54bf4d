"""A batch of images on a Dask cluster (`superres upscale --scheduler ADDRESS`, or `--dask`).

The planning (inputs, outputs, shard, journal) is `superres.batch.files.plan_batch`'s, on the
client; each remaining image is one Dask task that reads, upscales and writes it atomically on a
worker, and the client appends each finished one to the same journal as a local run, so a batch
may be started on a cluster and resumed on one machine, or the other way round. A worker process
loads the model once (`_worker_for` keeps it per process and settings), not once per task.
Paths are sent as absolute paths: the workers must see the same file system (a shared disk).
Dask reruns the tasks of a worker that died, and a write is atomic, so that leaves no half file.

Needs the `dask` extra (`pip install 'superres[dask]'`: dask and distributed).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from superres.batch.worker import BatchPlan, BatchSettings, ImageBatchWorker
from superres.errors import ConfigError, SuperresError

logger = logging.getLogger(__name__)

#: This process's loaded models, by the settings they were made for (one per worker process).
_WORKERS: dict[BatchSettings, ImageBatchWorker] = {}
_WORKERS_LOCK = threading.Lock()
#: Workers of a local cluster when none is asked for: the cores split two ways at least.
DEFAULT_LOCAL_WORKERS = 2


def _worker_for(settings: BatchSettings) -> ImageBatchWorker:
    # Under the lock: two threads of one worker must not load the same model twice.
    with _WORKERS_LOCK:
        worker = _WORKERS.get(settings)
        if worker is None:
            logger.info("loading %s x%d on this worker", settings.model, settings.scale)
            worker = _WORKERS[settings] = ImageBatchWorker(settings)
        return worker


def upscale_task(settings: BatchSettings, input_path: str, output_path: str) -> str | None:
    """One image on a worker: None when written, else the one-line reason it failed."""
    from superres.batch.journal import describe_failure

    try:
        _worker_for(settings).upscale_file(Path(input_path), Path(output_path))
    except (SuperresError, OSError) as error:
        return describe_failure(Path(input_path), error)
    return None


@contextmanager
def dask_client(scheduler: str, workers: int | None = None) -> Iterator[object]:
    """A `distributed.Client` on `scheduler` (an address), or on a local cluster of `workers`
    processes for "local" (one thread each, the cores shared out among them)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as error:
        raise ConfigError("a cluster run needs the dask extra: pip install 'superres[dask]'") from error
    if scheduler != "local":
        with Client(scheduler) as client:
            yield client
        return
    count = workers or DEFAULT_LOCAL_WORKERS
    if count < 1:
        raise ConfigError(f"--workers must be at least 1, got {count}")
    threads = max(1, (os.cpu_count() or 1) // count)
    # Processes, not threads: each worker has its own interpreter and its own torch threads.
    with LocalCluster(
        n_workers=count,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        env={"OMP_NUM_THREADS": str(threads)},
    ) as cluster, Client(cluster) as client:
        yield client


def run_on_dask(
    plan: BatchPlan, settings: BatchSettings, scheduler: str, *, workers: int | None = None
) -> None:
    """The plan's jobs as Dask tasks; results go to the plan's report and journal as they end."""
    if not isinstance(settings.model, str):
        raise ConfigError("a cluster run takes a model name or checkpoint path, not a network object")
    if not plan.jobs:
        return
    from distributed import as_completed
    from tqdm import tqdm

    with dask_client(scheduler, workers) as client:
        futures = {
            client.submit(
                upscale_task, settings, str(input_path.absolute()), str(output_path.absolute()),
                pure=False,
            ): (input_path, output_path)
            for input_path, output_path in plan.jobs
        }
        with tqdm(total=len(futures), unit="image", disable=len(futures) < 2, leave=False) as bar:
            for future in as_completed(futures):
                input_path, output_path = futures[future]
                try:
                    reason = future.result()
                except Exception as error:  # a task lost with its worker too often: say so, go on
                    reason = f"{input_path}: the cluster could not run it ({error})"
                if reason is None:
                    plan.done(input_path, output_path)
                else:
                    plan.failed(input_path, reason)
                bar.update()


__all__ = ["dask_client", "run_on_dask", "upscale_task"]
