"""Shared test fixtures: where ../shared/data is, and a skip when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

# The research images live beside the repository, never inside it.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data; skips the test with a clear reason where it is absent."""
    if not (SHARED_DATA / "benchmark" / "Set5" / "HR").is_dir():
        pytest.skip(f"research data not found at {SHARED_DATA} (it sits beside the repository in CI)")
    return SHARED_DATA
