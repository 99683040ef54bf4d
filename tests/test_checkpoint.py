"""Tests of superres.zoo.checkpoint: safetensors round trips, damaged files, optimizer state, no pickle."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
import torch

import superres
from superres.errors import CheckpointError, ModelError
from superres.models import create_model
from superres.zoo.checkpoint import (
    load_checkpoint,
    load_model,
    optimizer_state_from_storage,
    optimizer_state_to_storage,
    save_checkpoint,
)

TINY_SRCNN = {"kernel_sizes": [3, 1, 3], "num_features": [8, 4]}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and two spinning threads crawl on a busy 2-core box."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_model(seed: int = 0, **kwargs: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("srcnn", 2, **{**TINY_SRCNN, **kwargs})


def metadata_for(model: torch.nn.Module) -> dict[str, object]:
    return {"model": "srcnn", "scale": 2, "model_kwargs": model.model_kwargs, "channels": "Y", "step": 7}


def test_round_trip_keeps_weights_metadata_and_extras(tmp_path: Path) -> None:
    model = tiny_model()
    path = tmp_path / "model.safetensors"
    extra = {"rng.torch": torch.get_rng_state(), "optim.0.exp_avg": torch.randn(3, 2)}
    save_checkpoint(path, model, metadata_for(model), extra)
    state_dict, metadata, loaded_extra = load_checkpoint(path)
    assert set(state_dict) == set(model.state_dict())
    for name, tensor in model.state_dict().items():
        assert torch.equal(state_dict[name], tensor)
    assert metadata["step"] == 7 and metadata["format_version"] == 1
    assert metadata["model_kwargs"] == {"kernel_sizes": [3, 1, 3], "num_features": [8, 4]}
    assert set(loaded_extra) == set(extra)
    assert torch.equal(loaded_extra["optim.0.exp_avg"], extra["optim.0.exp_avg"])
    assert not [p for p in tmp_path.iterdir() if p.name != "model.safetensors"]  # no temp files left

    rebuilt, _ = load_model(path, expect_model="srcnn", expect_scale=2)
    lr = torch.rand(1, 1, 6, 7)
    model.eval()
    assert torch.equal(rebuilt(lr), model(lr))


def test_file_is_plain_safetensors_with_json_metadata(tmp_path: Path) -> None:
    model = tiny_model()
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, model, metadata_for(model))
    raw = path.read_bytes()
    (header_length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_length])
    assert json.loads(header["__metadata__"]["superres"])["model"] == "srcnn"


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[: len(raw) // 2],  # truncated
        lambda raw: b"\x00" * len(raw),  # zeroed
        lambda raw: b"PK\x03\x04 not a checkpoint at all",  # some other format
        lambda raw: b"",  # empty
    ],
)
def test_damaged_files_raise_checkpoint_error_naming_the_file(tmp_path: Path, damage) -> None:
    model = tiny_model()
    path = tmp_path / "broken.safetensors"
    save_checkpoint(path, model, metadata_for(model))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        load_checkpoint(path)


def test_missing_file_and_foreign_safetensors_raise_checkpoint_error(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.safetensors")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a superres checkpoint"):
        load_checkpoint(foreign)


def test_other_model_scale_or_shapes_are_clear_errors(tmp_path: Path) -> None:
    model = tiny_model()
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, model, metadata_for(model))
    with pytest.raises(CheckpointError, match="'srcnn' model, not the expected 'rednet'"):
        load_model(path, expect_model="rednet")
    with pytest.raises(CheckpointError, match="x2 model, not the expected x3"):
        load_model(path, expect_scale=3)
    # Metadata that says one shape while the tensors hold another: a ModelError, not a traceback.
    metadata = {**metadata_for(model), "model_kwargs": {"kernel_sizes": [3, 1, 3], "num_features": [16, 4]}}
    save_checkpoint(path, model, metadata)
    with pytest.raises(ModelError, match="shape"):
        load_model(path)


def test_a_failed_write_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    model = tiny_model()
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, model, metadata_for(model))
    before = path.read_bytes()

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    # The disk fills up while the new file is written, after its temporary file exists.
    monkeypatch.setattr(os, "fsync", full_disk)
    expected = r"\(No space left on device\); the previous checkpoint is kept"
    with pytest.raises(CheckpointError, match=expected):
        save_checkpoint(path, tiny_model(seed=1), metadata_for(model))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_optimizer_state_survives_the_round_trip_exactly(tmp_path: Path) -> None:
    def run_steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, seeds: range) -> None:
        for seed in seeds:
            generator = torch.Generator().manual_seed(seed)
            lr = torch.rand(2, 1, 6, 6, generator=generator)
            loss = (model(lr) - torch.rand(2, 1, 12, 12, generator=generator)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    model = tiny_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.8, 0.99))
    run_steps(model, optimizer, range(3))
    tensors, json_part = optimizer_state_to_storage(optimizer)
    path = tmp_path / "state.safetensors"
    save_checkpoint(path, model, {**metadata_for(model), "optimizer": json_part}, tensors)

    state_dict, metadata, extra = load_checkpoint(path)
    restored_model = tiny_model(seed=5)
    restored_model.load_state_dict(state_dict)
    restored = torch.optim.Adam(restored_model.parameters(), lr=1.0)
    restored.load_state_dict(optimizer_state_from_storage(extra, metadata["optimizer"]))
    assert restored.param_groups[0]["betas"] == (0.8, 0.99)
    run_steps(model, optimizer, range(3, 6))
    run_steps(restored_model, restored, range(3, 6))
    for a, b in zip(model.parameters(), restored_model.parameters()):
        assert torch.equal(a, b)


def test_no_unpickling_anywhere_in_the_package() -> None:
    # The one reader of torch's own formats passes weights_only=True (torch's allow-list unpickler);
    # nothing else may load a pickle, through torch, pickle or numpy.
    package = Path(superres.__file__).parent
    unsafe = re.compile(r"pickle\.loads?\(|allow_pickle=True|Unpickler\(")
    for path in package.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not unsafe.search(text), path
        for call in re.findall(r"torch\.load\((.*?)\)\n", text, flags=re.S):
            assert "weights_only=True" in call, path
