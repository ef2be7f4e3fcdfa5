"""Every dataset option loads real-format files through torchvision's real code path."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torchvision

import real_format
from cnnlab import build_datamodule, compose_config
from cnnlab.data.datamodule import describe_classes
from cnnlab.errors import CorruptImageError, DatasetNotFoundError


@pytest.fixture
def skip_checksums(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision checks the md5 of the official CIFAR/SVHN archives; tiny files in their format cannot match."""
    for module in (torchvision.datasets.cifar, torchvision.datasets.svhn):
        monkeypatch.setattr(module, "check_integrity", lambda *args, **kwargs: True)


WRITERS = {
    "mnist": lambda root: real_format.write_mnist(root, "mnist"),
    "fashion_mnist": lambda root: real_format.write_mnist(root, "fashion_mnist"),
    "kmnist": lambda root: real_format.write_mnist(root, "kmnist"),
    "cifar10": real_format.write_cifar10,
    "cifar100": real_format.write_cifar100,
    "svhn": real_format.write_svhn,
    "imagefolder": real_format.write_image_folder,
    "imagenet": real_format.write_image_folder,
}


def setup(overrides: list[str]):
    datamodule = build_datamodule(compose_config(overrides))
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


@pytest.mark.parametrize("name", sorted([*WRITERS, "digits"]))
def test_every_dataset_sets_up_and_batches(name: str, tmp_path: Path, skip_checksums: None) -> None:
    overrides = [f"data={name}", "data.batch_size=4", "data.num_workers=0", "data.val_split=0.2",
                 "augmentation=[standard,colour]"]
    if name != "digits":
        WRITERS[name](tmp_path)
        overrides += [f"data.root={tmp_path}", "data.download=false"]
    if name == "imagenet":
        overrides.append("data.image_size=32")
    dm = setup(overrides)
    cfg = compose_config(overrides)
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        images, labels = dm.on_after_batch_transfer(next(iter(loader)), 0)  # as Lightning does, on the device
        assert images.shape[1:] == (cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
        assert images.dtype == torch.float32 and labels.dtype == torch.int64
    assert len(dm.train_set) + len(dm.val_set) > len(dm.val_set) > 0


def test_digits_splits_are_fixed_and_disjoint() -> None:
    a, b = setup(["data=digits", "data.pipeline=loader"]), setup(["data=digits", "data.pipeline=loader"])
    assert a.train_set.indices == b.train_set.indices
    assert not set(a.train_set.indices) & set(a.val_set.indices)
    assert len(a.train_set) + len(a.val_set) + len(a.test_set) == 1797


def test_folder_datasets_count_their_classes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    real_format.write_image_folder(tmp_path, classes=4)
    with caplog.at_level(logging.INFO, logger="cnnlab"):
        dm = setup(["data=imagefolder", f"data.root={tmp_path}", "data.image_size=32", "data.num_workers=0"])
        dm.setup("test")
    assert dm.num_classes == 4
    names = ", ".join(dm.classes)
    assert caplog.text.count(f"4 classes: {names}\n") == 1  # named, once a run


def test_a_long_class_list_is_cut_short() -> None:
    assert (describe_classes([f"c{i}" for i in range(1000)])
            == "1,000 classes: c0, c1, c2, c3, c4, c5, c6, c7, c8, c9 and 990 more")
    assert describe_classes(["cat"]) == "1 class: cat"


def test_validation_images_are_not_augmented() -> None:
    dm = setup(["data=digits", "augmentation=[geometric,random_erasing]", "data.pipeline=loader"])
    image = dm.val_set[0][0]
    assert torch.equal(image, dm.val_set[0][0])
    assert any(not torch.equal(dm.train_set[0][0], dm.train_set[0][0]) for _ in range(5))


@pytest.mark.parametrize("name", ["mnist", "cifar10", "svhn"])
def test_missing_dataset_names_folder_files_and_remedy(name: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as caught:
        setup([f"data={name}", f"data.root={tmp_path}", "data.download=false"])
    message = str(caught.value)
    assert str(tmp_path.resolve()) in message
    assert {"mnist": "train-images-idx3-ubyte", "cifar10": "data_batch_1", "svhn": "train_32x32.mat"}[name] in message
    assert "data.root" in message and "data.download=true" in message


def test_offline_download_failure_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets.utils, "download_url", no_network)
    with pytest.raises(DatasetNotFoundError, match="Downloading it failed"):
        setup(["data=cifar10", f"data.root={tmp_path}", "data.download=true"])


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    real_format.write_image_folder(tmp_path)
    broken = next((tmp_path / "train" / "class_0001").glob("*.png"))
    broken.write_bytes(b"not a png")
    dm = setup(["data=imagefolder", f"data.root={tmp_path}", "data.image_size=32", "data.num_workers=0",
                "data.val_split=0.1", "data.cache=off"])  # the per-sample path; the cache's: test_folder_cache.py
    with pytest.raises(CorruptImageError, match=str(broken)):
        for _ in dm.train_dataloader():
            pass


def test_batched_crops_differ_between_samples_of_one_batch() -> None:
    """torchvision v2 on a batch would give every image the same crop; the tensor path must not."""
    from cnnlab.data.batch_augment import random_crop

    torch.manual_seed(0)
    image = torch.arange(32 * 32, dtype=torch.float32).view(1, 1, 32, 32)
    batch = random_crop(image.repeat(16, 1, 1, 1), padding=4)
    distinct = {tuple(crop.flatten()[:40].tolist()) for crop in batch}
    assert len(distinct) > 1
    # each crop is a true window of the padded image: one corner pixel identifies its offset
    padded = torch.nn.functional.pad(image, (4, 4, 4, 4))
    for crop in batch:
        windows = padded.unfold(2, 32, 1).unfold(3, 32, 1)[0, 0]
        assert any(torch.equal(windows[r, c], crop[0]) for r in range(9) for c in range(9))


@pytest.mark.parametrize("name", ["horizontal_flip", "colour_jitter", "random_affine", "random_erasing"])
def test_every_batched_augmentation_is_random_per_sample(name: str) -> None:
    from cnnlab.data.batch_augment import BATCHED

    options = {"colour_jitter": {"brightness": 0.5, "contrast": 0.5, "saturation": 0.5, "hue": 0.2},
               "random_affine": {"degrees": 20, "translate": [0.1, 0.1]}, "random_erasing": {"p": 1.0}}
    torch.manual_seed(0)
    image = torch.rand(1, 3, 16, 16)
    out = BATCHED[name](image.repeat(8, 1, 1, 1), **options.get(name, {}))
    assert out.shape == (8, 3, 16, 16)
    assert len({tuple(o.flatten().tolist()) for o in out}) > 1


def test_tensor_pipeline_is_chosen_and_cached(tmp_path: Path) -> None:
    dm = setup(["data=digits", f"data.cache_dir={tmp_path}"])
    assert dm.pipeline == "tensor"
    assert sorted(p.name.split("-")[1] for p in tmp_path.glob("*.pt")) == ["test", "train"]
    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (32, 1, 8, 8)  # decoded once, batched by indexing
    again = setup(["data=digits", f"data.cache_dir={tmp_path}"])  # read from the cache this time
    assert torch.equal(again.test_set.images, dm.test_set.images)
    assert again.train_set.labels.tolist() == dm.train_set.labels.tolist()


def test_both_pipelines_hold_the_same_splits(tmp_path: Path) -> None:
    real_format.write_mnist(tmp_path, "mnist")
    common = ["data=mnist", f"data.root={tmp_path}", "data.download=false", f"data.cache_dir={tmp_path / 'c'}"]
    tensor, loader = setup([*common, "data.pipeline=tensor"]), setup([*common, "data.pipeline=loader"])
    assert len(tensor.train_set.labels) == len(loader.train_set)
    assert tensor.val_set.labels.tolist() == [loader.val_set[i][1] for i in range(len(loader.val_set))]
    normalised = tensor.batch_pipeline(tensor.test_set.images[:4], train=False)
    assert torch.allclose(normalised, torch.stack([loader.test_set[i][0] for i in range(4)]), atol=1e-5)


def test_augmentations_without_a_batched_version_use_the_loader() -> None:
    from cnnlab.errors import ConfigError

    assert setup(["data=digits", "augmentation=randaugment"]).pipeline == "loader"
    with pytest.raises(ConfigError, match="data.pipeline=loader"):
        setup(["data=digits", "augmentation=randaugment", "data.pipeline=tensor"])
