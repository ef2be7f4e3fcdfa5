"""Where each dataset comes from: torchvision's dataset classes, scikit-learn's digits, image folders.

``load_splits`` returns the official train and test splits as datasets of ``(image, label)``; images are PIL
images (torchvision's datasets) or uint8 tensors (digits, image folders), which the transform pipeline turns
into float tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.error import URLError

import torch
from torch.utils.data import Dataset
from torchvision import datasets, tv_tensors

from cnnlab.data.decode import FolderDecoder
from cnnlab.errors import ConfigError, DatasetNotFoundError


@dataclass(frozen=True)
class Splits:
    train: Dataset
    test: Dataset
    classes: list[str]


@dataclass(frozen=True)
class Source:
    """How to load one dataset, and what a user must put where when it is missing."""

    load: Callable[[Mapping[str, Any], bool], Splits]
    native_size: int | None  # None: images vary in size (folders)
    folder: Callable[[Path], Path]
    expected_files: tuple[str, ...]

    @property
    def is_folder(self) -> bool:
        return self.native_size is None


class TensorImages(Dataset):
    """In-memory uint8 images ``(N, C, H, W)`` with integer labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[tv_tensors.Image, int]:
        return tv_tensors.Image(self.images[index]), int(self.labels[index])


def _digits(spec: Mapping[str, Any], download: bool) -> Splits:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # Pixel values are 0..16; scale to the 0..255 range every other image source uses.
    images = torch.from_numpy(digits.images * (255.0 / 16.0)).round().to(torch.uint8).unsqueeze(1)
    labels = torch.from_numpy(digits.target)
    train_idx, test_idx = train_test_split(
        range(len(labels)), test_size=0.2, random_state=0, stratify=digits.target
    )
    return Splits(
        train=TensorImages(images[train_idx], labels[train_idx]),
        test=TensorImages(images[test_idx], labels[test_idx]),
        classes=[str(c) for c in digits.target_names],
    )


def _train_test(cls: type) -> Callable[[Mapping[str, Any], bool], Splits]:
    def load(spec: Mapping[str, Any], download: bool) -> Splits:
        train = cls(spec["root"], train=True, download=download)
        return Splits(train, cls(spec["root"], train=False, download=download), list(train.classes))

    return load


def _svhn(spec: Mapping[str, Any], download: bool) -> Splits:
    train = datasets.SVHN(spec["root"], split="train", download=download)
    test = datasets.SVHN(spec["root"], split="test", download=download)
    return Splits(train, test, [str(c) for c in range(10)])


def _folders(spec: Mapping[str, Any], download: bool) -> Splits:
    root = Path(spec["root"])
    # torchvision.io decodes straight to uint8 tensors (decode.py); a file it cannot decode is named in the error
    loader = FolderDecoder(spec["channels"])
    train = datasets.ImageFolder(str(root / spec["train_dir"]), loader=loader)
    test = datasets.ImageFolder(str(root / spec["test_dir"]), loader=loader)
    if test.classes != train.classes:
        raise ConfigError(
            f"The class folders of {root / spec['train_dir']} and {root / spec['test_dir']} differ "
            f"({len(train.classes)} vs {len(test.classes)} classes). Both splits need the same class folders."
        )
    return Splits(train, test, train.classes)


_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte")

SOURCES: dict[str, Source] = {
    "digits": Source(_digits, 8, lambda root: Path("<bundled with scikit-learn>"), ()),
    "mnist": Source(_train_test(datasets.MNIST), 28, lambda r: r / "MNIST" / "raw", _MNIST_FILES),
    "fashion_mnist": Source(_train_test(datasets.FashionMNIST), 28, lambda r: r / "FashionMNIST" / "raw",
                            _MNIST_FILES),
    "kmnist": Source(_train_test(datasets.KMNIST), 28, lambda r: r / "KMNIST" / "raw", _MNIST_FILES),
    "cifar10": Source(_train_test(datasets.CIFAR10), 32, lambda r: r / "cifar-10-batches-py",
                      ("data_batch_1", "...", "data_batch_5", "test_batch", "batches.meta")),
    "cifar100": Source(_train_test(datasets.CIFAR100), 32, lambda r: r / "cifar-100-python",
                       ("train", "test", "meta")),
    "svhn": Source(_svhn, 32, lambda r: r, ("train_32x32.mat", "test_32x32.mat")),
    "imagefolder": Source(_folders, None, lambda r: r, ("train/<class>/<image>", "val/<class>/<image>")),
    "imagenet": Source(_folders, None, lambda r: r, ("train/<wnid>/<image>.JPEG", "val/<wnid>/<image>.JPEG")),
}


def labels_of(dataset: Dataset) -> torch.Tensor:
    """Every label of a dataset, without decoding its images."""
    for attribute in ("targets", "labels"):  # torchvision's MNIST/CIFAR/ImageFolder, SVHN and TensorImages
        if hasattr(dataset, attribute):
            return torch.as_tensor(getattr(dataset, attribute))
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))])  # type: ignore[arg-type]


def first_per_class(labels: torch.Tensor, per_class: int) -> list[int]:
    """The indices of the first ``per_class`` images of each class, in dataset order."""
    return sorted(i for c in labels.unique().tolist() for i in (labels == c).nonzero().flatten()[:per_class].tolist())


SUBSET_SEED = 1989  # data.train_size / test_size: the same images for every run, whatever its seed


def fixed_subset(indices: list[int], size: int | None) -> list[int]:
    """``size`` of ``indices`` drawn at random with a seed of their own (all of them when ``size`` is None or not
    smaller), in their original order."""
    if size is None or size >= len(indices):
        return indices
    chosen = torch.randperm(len(indices), generator=torch.Generator().manual_seed(SUBSET_SEED))[:size]
    return [indices[i] for i in sorted(chosen.tolist())]


def source(name: str) -> Source:
    if name not in SOURCES:
        raise ConfigError(f"Unknown dataset '{name}'. Valid datasets: {', '.join(SOURCES)}. Set data.name.")
    return SOURCES[name]


def load_splits(spec: Mapping[str, Any], download: bool = False) -> Splits:
    """Load ``spec['name']``'s train and test splits, downloading them first if ``download``."""
    src = source(spec["name"])
    if spec["root"] is None and spec["name"] != "digits":
        raise ConfigError(f"data.root is not set: point it at the folder that holds {spec['name']}.")
    try:
        return src.load(spec, download)
    except (RuntimeError, FileNotFoundError, URLError, OSError) as err:
        raise _not_found(spec, src, download, err) from None


def _not_found(spec: Mapping[str, Any], src: Source, download: bool, err: Exception) -> DatasetNotFoundError:
    folder = src.folder(Path(spec["root"]).resolve())
    files = ", ".join(src.expected_files)
    if download:
        how = (f"Downloading it failed ({err}); check the network connection, or copy the files there by hand and "
               f"run with data.download=false")
    elif src.is_folder:
        how = (f"Put your images in class folders there, or point data.root at the folder that holds them "
               f"({err})")
    else:
        how = ("Download is off: point data.root at a folder that already holds the dataset in torchvision's "
               "layout, or run once with internet and data.download=true to fetch it")
    return DatasetNotFoundError(
        f"Dataset '{spec['name']}' not found: expected {files} in {folder}. {how}."
    )
