"""Tests of superres.training.data: colour conversion, packing, aligned patches, prepared patch files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from superres.cli import main
from superres.errors import ConfigError
from superres.images import write_image
from superres.ops.color import rgb_to_y
from superres.ops.resize import imresize, modcrop
from superres.training.data import (
    DeviceBatches,
    PairedPatchSampler,
    PatchFileDataset,
    apply_transform,
    load_hr_images,
    open_patch_source,
    pack_images,
    prepare_patches,
    to_batch,
    to_training_channels,
)


def synthetic_image(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A smooth random uint8 image (sums of sinusoids): structured like a photo, not like noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    planes = []
    for _ in range(channels):
        plane = sum(
            np.sin(rng.uniform(0.05, 0.4) * y + rng.uniform(0.05, 0.4) * x + rng.uniform(0, 6))
            for _ in range(3)
        )
        planes.append(plane)
    image = np.stack(planes, axis=2)
    image = (image - image.min()) / (image.max() - image.min()) * 255.0
    return np.round(image).astype(np.uint8)


def write_images(folder: Path, sizes: list[tuple[int, int]], channels: int = 3) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for index, (height, width) in enumerate(sizes):
        image = synthetic_image(height, width, channels, seed=index)
        write_image(folder / f"image{index:02d}.png", image if channels > 1 else image[..., 0])
        images.append(image)
    return images


# --- colour ---------------------------------------------------------------------------------


def test_training_channels_follow_the_evaluation_protocol() -> None:
    rgb = synthetic_image(10, 12, 3)
    y = to_training_channels(rgb, "Y")
    expected = np.floor(rgb_to_y(rgb / 255.0) * 255.0 + 0.5).astype(np.uint8)
    assert y.shape == (10, 12, 1) and y.dtype == np.uint8
    np.testing.assert_array_equal(y[..., 0], expected)

    gray = synthetic_image(10, 12, 1)[..., 0]
    np.testing.assert_array_equal(to_training_channels(gray, "Y")[..., 0], gray)  # gray is its own Y
    np.testing.assert_array_equal(to_training_channels(gray, "RGB"), np.repeat(gray[..., None], 3, 2))

    rgba = np.concatenate([rgb, np.full((10, 12, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(to_training_channels(rgba, "RGB"), rgb)  # alpha dropped
    np.testing.assert_array_equal(to_training_channels(rgb.astype(np.uint16) * 257, "RGB"), rgb)


# --- sampling -------------------------------------------------------------------------------


@pytest.fixture
def hr_images() -> list[np.ndarray]:
    sizes = [(41, 53), (64, 47), (30, 30)]
    return [synthetic_image(h, w, 1, seed=seed) for seed, (h, w) in enumerate(sizes, start=1)]


def test_lr_images_are_matlab_imresize_of_the_modcropped_hr(hr_images: list[np.ndarray]) -> None:
    sampler = PairedPatchSampler(hr_images, 3, 6)
    for hr_full, hr, lr in zip(hr_images, sampler.hr_images, sampler.lr_images):
        np.testing.assert_array_equal(hr, modcrop(hr_full, 3))
        np.testing.assert_array_equal(lr, imresize(modcrop(hr_full, 3), 1 / 3))
        assert lr.dtype == np.uint8


def test_crops_are_aligned_between_lr_and_hr(hr_images: list[np.ndarray]) -> None:
    scale, patch = 2, 7
    sampler = PairedPatchSampler(hr_images, scale, patch, augment=False)
    draw = sampler.draw(50, np.random.default_rng(1))
    lr, hr = sampler.crop(draw)
    assert lr.shape == (50, patch, patch, 1) and hr.shape == (50, scale * patch, scale * patch, 1)
    for i, (index, y, x) in enumerate(zip(draw.image_index, draw.lr_y, draw.lr_x)):
        full_lr, full_hr = sampler.lr_images[index], sampler.hr_images[index]
        np.testing.assert_array_equal(lr[i], full_lr[y : y + patch, x : x + patch])
        hs = scale * patch
        np.testing.assert_array_equal(hr[i], full_hr[scale * y : scale * y + hs, scale * x : scale * x + hs])


def test_augmentation_transforms_lr_and_hr_alike(hr_images: list[np.ndarray]) -> None:
    scale, patch = 2, 5
    plain = PairedPatchSampler(hr_images, scale, patch, augment=False)
    augmented = PairedPatchSampler(hr_images, scale, patch, augment=True)
    draw = augmented.draw(200, np.random.default_rng(2))
    assert set(draw.transform.tolist()) == set(range(8))
    lr, hr = augmented.crop(draw)
    untransformed = type(draw)(draw.image_index, draw.lr_y, draw.lr_x, np.zeros_like(draw.transform))
    plain_lr, plain_hr = plain.crop(untransformed)
    for i, transform in enumerate(draw.transform.tolist()):
        np.testing.assert_array_equal(lr[i], apply_transform(plain_lr[i], transform))
        np.testing.assert_array_equal(hr[i], apply_transform(plain_hr[i], transform))
    # Each transform keeps the pair consistent: the HR patch, box-averaged, still looks like the LR.
    box = hr.reshape(200, patch, scale, patch, scale, 1).mean(axis=(2, 4))
    assert np.abs(box - lr).mean() < 6.0


def test_the_same_seed_gives_the_same_batch(hr_images: list[np.ndarray]) -> None:
    sampler = PairedPatchSampler(hr_images, 2, 6)
    first = sampler.sample(16, np.random.default_rng(5))
    second = sampler.sample(16, np.random.default_rng(5))
    other = sampler.sample(16, np.random.default_rng(6))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[1], other[1])


def test_chunked_draws_equal_one_draw(hr_images: list[np.ndarray]) -> None:
    sampler = PairedPatchSampler(hr_images, 2, 6)
    whole = sampler.sample(30, np.random.default_rng(9))
    rng = np.random.default_rng(9)
    parts = [sampler.sample(n, rng) for n in (7, 16, 7)]
    np.testing.assert_array_equal(whole[1], np.concatenate([part[1] for part in parts]))


def test_too_small_images_are_skipped_with_a_warning(
    hr_images: list[np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="superres.training.data"):
        sampler = PairedPatchSampler(hr_images, 2, 16, names=["big-a", "big-b", "tiny"])
    assert sampler.names == ["big-a", "big-b"]
    assert "tiny" in caplog.text and "skipping 1 of 3" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="superres.training.data"):
        PairedPatchSampler(hr_images + [hr_images[2]] * 5, 2, 16)
    assert len(caplog.records) == 1 and "skipping 6 of 8" in caplog.text


def test_all_images_too_small_is_a_config_error(hr_images: list[np.ndarray]) -> None:
    with pytest.raises(ConfigError, match="smaller than the HR patch"):
        PairedPatchSampler(hr_images, 4, 20)


def test_a_batch_of_64_depends_only_on_its_random_stream() -> None:
    # What exact resumption rests on: step k's batch is a function of rng([seed, rank, k]) alone.
    # (Its speed is `superres bench`'s business: timings never decide a test here.)
    images = [synthetic_image(200, 300, 1, seed=i) for i in range(4)]
    sampler = PairedPatchSampler(images, 2, 24)
    sampler.sample(64, np.random.default_rng(0))  # an earlier draw must not matter
    for step in range(3):
        first = sampler.sample(64, np.random.default_rng([0, 0, step]))
        again = PairedPatchSampler(images, 2, 24).sample(64, np.random.default_rng([0, 0, step]))
        for a, b in zip(first, again, strict=True):
            np.testing.assert_array_equal(a, b)


def test_to_batch_gives_float_nchw_in_unit_range() -> None:
    lr = np.random.default_rng(0).integers(0, 256, (4, 5, 6, 1), dtype=np.uint8)
    hr = np.random.default_rng(1).integers(0, 256, (4, 10, 12, 1), dtype=np.uint8)
    lr_t, hr_t = to_batch(lr, hr, "cpu")
    assert lr_t.shape == (4, 1, 5, 6) and hr_t.shape == (4, 1, 10, 12)
    assert lr_t.dtype == torch.float32 and lr_t.is_contiguous()
    torch.testing.assert_close(lr_t[:, 0], torch.from_numpy(lr[..., 0]).float() / 255.0, rtol=0, atol=0)
    lr_cl, _ = to_batch(lr, hr, "cpu", channels_last=True)
    assert lr_cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(lr_cl, lr_t)


@pytest.mark.parametrize("channels", [1, 3])
def test_device_batches_equal_the_numpy_sampler(channels: int) -> None:
    images = [synthetic_image(41, 53, channels, seed=1), synthetic_image(64, 47, channels, seed=2)]
    sampler = PairedPatchSampler(images, 3, 7, augment=True)
    expected_lr, expected_hr = to_batch(*sampler.sample(300, np.random.default_rng(8)), "cpu")
    lr, hr = DeviceBatches(sampler, "cpu").sample(300, np.random.default_rng(8))
    assert lr.shape == (300, channels, 7, 7) and hr.shape == (300, channels, 21, 21) and lr.is_contiguous()
    assert torch.equal(lr, expected_lr) and torch.equal(hr, expected_hr)
    lr_cl, _ = DeviceBatches(sampler, "cpu", channels_last=True).sample(300, np.random.default_rng(8))
    assert torch.equal(lr_cl, expected_lr) and lr_cl.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_device_batches_on_cuda_equal_the_numpy_sampler() -> None:
    sampler = PairedPatchSampler([synthetic_image(60, 70, 1, seed=4)], 2, 9)
    expected_lr, expected_hr = to_batch(*sampler.sample(64, np.random.default_rng(3)), "cpu")
    lr, hr = DeviceBatches(sampler, "cuda", channels_last=True).sample(64, np.random.default_rng(3))
    assert lr.is_cuda and torch.equal(lr.cpu(), expected_lr) and torch.equal(hr.cpu(), expected_hr)


# --- files ----------------------------------------------------------------------------------


def test_pack_converts_to_training_colour_and_round_trips(tmp_path: Path) -> None:
    rgb_images = write_images(tmp_path / "a", [(20, 24), (18, 30)])
    gray_images = write_images(tmp_path / "b" / "nested", [(16, 16)], channels=1)
    out = tmp_path / "packed.npz"
    meta = pack_images([tmp_path / "a", tmp_path / "b"], out, channels="Y")
    assert meta["count"] == 3 and meta["channels"] == "Y"
    with np.load(out, allow_pickle=False) as archive:
        assert sorted(archive.files) == ["img_00000", "img_00001", "img_00002", "meta"]
        assert json.loads(str(archive["meta"]))["channels"] == "Y"
    images, names = load_hr_images([out], "Y")
    np.testing.assert_array_equal(images[0], to_training_channels(rgb_images[0], "Y"))
    np.testing.assert_array_equal(images[2][..., 0], gray_images[0][..., 0])
    assert names[2].endswith("image00.png")
    with pytest.raises(ConfigError, match="packed as Y"):
        load_hr_images([out], "RGB")
    assert not list(tmp_path.glob("*.tmp*"))


def test_pack_with_downscales_adds_a_matlab_bicubic_copy_per_factor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rgb_images = write_images(tmp_path / "hr", [(40, 50), (30, 20)])
    out = tmp_path / "packed.npz"
    args = ["pack", str(tmp_path / "hr"), "-o", str(out), "--downscales", "0.75", "0.5"]
    assert main(args) == 0
    assert "packed 6 images" in capsys.readouterr().out
    images, names = load_hr_images([out], "Y")
    originals = [to_training_channels(image, "Y") for image in rgb_images]
    expected = [*originals, *(imresize(image, f) for f in (0.75, 0.5) for image in originals)]
    assert [image.shape for image in images] == [
        (40, 50, 1), (30, 20, 1), (30, 38, 1), (23, 15, 1), (20, 25, 1), (15, 10, 1)
    ]
    for got, want in zip(images, expected):
        np.testing.assert_array_equal(got, want)
    assert names[2].endswith("image00.png@0.75") and names[5].endswith("image01.png@0.5")
    for bad in ("1.0", "0", "-0.5"):
        assert main(["pack", str(tmp_path / "hr"), "-o", str(tmp_path / "bad.npz"), "--downscales", bad]) == 2
        assert "strictly between 0 and 1" in capsys.readouterr().err
    assert not (tmp_path / "bad.npz").exists()


def test_prepare_equals_on_the_fly_sampling_with_the_same_seed(tmp_path: Path) -> None:
    write_images(tmp_path / "hr", [(40, 44), (52, 36)])
    out = tmp_path / "pairs.npz"
    meta = prepare_patches(
        [tmp_path / "hr"], out, scale=2, patch_size=8, count=37, degradation="bicubic", channels="Y", seed=4
    )
    assert meta["count"] == 37
    images, names = load_hr_images([tmp_path / "hr"], "Y")
    sampler = PairedPatchSampler(images, 2, 8, names=names)
    lr, hr = sampler.sample(37, np.random.default_rng(4))
    dataset = PatchFileDataset(out)
    np.testing.assert_array_equal(dataset.lr, lr)
    np.testing.assert_array_equal(dataset.hr, hr)
    lr_batch, hr_batch = dataset.sample(5, np.random.default_rng(0))
    assert lr_batch.shape == (5, 8, 8, 1) and hr_batch.shape == (5, 16, 16, 1)
    assert dataset.steps_per_epoch(10) == 4
    device_lr, device_hr = DeviceBatches(dataset, "cpu").sample(5, np.random.default_rng(0))
    assert torch.equal(device_hr, to_batch(lr_batch, hr_batch, "cpu")[1])
    source = open_patch_source([out], scale=2, patch_size=8, degradation="bicubic", channels="Y")
    assert isinstance(source, PatchFileDataset)
    with pytest.raises(ConfigError, match="patch_size 8"):
        open_patch_source([out], scale=2, patch_size=10, degradation="bicubic", channels="Y")


def test_pack_and_prepare_command_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_images(tmp_path / "hr", [(40, 44), (52, 36)])
    packed = tmp_path / "packed.npz"
    assert main(["pack", str(tmp_path / "hr"), "-o", str(packed), "--channels", "RGB"]) == 0
    assert "packed 2 images" in capsys.readouterr().out
    pairs = tmp_path / "pairs.npz"
    args = ["prepare", str(packed), "-o", str(pairs), "--scale", "2", "--patch-size", "8"]
    args += ["--count", "10", "--channels", "RGB", "--degradation", "bilinear", "--seed", "3"]
    assert main(args) == 0
    assert PatchFileDataset(pairs).lr.shape == (10, 8, 8, 3)


def test_bad_sources_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["pack", str(tmp_path / "empty"), "-o", str(tmp_path / "x.npz")]) == 2
    assert "no images found in" in capsys.readouterr().err
    assert main(["pack", str(tmp_path / "missing"), "-o", str(tmp_path / "x.npz")]) == 2
    assert "not found" in capsys.readouterr().err
    write_images(tmp_path / "small", [(10, 10)])
    args = ["prepare", str(tmp_path / "small"), "-o", str(tmp_path / "p.npz"), "--scale", "4"]
    assert main([*args, "--patch-size", "8", "--count", "5"]) == 2
    assert "smaller than the HR patch" in capsys.readouterr().err
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert main(["prepare", str(tmp_path / "junk.npz"), "-o", str(tmp_path / "p.npz"), "--scale", "2",
                 "--patch-size", "4", "--count", "5"]) == 2
    assert "junk.npz" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists() and not (tmp_path / "p.npz").exists()
