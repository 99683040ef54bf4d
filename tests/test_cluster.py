"""The same batch on a local Dask cluster of two worker processes: the single-process outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from superres.batch.files import upscale_files
from superres.images import write_image

pytest.importorskip("distributed", reason="the dask extra is not installed: pip install 'superres[dask]'")


def test_a_local_dask_cluster_writes_the_single_process_outputs(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for index in range(26):
        # 20 images of one size (the local run batches those, the cluster runs each alone) and 6
        # of others: the bytes must not depend on the grouping.
        width = 16 if index < 20 else index
        pixels = np.random.default_rng(index).integers(0, 255, (20, width, 3), dtype=np.uint8)
        write_image(tmp_path / "in" / f"img{index}.png", pixels)
    (tmp_path / "in" / "broken.png").write_bytes(b"not an image")
    common = {"scale": 2, "model": "espcn", "device": "cpu"}
    local = upscale_files([tmp_path / "in"], tmp_path / "local", **common)
    dask = upscale_files([tmp_path / "in"], tmp_path / "dask", cluster="local", workers=2, **common)
    assert len(dask.written) == len(local.written) == 26
    assert [path for path, _ in dask.failed] == [tmp_path / "in" / "broken.png"]
    for output in local.written:
        assert (tmp_path / "dask" / output.name).read_bytes() == output.read_bytes()
    # The same journal: the one failure keeps it, and it lists the finished outputs.
    journal = tmp_path / "dask" / ".superres-journal.jsonl"
    assert len(journal.read_text().splitlines()) == 1 + 26
