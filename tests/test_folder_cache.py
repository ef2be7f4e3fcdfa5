"""Image folders decoded once into a cache (cnnlab.data.folder_cache) and trained from it on the tensor path."""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import real_format
from conftest import results_of, run_cli, run_dir_of
from cnnlab import build_datamodule, compose_config
from cnnlab.config.validate import validate
from cnnlab.data import folder_cache
from cnnlab.data.batch_augment import random_resized_crop
from cnnlab.errors import ConfigError, CorruptImageError


def datamodule(root: Path, cache_dir: Path, *overrides: str):
    dm = build_datamodule(compose_config(["data=imagefolder", f"data.root={root}", "data.image_size=32",
                                          "data.num_workers=0", "data.val_split=0.2", f"data.cache_dir={cache_dir}",
                                          *overrides]))
    dm.prepare_data()
    dm.setup("fit")
    return dm


def folder(tmp_path: Path, per_class: int = 10) -> Path:
    return real_format.write_image_folder(tmp_path / "images", classes=3, per_class=per_class, size=40)


def write_colour_folder(root: Path, classes: int = 4, per_class: int = 40, seed: int = 0) -> Path:
    """JPEGs of varied, non-square sizes whose class is their colour cast: learnable through random-resized
    crops (``real_format``'s images differ per pixel position, which a crop scrambles), the same in both splits."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    casts = rng.integers(40, 216, size=(classes, 3))
    for split in ("train", "val"):
        for label in range(classes):
            (root / split / f"c{label}").mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                h, w = rng.integers(30, 61, size=2)
                pixels = np.clip(casts[label] + rng.normal(0, 25, size=(h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / f"c{label}" / f"{i}.jpg", quality=90)
    return root


def per_sample_labels(subset) -> torch.Tensor:
    targets = torch.tensor(subset.dataset.targets)
    return targets if subset.indices is None else targets[torch.tensor(subset.indices)]


def caches(cache_dir: Path, split: str) -> list[Path]:
    return sorted(cache_dir.glob(f"imagefolder-{split}-*"))


def test_cache_and_per_sample_paths_give_the_same_classes_splits_and_evaluation_images(tmp_path: Path) -> None:
    root = write_colour_folder(tmp_path / "images", classes=3, per_class=10)  # JPEGs of many shapes
    cached = datamodule(root, tmp_path / "cache", "data.cache=memory")
    per_sample = datamodule(root, tmp_path / "cache", "data.cache=off")
    assert (cached.pipeline, per_sample.pipeline) == ("tensor", "loader")
    assert cached.classes == per_sample.classes == ["c0", "c1", "c2"]
    for ours, theirs in ((cached.train_set, per_sample.train_set), (cached.val_set, per_sample.val_set),
                         (cached.test_set, per_sample.test_set)):
        assert torch.equal(ours.labels, per_sample_labels(theirs))
    # Evaluation: both take the same centre 32-pixel crop of the image resized to 32 / 0.875 = 37 pixels.
    for ours, theirs in ((cached.val_set, per_sample.val_set), (cached.test_set, per_sample.test_set)):
        ours = cached.batch_pipeline(ours.images, train=False)
        theirs = torch.stack([theirs[i][0] for i in range(len(theirs))])
        assert ours.shape == theirs.shape and ours.shape[1:] == (3, 32, 32)
        assert torch.allclose(ours, theirs, atol=1e-5)
    # Training: each image its own random-resized crop, at the model's size.
    images, labels = cached.on_after_batch_transfer(next(iter(cached.train_dataloader())), 0)
    assert images.shape[1:] == (3, 32, 32) and images.dtype == torch.float32


def test_training_from_the_cache_learns(tmp_path: Path) -> None:
    root = write_colour_folder(tmp_path / "images")
    result = run_cli("train", "data=imagefolder", f"data.root={root}", "data.image_size=32", "data.cache=auto",
                     "data.num_workers=2", "data.batch_size=16", "data.val_split=0.2", "augmentation=standard",
                     "optimizer=adam", "trainer.max_epochs=2", "trainer.enable_model_summary=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = run_dir_of(result)
    assert "training from the cache" in (run_dir / "train.log").read_text()
    results = results_of(run_dir)
    assert results["test/acc"] >= 0.9  # chance: 0.25


def test_a_changed_folder_is_detected_and_its_cache_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root, cache = folder(tmp_path), tmp_path / "cache"
    first = datamodule(root, cache, "data.cache=memory")
    n = len(first.train_set) + len(first.val_set)
    old_cache = caches(cache, "train")

    shutil.copy(root / "train" / "class_0001" / "1.png", root / "train" / "class_0001" / "added.png")
    with caplog.at_level(logging.INFO, logger="cnnlab"):
        added = datamodule(root, cache, "data.cache=memory")
    assert len(added.train_set) + len(added.val_set) == n + 1
    assert "the folder changed since its cache was built (1 added, 0 removed, 0 changed)" in caplog.text
    assert caches(cache, "train") != old_cache and len(caches(cache, "train")) == 1  # the stale one removed

    caplog.clear()
    rewritten = root / "train" / "class_0002" / "2.png"
    from PIL import Image

    Image.fromarray(np.full((40, 40, 3), 255, dtype=np.uint8)).save(rewritten)
    with caplog.at_level(logging.INFO, logger="cnnlab"):
        modified = datamodule(root, cache, "data.cache=memory")
    assert "(0 added, 0 removed, 1 changed)" in caplog.text
    row = [p for p, _ in modified._folder_splits().train.samples].index(str(rewritten))
    layout = folder_cache.CacheLayout(caches(cache, "train")[0], n + 1, 3, 37)
    assert bool((folder_cache.open_images(layout)[row] == 255).all())  # the new content, not the old

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cnnlab"):
        datamodule(root, cache, "data.cache=memory").prepare_data()  # opened three times, as Lightning does
    assert "Decoding" not in caplog.text  # unchanged: read from the cache
    # ... and said so, once per split
    assert caplog.text.count("Reusing the decoded cache") == 2
    assert f"Reusing the decoded cache {caches(cache, 'train')[0]} ({n + 1} images at 37×37 px, built " in caplog.text


def test_a_corrupt_file_is_named_or_skipped_and_listed(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(folder_cache, "SHARD_IMAGES", 4)  # several shards, so the worker pool runs
    root = folder(tmp_path)
    broken = root / "train" / "class_0001" / "4.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(CorruptImageError, match=re.escape(f"Cannot decode image {broken}")):
        datamodule(root, tmp_path / "cache", "data.cache=memory", "data.num_workers=2")

    with caplog.at_level(logging.INFO, logger="cnnlab"):
        dm = datamodule(root, tmp_path / "cache", "data.cache=memory", "data.num_workers=2",
                        "data.skip_bad_images=true")
        dm.prepare_data()  # as Lightning does again before testing
        dm.setup("test")
    assert "Skipped 1 undecodable image" in caplog.text and str(broken) in caplog.text
    assert caplog.text.count("Skipped 1 undecodable image") == 1  # once per split and run, not per cache opening
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cnnlab"):  # a rerun from the cache lists it once too
        datamodule(root, tmp_path / "cache", "data.cache=memory", "data.skip_bad_images=true").prepare_data()
    assert caplog.text.count(str(broken)) == 1
    assert len(dm.train_set) + len(dm.val_set) == 29
    # The other images keep the splits they have on the per-sample path.
    per_sample = datamodule(root, tmp_path / "cache", "data.cache=off")
    bad_row = [p for p, _ in per_sample.train_set.dataset.samples].index(str(broken))
    assert [i for i in per_sample.val_set.indices if i != bad_row] == dm._without_skipped(
        "train", per_sample.val_set.indices, 30)
    assert torch.equal(dm.val_set.labels, torch.tensor([per_sample.train_set.dataset.targets[i] for i in
                                                        per_sample.val_set.indices if i != bad_row]))


def test_the_per_sample_path_skips_and_lists_a_corrupt_file_too(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    root = folder(tmp_path)
    broken = root / "train" / "class_0002" / "5.png"
    broken.write_bytes(b"not a png")
    dm = datamodule(root, tmp_path / "cache", "data.cache=off", "data.skip_bad_images=true", "data.batch_size=8",
                    "data.val_split=0.1")
    with caplog.at_level(logging.WARNING, logger="cnnlab"):
        sizes = [len(labels) for _, labels in dm.train_dataloader()] + [len(labels) for _, labels in
                                                                         dm.val_dataloader()]
        for _ in dm.train_dataloader():  # a second epoch: the file was listed already
            pass
    assert sum(sizes) == 30  # the next sample stands in for it: batches keep their size
    assert f"Left out undecodable image {broken} (" in caplog.text and "data.skip_bad_images=true" in caplog.text
    assert caplog.text.count(str(broken)) == 1
    assert "Delete or replace" not in caplog.text  # the run goes on: not the error's advice


def test_an_interrupted_build_resumes_with_the_shards_it_had_not_finished(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(folder_cache, "SHARD_IMAGES", 4)
    root, cache = folder(tmp_path), tmp_path / "cache"
    decode_shard = folder_cache._decode_shard
    done: list[int] = []

    def interrupted_after_two(*args):
        if len(done) == 2:
            raise KeyboardInterrupt
        done.append(args[1].start)
        return decode_shard(*args)

    monkeypatch.setattr(folder_cache, "_decode_shard", interrupted_after_two)
    with pytest.raises(KeyboardInterrupt):
        datamodule(root, cache, "data.cache=memory")
    directory = caches(cache, "train")[0]
    assert not (directory / "images.u8").exists() and len(list((directory / "shards").glob("*.done"))) == 2
    # Mark the finished shards' rows, and leave a half-written shard behind, as a killed worker would.
    partial = directory / "images.u8.partial"
    data = np.memmap(partial, dtype=np.uint8, mode="r+", shape=(30, 3, 37, 37))
    data[0:8] = 7
    data[8:10] = 99
    data.flush()
    del data

    decoded: list[int] = []  # the first rows of the training split's shards decoded by the second run
    monkeypatch.setattr(folder_cache, "_decode_shard", lambda *args: decoded.append(args[1].start) or
                        decode_shard(*args) if args[0] == str(partial) else decode_shard(*args))
    dm = datamodule(root, cache, "data.cache=memory")
    assert decoded == [8, 12, 16, 20, 24, 28]  # the two finished shards (rows 0-7) were kept
    images = folder_cache.open_images(folder_cache.CacheLayout(directory, 30, 3, 37))
    assert bool((images[:8] == 7).all())
    fresh = folder_cache.square(folder_cache.read_image_file(dm._folder_splits().train.samples[8][0], 3), 37, 32)
    assert torch.equal(images[8], fresh)  # the half-written shard was decoded again


def test_auto_caches_only_what_fits_in_its_share_of_memory(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = folder(tmp_path)
    with caplog.at_level(logging.INFO, logger="cnnlab"):
        fits = datamodule(root, tmp_path / "cache", "data.cache=auto", "data.cache_memory_fraction=0.5")
    assert fits.pipeline == "tensor" and "fit in 50% of the available memory" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cnnlab"):
        # 60 images at 37 px are 246 KB: a share of 1e-9 of any machine's memory is less
        too_big = datamodule(root, tmp_path / "cache", "data.cache=auto", "data.cache_memory_fraction=1e-9")
    assert too_big.pipeline == "loader" and "need more than 0% of the available memory" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cnnlab"):
        fallback = datamodule(root, tmp_path / "cache", "data.cache=memory", "augmentation=randaugment")
    assert fallback.pipeline == "loader" and "randaugment has no batched version" in caplog.text


@pytest.mark.parametrize(("override", "message"), [
    ("data.cache=disk", "data.cache must be one of 'auto', 'memory', 'off', got 'disk'"),
    ("data.cache_size=16", "data.cache_size (16) is the side of the images a folder cache stores"),
    ("data.cache_memory_fraction=0", "data.cache_memory_fraction is the share of the available memory"),
    ("data.cache_memory_fraction=1.5", "must be a number in (0, 1], got 1.5"),
])
def test_cache_settings_are_checked(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose_config(["data=imagefolder", "data.root=/data/images", "data.image_size=32", override]))


def test_batched_random_resized_crop_is_torchvision_geometry_per_sample() -> None:
    torch.manual_seed(0)
    image = torch.rand(1, 3, 37, 37)
    whole = random_resized_crop(image.repeat(4, 1, 1, 1), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.allclose(whole, image.expand(4, -1, -1, -1), atol=1e-5)  # the box is the image: unchanged
    crops = random_resized_crop(image.repeat(16, 1, 1, 1), size=32)
    assert crops.shape == (16, 3, 32, 32)
    assert len({tuple(c.flatten()[:50].tolist()) for c in crops}) == 16  # each image its own box
    # A box that is a whole number of pixels, at the output size, is an exact window of the image.
    torch.manual_seed(1)
    window = random_resized_crop(image.repeat(64, 1, 1, 1), scale=(0.5, 0.5), ratio=(1.0, 1.0), size=26)
    side = round((0.5 * 37 * 37) ** 0.5)
    assert side == 26
    exact = {(top, left): image[0, :, top:top + side, left:left + side] for top in range(12) for left in range(12)}
    assert all(any(torch.allclose(w, e, atol=1e-5) for e in exact.values()) for w in window)


@pytest.mark.parametrize("side", ["train", "val"])
def test_both_paths_hold_out_the_same_files_around_a_corrupt_one(tmp_path: Path, side: str) -> None:
    """Both paths draw the validation split over the whole folder listing, the corrupt file included, and leave
    it out of whichever side it falls in: every good file is on the same side in both."""
    root = folder(tmp_path, per_class=20)
    options = ("data.skip_bad_images=true", "data.val_split=0.1")
    listing = datamodule(root, tmp_path / "cache", "data.cache=off", *options)
    samples = [path for path, _ in listing.train_set.dataset.samples]
    held_out = {samples[i] for i in listing.val_set.indices}
    broken = Path(next(p for p in samples if (p in held_out) == (side == "val")))
    broken.write_bytes(np.random.default_rng(0).integers(0, 256, 512, dtype=np.uint8).tobytes())

    cached = datamodule(root, tmp_path / "cache", "data.cache=memory", *options)
    per_sample = datamodule(root, tmp_path / "cache", "data.cache=off", *options)
    cached_val = {samples[row] for row in cached.val_set.rows.tolist()}
    cached_train = {samples[row] for row in cached.train_set.rows.tolist()}
    per_sample_val = {samples[i] for i in per_sample.val_set.indices}
    assert per_sample_val == held_out  # the same draw as before the file broke
    assert cached_val == per_sample_val - {str(broken)}
    assert cached_train == set(samples) - per_sample_val - {str(broken)}
