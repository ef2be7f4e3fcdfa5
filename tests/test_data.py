"""Every dataset option loads real-format files through torchvision's real code path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

import real_format
from cnnlab import build_datamodule, compose_config
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
        images, labels = next(iter(loader))
        assert images.shape[1:] == (cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
        assert images.dtype == torch.float32 and labels.dtype == torch.int64
    assert len(dm.train_set) + len(dm.val_set) > len(dm.val_set) > 0


def test_digits_splits_are_fixed_and_disjoint() -> None:
    a, b = setup(["data=digits"]), setup(["data=digits"])
    assert a.train_set.indices == b.train_set.indices
    assert not set(a.train_set.indices) & set(a.val_set.indices)
    assert len(a.train_set) + len(a.val_set) + len(a.test_set) == 1797


def test_folder_datasets_count_their_classes(tmp_path: Path) -> None:
    real_format.write_image_folder(tmp_path, classes=4)
    dm = setup(["data=imagefolder", f"data.root={tmp_path}", "data.image_size=32", "data.num_workers=0"])
    assert dm.num_classes == 4


def test_validation_images_are_not_augmented() -> None:
    dm = setup(["data=digits", "augmentation=[geometric,random_erasing]"])
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
    broken = next((tmp_path / "train" / "class_1").glob("*.png"))
    broken.write_bytes(b"not a png")
    dm = setup(["data=imagefolder", f"data.root={tmp_path}", "data.image_size=32", "data.num_workers=0",
                "data.val_split=0.1"])
    with pytest.raises(CorruptImageError, match=str(broken)):
        for _ in dm.train_dataloader():
            pass
