"""``checkpoints/last.ckpt``: the newest state of a run, from which ``cnnlab resume`` continues it exactly."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Checkpoint

from cnnlab.errors import RunInterrupted
from cnnlab.training.interrupts import SignalRequests

LAST_CHECKPOINT = "last.ckpt"


class ResumeCheckpoint(Checkpoint):
    """Writes ``last.ckpt`` at the end of every epoch, every ``every_n_steps`` training steps and every
    ``every_n_minutes`` within an epoch, and when a stop signal arrives — then stops the run.

    Lightning's ``ModelCheckpoint(save_last=True)`` only refreshes ``last.ckpt`` when it also saves a top-k
    checkpoint, so after the best epoch it falls behind; this callback owns the file instead. It is saved at the
    end of a training step (or epoch), the points from which Lightning's loops resume, and it carries what makes the
    resumed run identical to an uninterrupted one: the global random state (augmentation and dropout draw from it)
    besides Lightning's own loop, optimizer and data-order state.
    """

    def __init__(self, dirpath: str | Path, every_n_steps: int | None = None, every_n_minutes: float | None = None,
                 signals: SignalRequests | None = None) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_steps = every_n_steps
        self.every_n_seconds = every_n_minutes * 60 if every_n_minutes else None
        self.signals = signals
        self._saved_at = time.monotonic()

    @property
    def path(self) -> Path:
        return self.dirpath / LAST_CHECKPOINT

    @property
    def state_key(self) -> str:
        return self.__class__.__qualname__

    def state_dict(self) -> dict[str, Any]:
        state = {"torch_rng": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch_rng"])
        if "cuda_rng" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda_rng"])

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._saved_at = time.monotonic()
        if self.signals is not None:
            self.signals.install()  # Lightning has just put its own SIGTERM handler in place
            self.signals.deferring = True

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.signals is not None:
            self.signals.deferring = False

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.on_fit_end(trainer, pl_module)

    def _stop_requested(self, trainer: pl.Trainer) -> bool:
        requested = self.signals is not None and self.signals.received is not None
        if trainer.world_size > 1:  # every process must stop at the same step
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        return requested

    def _save(self, trainer: pl.Trainer) -> None:
        # weights_only=False: the whole training state (optimizer, loops, callbacks), not only the weights.
        trainer.save_checkpoint(self.path, weights_only=False)  # Lightning writes it atomically
        self._saved_at = time.monotonic()

    def _stop(self) -> None:
        raise RunInterrupted(self.signals.received if self.signals and self.signals.received else "SIGINT",
                             checkpoint=str(self.path))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        stop = self._stop_requested(trainer)
        if trainer.is_last_batch and not stop:
            return  # the epoch's end saves it, after validation
        due = (self.every_n_steps and trainer.global_step % self.every_n_steps == 0) or (
            self.every_n_seconds and time.monotonic() - self._saved_at >= self.every_n_seconds)
        if stop or due:
            self._save(trainer)
        if stop:
            self._stop()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning calls this after the epoch's validation: the best-checkpoint bookkeeping is up to date.
        self._save(trainer)
        if self._stop_requested(trainer):
            self._stop()
