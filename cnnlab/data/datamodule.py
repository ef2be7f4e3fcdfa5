"""One LightningDataModule for every dataset, driven by the data and augmentation configs.

Two pipelines feed it (``data.pipeline``): the in-memory tensor path (decoded once — fixed-size datasets, and
image folders through their cache, ``data.cache`` — batched by indexing, augmented per sample on the training
device) and the per-sample path in DataLoader workers (image folders: ``sample_path``; other datasets:
torchvision's v2 transforms). Both draw the same validation split from the same seed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from cnnlab.data import folder_cache
from cnnlab.data.batch_augment import BatchPipeline, unbatchable
from cnnlab.data.decode import skipped_message
from cnnlab.data.sample_path import (EncodedBatch, EncodedFiles, EvalSample, TrainSample,
                                     collate_encoded, decode_on_device, split_augmentation)
from cnnlab.data.sources import Splits, first_per_class, fixed_subset, labels_of, load_splits, source
from cnnlab.data.tensor_path import ImageTensors, TensorBatches, cache_path, decode, load_cached, save_cached
from cnnlab.data.transforms import build_transform
from cnnlab.errors import ConfigError, CorruptImageError

log = logging.getLogger(__name__)


class TransformedSubset(Dataset):
    """The samples ``indices`` of ``dataset`` (all when None), passed through ``transform``.

    Lets the validation split, carved out of the training split, skip the training augmentation. With
    ``skip_bad`` (``data.skip_bad_images``), an undecodable file is logged with its path and the next sample
    takes its place, so that batches keep their size.
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int] | None, transform: Callable,
                 skip_bad: bool = False) -> None:
        self.dataset, self.indices, self.transform, self.skip_bad = dataset, indices, transform, skip_bad
        self._reported: set[str | None] = set()  # the files already logged as left out (in this process)

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        for attempt in range(len(self) if self.skip_bad else 1):
            j = (i + attempt) % len(self)
            try:
                image, label = self.dataset[self.indices[j] if self.indices is not None else j]
                return self.transform(image), int(label)
            except CorruptImageError as err:
                if not self.skip_bad:
                    raise
                path = getattr(err, "path", None)
                if path is None or path not in self._reported:  # once per file, not every epoch
                    self._reported.add(path)
                    log.warning("%s", skipped_message(err))
        raise CorruptImageError(f"No image of this split can be decoded ({len(self)} files).")


AUTO_WORKERS = 4  # data.num_workers: null — at most this many, and no more than the cores this process may use


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask: a container's or taskset's share), as torch's
    DataLoader counts them when it warns about too many workers."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_workers(requested: int | None) -> int:
    """``data.num_workers``: a number as given; null → min(4, the usable cores)."""
    return requested if requested is not None else min(AUTO_WORKERS, usable_cores())


def describe_classes(classes: Sequence[str], shown: int = 10) -> str:
    """``"3 classes: bird, cat, dog"``; past ``shown`` names, the first ones and how many more."""
    names = ", ".join(str(c) for c in classes[:shown])
    more = f" and {len(classes) - shown:,} more" if len(classes) > shown else ""
    return f"{len(classes):,} class{'es' if len(classes) != 1 else ''}: {names}{more}"


class ImageDataModule(pl.LightningDataModule):
    """Train / validation / test batches for ``data.name``.

    The validation split is a fixed fraction (``val_split``) of the official training split (or of its
    per-class subset), drawn with ``seed``; the official test split is the test set.
    """

    def __init__(self, data: Mapping[str, Any], augmentation: Mapping[str, Any] | None = None, seed: int = 0):
        super().__init__()
        self.spec = dict(data)
        self.spec["num_workers"] = resolve_workers(self.spec.get("num_workers"))
        self.augmentation = dict(augmentation or {})
        self.seed = seed
        self.source = source(self.spec["name"])
        self.pipeline = self._choose_pipeline()
        self.classes: list[str] | None = None
        self.train_set: Any = None
        self.val_set: Any = None
        self.test_set: Any = None
        self.full_test_set: Any = None  # data.full_test: the whole official test split, beside a subset of it
        # A folder cache stores images larger than the model's input: each batch is cropped to it on the device.
        crop = self.spec["image_size"] if self.source.is_folder else None
        self.batch_pipeline = (BatchPipeline(self.augmentation, self.spec["mean"], self.spec["std"], crop=crop)
                               if self.pipeline == "tensor" else None)
        self.train_sample: TrainSample | None = None  # image folders' per-sample path
        self.sample_batch_pipeline: BatchPipeline | None = None
        self._skips_reported: set[str] = set()  # the splits whose undecodable files the log has listed

    def _choose_pipeline(self) -> str:
        requested = self.spec["pipeline"]
        if self.source.is_folder:  # decoded once into a folder cache (data.cache), or image by image
            use, why = folder_cache.choose(self.spec, unbatchable(self.augmentation), lambda: sum(
                len(split) for split in (self._folder_splits().train, self._folder_splits().test)))
            log.info("%s", why)
            return "tensor" if use else "loader"
        if requested == "auto":
            return "loader" if unbatchable(self.augmentation) else "tensor"
        return requested

    @property
    def loader_workers(self) -> int:
        """The DataLoader worker processes that feed training: ``data.num_workers`` on the per-sample path,
        none on the in-memory paths (whose batches are cut in the training process; a folder cache's build
        uses the workers only before training)."""
        return self.spec["num_workers"] if self.pipeline == "loader" else 0

    @property
    def num_classes(self) -> int:
        if self.classes is None:
            self.setup()
        return len(self.classes)  # type: ignore[arg-type]

    def prepare_data(self) -> None:
        if self.spec["download"] and not self._cache_complete():
            load_splits(self.spec, download=True)
        if self.source.is_folder and self.pipeline == "tensor":  # once per machine under DDP, before setup
            self._decoded_folders()

    def _cache_paths(self) -> list:
        return [cache_path(self.spec, self.source, split) for split in ("train", "test")]

    def _cache_complete(self) -> bool:
        return self.pipeline == "tensor" and all(p.is_file() for p in self._cache_paths())

    def setup(self, stage: str | None = None) -> None:
        if self.classes is not None:
            return
        if self.pipeline == "tensor":
            self._setup_tensors()
        else:
            self._setup_loader()
        log.info("%s", describe_classes(self.classes))  # type: ignore[arg-type]

    def _split_train(self, labels: torch.Tensor) -> tuple[list[int], list[int]]:
        per_class = self.spec.get("train_per_class")
        pool = first_per_class(labels, per_class) if per_class else list(range(len(labels)))
        pool = fixed_subset(pool, self.spec.get("train_size"))
        shuffled = torch.randperm(len(pool), generator=torch.Generator().manual_seed(self.seed)).tolist()
        # val_split=0: train on the whole pool (LeCun's protocols), validate on nothing
        n_val = max(1, round(self.spec["val_split"] * len(pool))) if self.spec["val_split"] > 0 else 0
        return [pool[i] for i in shuffled[n_val:]], [pool[i] for i in shuffled[:n_val]]

    def _test_indices(self, labels: torch.Tensor) -> list[int] | None:
        per_class = self.spec.get("test_per_class")
        pool = first_per_class(labels, per_class) if per_class else None
        if self.spec.get("test_size"):
            pool = fixed_subset(pool if pool is not None else list(range(len(labels))), self.spec["test_size"])
        return pool

    def _full_test_wanted(self, test_indices: list[int] | None) -> bool:
        return bool(self.spec.get("full_test")) and test_indices is not None

    # --- per-sample DataLoader path --------------------------------------------------------------------------

    def _setup_loader(self) -> None:
        if self.source.is_folder:  # decoded by torchvision.io, cropped per image, augmented per batch
            splits = self._folder_splits()  # listed once: data.cache=auto may have counted the files already
            train_tf, eval_tf = self._folder_samples()
        else:
            splits = load_splits(self.spec, download=False)
            train_tf = build_transform(self.spec, self.source, self.augmentation)
            eval_tf = build_transform(self.spec, self.source, None)
        train_idx, val_idx = self._split_train(labels_of(splits.train))
        skip_bad = bool(self.spec.get("skip_bad_images"))
        self.train_set = TransformedSubset(splits.train, train_idx, train_tf, skip_bad)
        if self._decodes_on_gpu():
            self.train_set = EncodedFiles(splits.train, train_idx)
        self.val_set = TransformedSubset(splits.train, val_idx, eval_tf, skip_bad)
        test_idx = self._test_indices(labels_of(splits.test))
        self.test_set = TransformedSubset(splits.test, test_idx, eval_tf, skip_bad)
        if self._full_test_wanted(test_idx):
            self.full_test_set = TransformedSubset(splits.test, None, eval_tf, skip_bad)
        self.classes = splits.classes

    def _folder_samples(self) -> tuple[TrainSample, EvalSample]:
        per_sample, flips, per_batch = split_augmentation(self.augmentation)
        self.train_sample = TrainSample(self.spec["image_size"], per_sample, flips=flips)
        self.sample_batch_pipeline = BatchPipeline(per_batch, self.spec["mean"], self.spec["std"])
        return self.train_sample, EvalSample(self.spec["image_size"], self.spec["mean"], self.spec["std"])

    def _device(self) -> torch.device:
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def _decodes_on_gpu(self) -> bool:
        return self.source.is_folder and self._device().type == "cuda" and self.spec.get("gpu_decode", True)

    def _train_collate(self) -> Callable | None:
        """Folder training batches: file bytes for the GPU's decoder, else uint8 crops stacked by torch's default
        collate, augmented and normalised in the training process (``on_after_batch_transfer``).

        Workers hand batches over in shared memory, and the training process maps them page by page: a float
        batch of 64-pixel images costs it ~21 µs an image, a uint8 one (a quarter of the bytes) ~11, plus ~2 for
        the normalisation it then does itself (benchmarks/RESULTS.md) — and the workers skip that work.
        """
        if self.source.is_folder and self._decodes_on_gpu():
            return collate_encoded
        return None

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        workers = self.spec["num_workers"]
        pin = self.spec.get("pin_memory")  # pinning helps only copies to a GPU; on a CPU it is pure cost
        return DataLoader(
            dataset, batch_size=self._batch_size(train), shuffle=train, num_workers=workers,
            collate_fn=self._train_collate() if train else None,
            pin_memory=self._device().type == "cuda" if pin is None else pin,
            persistent_workers=workers > 0 and self.spec.get("persistent_workers", True),
            prefetch_factor=self.spec.get("prefetch_factor", 4) if workers > 0 else None,
        )

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, EncodedBatch):  # JPEG bytes from the workers: decode and crop on the GPU
            return decode_on_device(batch, self.spec["channels"], self.train_sample, self._device(),
                                    skip_bad=bool(self.spec.get("skip_bad_images")))
        return batch

    # --- in-memory tensor path -------------------------------------------------------------------------------

    def _folder_splits(self) -> Splits:
        """The folders' listings (ImageFolder's: the per-sample path's classes, labels and order), scanned once."""
        if getattr(self, "_scanned", None) is None:
            self._scanned = load_splits(self.spec, download=False)
        return self._scanned

    def _decoded_folders(self) -> tuple[ImageTensors, ImageTensors, list[str]]:
        """Both splits from the folder cache (built first when missing or out of date); the rows of files
        skipped as undecodable are kept in ``_skipped`` and left out of every split."""
        splits = self._folder_splits()
        # prepare_data and setup both open the caches, and a test phase opens them again: say once that one is reused
        (train, train_bad), (test, test_bad) = (
            folder_cache.load_or_build(self.spec, name, dataset, announce=not hasattr(self, "_skipped"))
            for name, dataset in (("train", splits.train), ("test", splits.test)))
        self._skipped = {"train": set(train_bad), "test": set(test_bad)}
        # ... and list the files left out once per split
        for name, dataset, bad in (("train", splits.train, train_bad), ("test", splits.test, test_bad)):
            if bad and name not in self._skips_reported:
                self._skips_reported.add(name)
                log.warning("%s", folder_cache.skipped_message(
                    Path(dataset.root).resolve(), [dataset.samples[row][0] for row in sorted(bad)]))
        return train, test, list(splits.classes)

    def _without_skipped(self, split: str, indices: list[int] | None, count: int) -> list[int] | None:
        bad = getattr(self, "_skipped", {}).get(split)
        if not bad:
            return indices
        return [i for i in (indices if indices is not None else range(count)) if i not in bad]

    def _decoded(self) -> tuple[ImageTensors, ImageTensors, list[str]]:
        if self.source.is_folder:
            return self._decoded_folders()
        paths = self._cache_paths()
        cached = [load_cached(p) for p in paths]
        if cached[0] is not None and cached[1] is not None:
            return cached[0][0], cached[1][0], cached[0][1]
        splits: Splits = load_splits(self.spec, download=False)
        decoded = [decode(splits.train, self.spec["channels"]), decode(splits.test, self.spec["channels"])]
        for path, tensors in zip(paths, decoded):
            save_cached(path, tensors, splits.classes)
        log.info("Decoded %s once into %s", self.spec["name"], paths[0].parent)
        return decoded[0], decoded[1], list(splits.classes)

    def _setup_tensors(self) -> None:
        train, test, self.classes = self._decoded()
        # a folder cache keeps its storage size: batches are cropped to image_size on the device
        size = train.images.shape[-1] if self.source.is_folder else self.spec["image_size"]
        train_idx, val_idx = self._split_train(train.labels)
        test_idx = self._test_indices(test.labels)
        # split first, then drop undecodable files: the rest fall in the same splits as on the per-sample path
        train_idx = self._without_skipped("train", train_idx, len(train))
        val_idx = self._without_skipped("train", val_idx, len(train))
        test_idx = self._without_skipped("test", test_idx, len(test))
        self.train_set = train.subset(train_idx).resized(size)
        self.val_set = train.subset(val_idx).resized(size)
        self.test_set = (test.subset(test_idx) if test_idx is not None else test).resized(size)
        if self._full_test_wanted(test_idx):
            everything = self._without_skipped("test", None, len(test))
            self.full_test_set = (test.subset(everything) if everything is not None else test).resized(size)
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if device.type == "cuda" and self._fits_on(device):  # keep the whole dataset on the GPU: batches never cross the bus
            self.train_set, self.val_set, self.test_set = (s.to(device) for s in
                                                           (self.train_set, self.val_set, self.test_set))
            if self.full_test_set is not None:
                self.full_test_set = self.full_test_set.to(device)

    def _fits_on(self, device: torch.device) -> bool:
        """Small datasets always; a folder cache when it takes at most half the GPU's free memory (else its
        uint8 batches are copied over, a quarter of float32's bytes)."""
        if not self.source.is_folder:
            return True
        count = sum(len(s) for s in (self.train_set, self.val_set, self.test_set) if s is not None)
        needed = folder_cache.decoded_bytes(count, self.spec["channels"], folder_cache.storage_size(self.spec))
        return needed <= 0.5 * torch.cuda.mem_get_info(device)[0]

    def _batches(self, data: ImageTensors, train: bool) -> TensorBatches:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        return TensorBatches(data, self._batch_size(train), shuffle=train, seed=self.seed, rank=rank,
                             world_size=world)

    def training_sample(self, n: int, epoch: int = 0) -> torch.Tensor:
        """``n`` training images drawn at random (anew for each ``epoch``), normalised as the network sees them
        without augmentation: what optimizer=sdlm estimates its curvature on."""
        if self.pipeline != "tensor":
            raise ConfigError("optimizer=sdlm estimates its curvature on in-memory training images: use "
                              "data.pipeline=tensor (or auto) for it.")
        self.setup()
        order = torch.randperm(len(self.train_set), generator=torch.Generator().manual_seed(self.seed + epoch))
        index = order[:n].to(self.train_set.images.device)
        return self.batch_pipeline(self.train_set.images.index_select(0, index), train=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if not isinstance(batch, (tuple, list)):
            return batch  # a lone tensor is a model input already (the model summary's example image)
        images, labels = batch
        training = self.trainer is not None and self.trainer.training
        if self.batch_pipeline is not None:
            return self.batch_pipeline(images, train=training), labels
        if images.dtype == torch.uint8 and self.sample_batch_pipeline is not None:  # only training batches are
            return self.sample_batch_pipeline(images, train=True), labels  # uint8: evaluation's are float per image
        return batch

    # --- both ------------------------------------------------------------------------------------------------

    def _batch_size(self, train: bool) -> int:
        return self.spec["batch_size"] if train else (self.spec["eval_batch_size"] or self.spec["batch_size"])

    def _iterable(self, data: Any, train: bool) -> Iterable:
        return self._batches(data, train) if self.pipeline == "tensor" else self._loader(data, train)

    def train_dataloader(self) -> Iterable:
        return self._iterable(self.train_set, train=True)

    def val_dataloader(self) -> Iterable:
        return self._iterable(self.val_set, train=False)

    def test_dataloader(self) -> Iterable | list[Iterable]:
        """The test set; with ``data.full_test`` and a test subset, [the subset, the whole test split] (Lightning's
        multiple test dataloaders: the classifier reports the second as ``test_full/...``)."""
        if self.full_test_set is not None:
            return [self._iterable(self.test_set, train=False), self._iterable(self.full_test_set, train=False)]
        return self._iterable(self.test_set, train=False)


def build_datamodule(cfg: DictConfig) -> ImageDataModule:
    """The DataModule described by ``cfg.data`` and ``cfg.augmentation``."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    augmentation = OmegaConf.to_container(cfg.augmentation, resolve=True)
    return ImageDataModule(data, augmentation, seed=cfg.seed)  # type: ignore[arg-type]
