"""One LightningDataModule for every dataset, driven by the data and augmentation configs."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from cnnlab.data.sources import first_per_class, load_splits, source
from cnnlab.data.transforms import build_transform


class TransformedSubset(Dataset):
    """The samples ``indices`` of ``dataset`` (all when None), passed through ``transform``.

    Lets the validation split, carved out of the training split, skip the training augmentation.
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int] | None, transform: Callable) -> None:
        self.dataset, self.indices, self.transform = dataset, indices, transform

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset[self.indices[i] if self.indices is not None else i]
        return self.transform(image), int(label)


class ImageDataModule(pl.LightningDataModule):
    """Train / validation / test loaders for ``data.name``.

    The validation split is a fixed fraction (``val_split``) of the official training split, drawn with
    ``seed``; the official test split is the test set.
    """

    def __init__(self, data: Mapping[str, Any], augmentation: Mapping[str, Any] | None = None, seed: int = 0):
        super().__init__()
        self.spec = dict(data)
        self.augmentation = dict(augmentation or {})
        self.seed = seed
        self.source = source(self.spec["name"])
        self.classes: list[str] | None = None
        self.train_set = self.val_set = self.test_set = None

    @property
    def num_classes(self) -> int:
        if self.classes is None:
            self.setup()
        return len(self.classes)  # type: ignore[arg-type]

    def prepare_data(self) -> None:
        if self.spec["download"]:
            load_splits(self.spec, download=True)

    def setup(self, stage: str | None = None) -> None:
        if self.classes is not None:
            return
        splits = load_splits(self.spec, download=False)
        train_tf = build_transform(self.spec, self.source, self.augmentation)
        eval_tf = build_transform(self.spec, self.source, None)
        pool = self._subset(splits.train, "train_per_class") or list(range(len(splits.train)))
        shuffled = torch.randperm(len(pool), generator=torch.Generator().manual_seed(self.seed)).tolist()
        n_val = max(1, round(self.spec["val_split"] * len(pool)))
        self.train_set = TransformedSubset(splits.train, [pool[i] for i in shuffled[n_val:]], train_tf)
        self.val_set = TransformedSubset(splits.train, [pool[i] for i in shuffled[:n_val]], eval_tf)
        self.test_set = TransformedSubset(splits.test, self._subset(splits.test, "test_per_class"), eval_tf)
        self.classes = splits.classes

    def _subset(self, dataset: Dataset, key: str) -> list[int] | None:
        per_class = self.spec.get(key)
        return first_per_class(dataset, per_class) if per_class else None

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        workers = self.spec["num_workers"]
        batch = self.spec["batch_size"] if train else (self.spec["eval_batch_size"] or self.spec["batch_size"])
        return DataLoader(
            dataset, batch_size=batch, shuffle=train, drop_last=False, num_workers=workers,
            pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)


def build_datamodule(cfg: DictConfig) -> ImageDataModule:
    """The DataModule described by ``cfg.data`` and ``cfg.augmentation``."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    augmentation = OmegaConf.to_container(cfg.augmentation, resolve=True)
    return ImageDataModule(data, augmentation, seed=cfg.seed)  # type: ignore[arg-type]
