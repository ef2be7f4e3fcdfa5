"""Callbacks cnnlab adds to every training run (the configurable ones come from ``conf/callbacks/``)."""

from __future__ import annotations

import math
import time
from typing import Any, Mapping

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import TQDMProgressBar

from cnnlab.errors import TrainingDivergedError


class DivergenceGuard(pl.Callback):
    """Stops training with a clear error once the training loss is NaN or infinite, or has exploded: grown past
    ``factor`` times its reference, the larger of the first step's loss and the loss of a chance-level prediction
    (ln of the class count for cross-entropy). An exploded loss (Adam at lr=1e9 reaches 1e20) never comes back
    to a useful model, so the run is reported as diverged rather than completed.

    Reading the loss on the host every step would stall a GPU every step, so it is read every
    ``trainer.log_every_n_steps`` steps (when logging reads it anyway) and at the end of each epoch, before
    validation and checkpointing. That misses nothing: a non-finite loss makes the weights non-finite, and every
    later loss with them. Checkpoints already written stay on disk.
    """

    def __init__(self, factor: float = 100.0, num_classes: int | None = None) -> None:
        self.factor = factor
        self.chance_loss = math.log(num_classes) if num_classes and num_classes > 1 else 0.0
        self.reference: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"reference": self.reference}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.reference = state_dict.get("reference")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        first = self.reference is None
        if not first and trainer.global_step % trainer.log_every_n_steps and not trainer.is_last_batch:
            return
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
        if loss is None:
            return
        value = float(loss.detach())
        if first and math.isfinite(value):
            self.reference = max(value, self.chance_loss)
            return
        if math.isfinite(value) and value <= self.factor * (self.reference or math.inf):
            return
        how = (f"the loss became {value}" if not math.isfinite(value) else
               f"the loss exploded to {value:.3g}, more than {self.factor:g} times its reference {self.reference:.3g} "
               f"(training.divergence_factor={self.factor:g})")
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        saved = trainer.checkpoint_callback.dirpath if trainer.checkpoint_callback else None
        kept = f" Checkpoints written so far are kept in {saved}." if saved else ""
        raise TrainingDivergedError(
            f"Training diverged: {how} by epoch {trainer.current_epoch}, step {trainer.global_step} (learning rate "
            f"{lr:.3g}). Lower optimizer.lr, clip gradients (trainer.gradient_clip_val=1.0) or warm the rate up "
            f"(scheduler.warmup=1).{kept}"
        )


class ProgressBar(TQDMProgressBar):
    """Lightning's tqdm progress bar, redrawn every ``min_interval`` seconds and at the end of each epoch.

    Lightning redraws every ``refresh_rate`` batches whatever a batch costs: a redraw (~0.5 ms) every few batches
    slows a small network on a CPU by several percent, while for a big one the bar would hardly move.
    """

    def __init__(self, min_interval: float = 0.5, process_position: int = 0, leave: bool = False) -> None:
        super().__init__(refresh_rate=1, process_position=process_position, leave=leave)
        self.min_interval = min_interval
        self._last_redraw = -math.inf

    def _should_update(self, current: int, total: int) -> bool:
        if not self.is_enabled:
            return False
        now = time.monotonic()
        if current == total or now - self._last_redraw >= self.min_interval:
            self._last_redraw = now
            return True
        return False


class EpochHistory(pl.Callback):
    """One row per finished epoch (train/val loss and accuracy, learning rate, training images per second), and
    the training speed of the whole run.

    Speed counts only the training batches, not validation, checkpoints or logging between epochs: the figure
    the benchmarks compare with a hand-written loop.
    """

    KEYS = {"train/loss": "train/loss_epoch", "train/acc": "train/acc", "val/loss": "val/loss", "val/acc": "val/acc"}

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self.images = 0
        self.seconds = 0.0
        self._epoch_images = 0
        self._epoch_seconds = 0.0
        self._started: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.fit_loop.epoch_loop.batch_progress.current.ready:  # not an epoch resumed in its middle
            self._epoch_images, self._epoch_seconds = 0, 0.0
        self._started = time.perf_counter()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._started is None:  # training resumes after a validation inside the epoch (val_check_interval)
            self._started = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._epoch_images += len(batch[1])

    def _stop_clock(self) -> None:
        if self._started is not None:
            self._epoch_seconds += time.perf_counter() - self._started
            self._started = None

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_clock()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_clock()
        self.images += self._epoch_images
        self.seconds += self._epoch_seconds
        epoch_images, epoch_seconds = self._epoch_images, self._epoch_seconds
        self._epoch_images, self._epoch_seconds = 0, 0.0
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch + 1, "lr": trainer.optimizers[0].param_groups[0]["lr"]}
        for name, key in self.KEYS.items():
            if key in metrics:
                row[name] = float(metrics[key])
        if epoch_seconds:
            row["train_images_per_s"] = round(epoch_images / epoch_seconds, 1)
        self.rows.append(row)

    def state_dict(self) -> dict[str, Any]:
        # Kept in checkpoints, so that a resumed run's results.json and curves hold every epoch.
        return {"rows": self.rows, "images": self.images, "seconds": self.seconds,
                "epoch_images": self._epoch_images, "epoch_seconds": self._epoch_seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])
        self.images, self.seconds = state_dict["images"], state_dict["seconds"]
        self._epoch_images, self._epoch_seconds = state_dict["epoch_images"], state_dict["epoch_seconds"]

    def best(self, key: str) -> float | None:
        """The highest value of ``key`` over the epochs (an accuracy)."""
        values = [r[key] for r in self.rows if key in r and not math.isnan(r[key])]
        return max(values) if values else None

    def lowest(self, key: str) -> float | None:
        """The lowest value of ``key`` over the epochs (a loss)."""
        values = [r[key] for r in self.rows if key in r and not math.isnan(r[key])]
        return min(values) if values else None

    @property
    def images_per_second(self) -> float | None:
        return self.images / self.seconds if self.seconds else None


