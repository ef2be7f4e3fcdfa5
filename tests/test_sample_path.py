"""Image folders' per-sample path: torchvision.io decoding, per-image crops, batched augmentation (data.cache=off)."""

from __future__ import annotations

import re
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab import build_datamodule, compose_config
from cnnlab.data.decode import decode_jpeg_batch, read_bytes, read_image_file
from cnnlab.data.sample_path import (EncodedFiles, TrainSample, collate_encoded, decode_on_device,
                                     random_box, resized_crop, split_augmentation)
from cnnlab.errors import ConfigError, CorruptImageError
from conftest import results_of, run_cli, run_dir_of


def pil_pixels(path: Path, channels: int) -> torch.Tensor:
    """What the PIL loader the path used before gave (``convert``), as a (C, H, W) tensor."""
    array = np.asarray(Image.open(path).convert("L" if channels == 1 else "RGB"))
    tensor = torch.from_numpy(array.copy())
    return tensor[None] if channels == 1 else tensor.permute(2, 0, 1)


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One smooth colour image (a photograph's statistics, not noise) in every format the decoder handles."""
    folder = tmp_path_factory.mktemp("formats")
    yy, xx = np.mgrid[0:45, 0:60]
    pixels = np.stack([xx * 4, yy * 5, 255 - xx * 2 - yy * 2], -1).clip(0, 255).astype(np.uint8)
    files = {}
    for name, options in (("png", {}), ("jpg", {"quality": 90}), ("bmp", {}), ("webp", {"lossless": True})):
        files[name] = folder / f"image.{name}"
        Image.fromarray(pixels).save(files[name], **options)
    files["grey.png"] = folder / "grey.png"
    Image.fromarray(pixels[..., 0]).save(files["grey.png"])
    return files


@pytest.mark.parametrize("name", ["png", "bmp", "webp", "grey.png"])
@pytest.mark.parametrize("channels", [1, 3])
def test_lossless_files_decode_to_the_same_pixels_as_pil(photo_files: dict[str, Path], name: str,
                                                         channels: int) -> None:
    image = read_image_file(str(photo_files[name]), channels)
    assert image.dtype == torch.uint8 and image.shape == (channels, 45, 60)
    reference = pil_pixels(photo_files[name], channels)
    if channels == 1 and name != "grey.png":  # RGB → grey: libpng's weights vs PIL's, one grey level apart
        assert (image.int() - reference.int()).abs().max() <= 1
    else:
        assert torch.equal(image, reference)


@pytest.mark.parametrize("channels", [1, 3])
def test_jpegs_decode_to_pil_pixels_within_jpeg_tolerance(photo_files: dict[str, Path], channels: int) -> None:
    image = read_image_file(str(photo_files["jpg"]), channels).int()
    difference = (image - pil_pixels(photo_files["jpg"], channels).int()).abs()
    # the same libjpeg-turbo decodes colour exactly; straight-to-grey skips the chroma PIL converts back
    assert difference.float().mean() <= 1.0 and difference.max() <= 4


def test_an_undecodable_file_is_named_with_the_usual_message(tmp_path: Path) -> None:
    for name, content in (("broken.jpg", b"\xff\xd8\xffnot a jpeg"), ("broken.png", b"not a png at all")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CorruptImageError) as raised:
            read_image_file(str(tmp_path / name), 3)
        message = raised.value.user_message
        assert re.fullmatch(r"Cannot decode image .*" + name + r" \(.+\)\. Delete or replace the file, or set "
                            r"data\.skip_bad_images=true to leave undecodable files out of the run\.", message)
        assert "other images are fine" not in message


def write_colour_folder(root: Path, classes: int = 3, per_class: int = 24, seed: int = 0) -> Path:
    """JPEGs of varied sizes whose class is their colour cast (survives random-resized crops), both splits."""
    rng = np.random.default_rng(seed)
    casts = rng.integers(40, 216, size=(classes, 3))
    for split in ("train", "val"):
        for label in range(classes):
            (root / split / f"c{label}").mkdir(parents=True, exist_ok=True)
            for i in range(per_class if split == "train" else per_class // 3):
                h, w = rng.integers(30, 61, size=2)
                pixels = np.clip(casts[label] + rng.normal(0, 25, size=(h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / f"c{label}" / f"{i}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_colour_folder(tmp_path_factory.mktemp("colour") / "images")


def per_sample(root: Path, *overrides: str):
    dm = build_datamodule(compose_config(["data=imagefolder", f"data.root={root}", "data.image_size=32",
                                          "data.num_workers=0", "data.batch_size=8", "data.val_split=0.25",
                                          "data.cache=off", *overrides]))
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_training_batches_are_cropped_per_image_then_augmented_and_normalised_per_batch(colour_folder: Path) -> None:
    dm = per_sample(colour_folder, "augmentation=[standard,colour,randaugment,random_erasing]")
    assert dm.pipeline == "loader"
    # RandAugment has no batched version: it runs per image, on uint8, after the crop; so does the flip that
    # comes first (mirroring a uint8 crop in a worker is cheaper than a float batch in the training process)
    assert [type(t).__name__ for t in dm.train_sample.augmentations] == ["RandAugment"]
    assert dm.train_sample.flips == [(-1, 0.5)]
    batched = dm.sample_batch_pipeline
    assert [fn.__name__ for fn, _ in [*batched.leading_flips, *batched.on_images]] == ["random_crop",
                                                                                         "colour_jitter"]
    loader = dm.train_dataloader()
    assert loader.pin_memory is False  # no GPU: pinning would only cost
    torch.manual_seed(0)
    batch = next(iter(loader))
    assert batch[0].dtype == torch.uint8  # workers hand over uint8 crops: a quarter of float's shared memory
    images, labels = dm.on_after_batch_transfer(batch, 0)
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32 and labels.dtype == torch.int64
    assert -3 < images.mean() < 3 and images.std() > 0.1  # normalised with the ImageNet statistics
    # evaluation: the same centre crop every time, already normalised per image
    first, again = dm.val_set[0][0], dm.val_set[0][0]
    assert torch.equal(first, again) and first.shape == (3, 32, 32)


def test_the_data_loader_keeps_workers_and_prefetches(colour_folder: Path) -> None:
    loader = per_sample(colour_folder, "data.num_workers=1", "data.prefetch_factor=3").train_dataloader()
    assert (loader.num_workers, loader.prefetch_factor, loader.persistent_workers) == (1, 3, True)
    loader = per_sample(colour_folder, "data.num_workers=1", "data.persistent_workers=false",
                        "data.pin_memory=true").train_dataloader()
    assert (loader.persistent_workers, loader.pin_memory) == (False, True)


@pytest.mark.parametrize("cores,expected", [(1, 1), (2, 2), (16, 4)])
def test_the_folder_configs_default_to_no_more_workers_than_cores(colour_folder: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  cores: int, expected: int) -> None:
    from cnnlab.config.validate import validate
    from cnnlab.data import datamodule as datamodule_module

    monkeypatch.setattr(datamodule_module, "usable_cores", lambda: cores)
    cfg = compose_config(["data=imagefolder", f"data.root={colour_folder}"])
    assert cfg.data.num_workers is None  # the folder config's default: chosen for the machine
    validate(cfg)
    dm = per_sample(colour_folder, "data.num_workers=null")
    assert dm.loader_workers == expected == dm.spec["num_workers"]  # what the DataLoaders and the cache build use
    assert per_sample(colour_folder, "data.num_workers=3").loader_workers == 3  # the user's value, kept
    assert per_sample(colour_folder, "data.num_workers=null", "data.cache=memory").loader_workers == 0  # in memory


def test_the_gpu_decode_path_gives_the_cpu_paths_pixels(colour_folder: Path) -> None:
    """The GPU path's steps (bytes from workers, batched decode, crop on the device) on a CPU device, where
    decode_jpeg_batch decodes file by file: nvJPEG itself needs a GPU, which CI lacks."""
    dm = per_sample(colour_folder)
    files = EncodedFiles(dm.train_set.dataset, dm.train_set.indices[:4])
    batch = collate_encoded([files[i] for i in range(4)])
    expected = [read_image_file(path, 3) for path in batch.paths]
    decoded = decode_jpeg_batch(batch.files, batch.paths, 3, torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(decoded, expected))
    images, labels = decode_on_device(batch, 3, dm.train_sample, torch.device("cpu"))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.equal(labels, torch.tensor([dm.train_set.dataset.targets[i] for i in dm.train_set.indices[:4]]))
    assert torch.equal(read_bytes(batch.paths[0]), batch.files[0])


@pytest.mark.parametrize(("override", "message"), [
    ("data.prefetch_factor=0", "data.prefetch_factor"),
    ("data.pin_memory=sometimes", "data.pin_memory"),
    ("data.persistent_workers=maybe", "data.persistent_workers"),
    ("data.gpu_decode=nvjpeg", "data.gpu_decode"),
])
def test_loader_settings_are_checked(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        compose_config(["data=imagefolder", "data.root=/images", override])


def test_the_per_sample_path_trains_on_a_jpeg_folder(colour_folder: Path, tmp_path: Path) -> None:
    result = run_cli("train", "data=imagefolder", f"data.root={colour_folder}", "data.image_size=32",
                     "data.cache=off", "data.num_workers=2", "data.batch_size=16", "data.val_split=0.2",
                     "augmentation=[standard,randaugment]", "optimizer=adam", "optimizer.lr=0.003",
                     "trainer.max_epochs=3", "trainer.enable_model_summary=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    results = results_of(run_dir_of(result))
    assert results["status"] == "completed"
    assert results["test/acc"] >= 0.8  # chance: 0.33


def test_the_gpu_decode_path_skips_undecodable_files_when_asked(colour_folder: Path, tmp_path: Path) -> None:
    dm = per_sample(colour_folder)
    batch = collate_encoded([EncodedFiles(dm.train_set.dataset, dm.train_set.indices[:3])[i] for i in range(3)])
    batch.files[1], batch.paths[1] = torch.frombuffer(bytearray(b"\xff\xd8\xffbroken"), dtype=torch.uint8), "bad.jpg"
    with pytest.raises(CorruptImageError, match="bad.jpg"):
        decode_on_device(batch, 3, dm.train_sample, torch.device("cpu"))
    images, labels = decode_on_device(batch, 3, dm.train_sample, torch.device("cpu"), skip_bad=True)
    assert len(images) == 2 and torch.equal(labels, batch.labels[[0, 2]])


@pytest.mark.parametrize("channels", [3, 1])
def test_the_worker_crop_gives_torchvisions_resized_crop_pixels(colour_folder: Path, channels: int) -> None:
    """The packed channels-last crop (``resized_crop``) against torchvision's kernel, on decoded JPEGs of
    several sizes and a spread of boxes (enlarged and shrunk): the same uint8 pixels."""
    from torchvision.transforms.v2 import functional as F

    random.seed(0)
    files = sorted(colour_folder.glob("train/*/*.jpg"))[:12]
    for path in files:
        image = read_image_file(str(path), channels)
        for _ in range(4):
            box = random_box(*image.shape[-2:])
            ours = resized_crop(image, box, 32)
            assert ours.shape == (channels, 32, 32)
            assert torch.equal(ours, F.resized_crop_image(image, *box, [32, 32], antialias=True))


def test_crop_boxes_follow_torchvisions_rules() -> None:
    from torchvision import transforms as v1

    random.seed(1)
    boxes = [random_box(60, 90) for _ in range(2000)]
    for top, left, h, w in boxes:
        assert 0 <= top <= 60 - h and 0 <= left <= 90 - w
        assert 0.08 * 60 * 90 * 0.8 <= h * w <= 60 * 90  # the area fraction, up to the rounding of the sides
        assert 3 / 4 * 0.85 <= w / h <= 4 / 3 * 1.15
    # the same distribution as torchvision's draws (areas skewed small: large boxes of extreme aspect miss)
    torch.manual_seed(1)
    image = torch.zeros(3, 60, 90, dtype=torch.uint8)
    theirs = [v1.RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(2000)]
    for statistic in (lambda b: b[2] * b[3] / 5400, lambda b: b[3] / b[2], lambda b: b[0] + b[2] / 2,
                      lambda b: b[1] + b[3] / 2):
        ours_ = torch.tensor([float(statistic(b)) for b in boxes])
        theirs_ = torch.tensor([float(statistic(b)) for b in theirs])
        assert abs(ours_.mean() - theirs_.mean()) < 0.1 * theirs_.std()  # ~4.5 standard errors
        assert abs(ours_.std() - theirs_.std()) < 0.1 * theirs_.std()
    assert len(set(boxes)) > 1900  # each image its own box
    # a box that never fits: torchvision's fallback, the centre crop clamped to the ratio range
    wide = torch.zeros(3, 10, 100, dtype=torch.uint8)
    assert random_box(10, 100, (0.9, 1.0), (1.0, 1.0)) == tuple(v1.RandomResizedCrop.get_params(wide, [0.9, 1.0],
                                                                                               [1.0, 1.0]))
    random.seed(7)
    first = [random_box(60, 90) for _ in range(5)]
    random.seed(7)
    assert [random_box(60, 90) for _ in range(5)] == first  # seeded per worker by torch: reproducible


def test_flips_ahead_of_the_batched_augmentations_mirror_the_worker_crops() -> None:
    image = torch.arange(3 * 50 * 60, dtype=torch.float32).view(3, 50, 60).remainder(251).to(torch.uint8)
    per_sample, flips, per_batch = split_augmentation({"vertical_flip": {"p": 0.3}, "horizontal_flip": None,
                                                       "colour_jitter": {"brightness": 0.2},
                                                       "trivial_augment": None})
    assert flips == [(-2, 0.3), (-1, 0.5)] and list(per_batch) == ["colour_jitter"]
    assert list(per_sample) == ["trivial_augment"]
    # a flip after another batched augmentation stays with the batch: moving it would reorder them
    assert split_augmentation({"random_crop": {"padding": 4}, "horizontal_flip": None})[1] == []
    always, never = TrainSample(32, {}, flips=[(-1, 1.0)]), TrainSample(32, {}, flips=[(-1, 0.0)])
    random.seed(4)
    mirrored = always(image)
    random.seed(4)
    assert torch.equal(mirrored, never(image).flip(-1))
    assert not torch.equal(mirrored, mirrored.flip(-1))  # the images are not symmetric: the flip is visible
    sometimes, flipped = TrainSample(32, {}, flips=[(-1, 0.3)]), 0
    for seed in range(300):
        random.seed(seed)
        crop = sometimes(image)
        random.seed(seed)
        flipped += not torch.equal(crop, never(image))
    assert 0.2 < flipped / 300 < 0.4  # each crop mirrored with probability p
