"""Tiny stand-in datasets in the real on-disk formats (torchvision's layouts), for ``cnnlab recipes validate``
when a recipe's real data is absent: the same readers, transforms and checks run, on a few generated images."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np

MNIST_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "kmnist": "KMNIST"}


def _images(n: int, size: int, channels: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    base = rng.integers(0, 256, size=(classes, size, size, channels))
    noise = rng.integers(-30, 31, size=(n, size, size, channels))
    return np.clip(base[labels] + noise, 0, 255).astype(np.uint8), labels


def write_mnist(root: Path, name: str = "mnist", n_train: int = 200, n_test: int = 100, classes: int = 10) -> Path:
    raw = root / MNIST_FOLDERS[name] / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = _images(n, 28, 1, classes, seed)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) +
                                                          labels.astype(np.uint8).tobytes())
    return root


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def write_cifar10(root: Path, per_batch: int = 40, n_test: int = 100) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        images, labels = _images(per_batch, 32, 3, 10, i)
        _pickle(folder / f"data_batch_{i}", {"data": images.transpose(0, 3, 1, 2).reshape(per_batch, -1),
                                              "labels": labels.tolist()})
    images, labels = _images(n_test, 32, 3, 10, 0)
    _pickle(folder / "test_batch", {"data": images.transpose(0, 3, 1, 2).reshape(n_test, -1),
                                    "labels": labels.tolist()})
    _pickle(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    return root


def write_cifar100(root: Path, n_train: int = 400, n_test: int = 200) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        images, labels = _images(n, 32, 3, 100, seed)
        _pickle(folder / name, {"data": images.transpose(0, 3, 1, 2).reshape(n, -1), "fine_labels": labels.tolist()})
    _pickle(folder / "meta", {"fine_label_names": [f"class{i}" for i in range(100)]})
    return root


def write_svhn(root: Path, n_train: int = 200, n_test: int = 100) -> Path:
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        images, labels = _images(n, 32, 3, 10, seed)
        # SVHN's .mat files store images as (H, W, C, N) and the digit 0 as label 10.
        savemat(root / f"{split}_32x32.mat", {"X": images.transpose(1, 2, 3, 0),
                                               "y": np.where(labels == 0, 10, labels).reshape(-1, 1)})
    return root


def write_image_folder(root: Path, classes: int = 3, per_class: int = 8, size: int = 40,
                       splits: tuple[str, ...] = ("train", "val")) -> Path:
    from PIL import Image

    for s, split in enumerate(splits):
        images, labels = _images(classes * per_class, size, 3, classes, s)
        for i, (image, label) in enumerate(zip(images, labels)):
            folder = root / split / f"class_{label:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i}.png")
    return root
