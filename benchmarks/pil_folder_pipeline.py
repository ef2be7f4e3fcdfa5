"""cnnlab's per-sample path for image folders as it was before issue 18, for the benchmark to measure against.

A ``cnnlab train`` run whose folder loading is the code of commit 2087019 (cnnlab/data/sources.py,
transforms.py and datamodule.py there), copied here unchanged in what it does: ``ImageFolder`` with a PIL loader
(``Image.open(...).convert("RGB")``), a ``v2.Compose`` of ``Transform`` objects per sample (``ToImage`` →
``RandomResizedCrop`` → the augmentation config's transforms → ``ToDtype`` → ``Normalize``; evaluation: ``Resize``
to size/0.875 → ``CenterCrop``), float batches from a ``DataLoader`` with persistent workers and torch's default
prefetch depth. Everything else (model, kernels, loop, callbacks, split) is today's cnnlab run, so the two
differ in the folder pipeline alone.

    python benchmarks/pil_folder_pipeline.py train data=imagefolder data.root=FOLDER data.cache=off ...
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Mapping

import cnnlab.cli as cli


def load_pil_image(path: str) -> Any:
    from PIL import Image

    with open(path, "rb") as f:
        return Image.open(f).convert("RGB")


def old_folder_transform(spec: Mapping[str, Any], augmentation: Mapping[str, Any] | None) -> Any:
    import torch
    from torchvision.transforms import v2

    from cnnlab.data.transforms import _augmentations

    size = spec["image_size"]
    steps: list[Any] = [v2.ToImage()]
    steps += [v2.RandomResizedCrop(size, antialias=True)] if augmentation is not None else [
        v2.Resize(round(size / 0.875), antialias=True), v2.CenterCrop(size)]
    if spec["channels"] == 1:
        steps.append(v2.Grayscale())
    on_image, on_tensor = _augmentations(augmentation or {}, size)
    steps += on_image
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(spec["mean"], spec["std"])]
    steps += on_tensor
    return v2.Compose(steps)


def old_setup_loader(self: Any) -> None:
    from torchvision import datasets

    from cnnlab.data.datamodule import TransformedSubset
    from cnnlab.data.sources import labels_of

    root = Path(self.spec["root"])
    train = datasets.ImageFolder(str(root / self.spec["train_dir"]), loader=load_pil_image)
    test = datasets.ImageFolder(str(root / self.spec["test_dir"]), loader=load_pil_image)
    train_tf, eval_tf = old_folder_transform(self.spec, self.augmentation), old_folder_transform(self.spec, None)
    train_idx, val_idx = self._split_train(labels_of(train))
    self.train_set = TransformedSubset(train, train_idx, train_tf)
    self.val_set = TransformedSubset(train, val_idx, eval_tf)
    self.test_set = TransformedSubset(test, self._test_indices(labels_of(test)), eval_tf)
    self.classes = train.classes
    print("old per-sample folder path: PIL loader,", " ".join(repr(train_tf).split()), file=sys.stderr)


def old_loader(self: Any, dataset: Any, train: bool) -> Any:
    import torch
    from torch.utils.data import DataLoader

    workers = self.spec["num_workers"]
    return DataLoader(dataset, batch_size=self._batch_size(train), shuffle=train, num_workers=workers,
                      pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0)


def _with_old_folder_path(load: Callable[[str], ModuleType]) -> Callable[[str], ModuleType]:
    def import_heavy(module: str) -> ModuleType:
        loaded = load(module)
        from cnnlab.data.datamodule import ImageDataModule

        ImageDataModule._setup_loader = old_setup_loader
        ImageDataModule._loader = old_loader
        return loaded

    return import_heavy


if __name__ == "__main__":
    # cnnlab imports torch lazily, once the config is valid: swap the folder path in right after that import
    cli._import_heavy = _with_old_folder_path(cli._import_heavy)
    sys.argv = ["cnnlab", *sys.argv[1:]]
    cli.entry_point()
