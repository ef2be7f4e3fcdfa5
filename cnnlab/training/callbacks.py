"""Callbacks cnnlab adds to every training run (the configurable ones come from ``conf/callbacks/``)."""

from __future__ import annotations

import math
import time
from typing import Any, Mapping

import lightning.pytorch as pl
import torch

from cnnlab.errors import TrainingDivergedError


class DivergenceGuard(pl.Callback):
    """Stops training with a clear error as soon as the training loss is NaN or infinite.

    Checkpoints already written stay on disk: the error is raised before anything else is saved.
    """

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
        if loss is None or torch.isfinite(loss).all():
            return
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        saved = trainer.checkpoint_callback.dirpath if trainer.checkpoint_callback else None
        kept = f" Checkpoints written so far are kept in {saved}." if saved else ""
        raise TrainingDivergedError(
            f"Training diverged: the loss became {loss.item()} at epoch {trainer.current_epoch}, step "
            f"{trainer.global_step} (learning rate {lr:.3g}). Lower optimizer.lr, clip gradients "
            f"(trainer.gradient_clip_val=1.0) or warm the rate up (scheduler.warmup=1).{kept}"
        )


class EpochHistory(pl.Callback):
    """Keeps one row per finished epoch: train/val loss and accuracy, and the learning rate."""

    KEYS = {"train/loss": "train/loss_epoch", "train/acc": "train/acc", "val/loss": "val/loss", "val/acc": "val/acc"}

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch + 1, "lr": trainer.optimizers[0].param_groups[0]["lr"]}
        for name, key in self.KEYS.items():
            if key in metrics:
                row[name] = float(metrics[key])
        self.rows.append(row)

    def best(self, key: str) -> float | None:
        values = [r[key] for r in self.rows if key in r and not math.isnan(r[key])]
        return max(values) if values else None


class TrainThroughput(pl.Callback):
    """Training images per second, counting only the training batches (not validation, checkpoints, logging
    between epochs): the figure the benchmarks compare with a hand-written loop."""

    def __init__(self) -> None:
        self.images = 0
        self.seconds = 0.0
        self._started: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    def _stop(self) -> None:
        if self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self._started = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.images += len(batch[1])

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop()

    @property
    def images_per_second(self) -> float | None:
        return self.images / self.seconds if self.seconds else None


class StoreRunConfig(pl.Callback):
    """Saves the run's resolved config inside every checkpoint, so ``cnnlab eval`` needs nothing else."""

    KEY = "cnnlab_config"

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint[self.KEY] = self.config
