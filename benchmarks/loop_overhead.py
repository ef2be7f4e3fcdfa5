"""Where a cnnlab training step's time goes beyond the network's own: a hand loop against Lightning, in one process.

All variants train the recipe's modern LeNet-5 (``experiment=lenet5_mnist``: NHWC) with fused Adam and a per-step
one-cycle schedule on the same batches (cnnlab's in-memory MNIST batches, normalised by its batch pipeline), with
malloc keeping freed memory as a CPU run does, so the data path and the kernels are identical and only the loop
around them differs:

* hand          — ``for x, y in batches: forward, backward, step``
* lightning     — a bare ``LightningModule`` (training_step returns the loss), no callbacks, logger or progress bar
* cnnlab module — cnnlab's ``ImageClassifier`` (epoch metrics, loss check hooks), still without callbacks
* cnnlab run    — the module with the callbacks, logger and profiler of a ``cnnlab train`` run

Each round times ``--steps`` steps of every variant, one after another; the medians over ``--rounds`` rounds
cancel most of this shared machine's drift. Prints ms per step and the speed relative to the hand loop.

    python benchmarks/loop_overhead.py --root ../shared/data
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from typing import Callable

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.nn import functional as F

from cnnlab import build_datamodule, compose_config
from cnnlab.models import build_model
from cnnlab.run import build_classifier
from cnnlab.training.callbacks import DivergenceGuard, EpochHistory, ProgressBar
from cnnlab.training.cpu import reuse_freed_memory, stop_probing_nvml
from cnnlab.training.profilers import NoProfiler

WARM_UP = 20  # steps before the clock starts: first-touch allocations, the first fused-kernel calls
LR = 3e-3


def optimizer_and_schedule(model: torch.nn.Module) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, fused=True)
    return optimizer, torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LR, total_steps=100_000)


class BareModule(pl.LightningModule):
    def __init__(self, model: torch.nn.Module, normalise: Callable) -> None:
        super().__init__()
        self.model, self.normalise = model, normalise

    def on_after_batch_transfer(self, batch, dataloader_idx):
        return self.normalise(batch[0], train=True), batch[1]

    def training_step(self, batch, batch_idx):
        images, labels = batch
        return F.cross_entropy(self.model(images), labels)

    def configure_optimizers(self):
        optimizer, schedule = optimizer_and_schedule(self)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class StepClock(pl.Callback):
    def __init__(self, steps: int) -> None:
        self.steps, self.ms_per_step = steps, float("nan")

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == WARM_UP:
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if batch_idx == WARM_UP + self.steps - 1:
            self.ms_per_step = (time.perf_counter() - self.started) / self.steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="../shared/data", help="folder holding MNIST/")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    stop_probing_nvml()  # as a CPU run of cnnlab does (cnnlab/training/cpu.py)
    reuse_freed_memory()

    cfg = compose_config(["experiment=lenet5_mnist", f"data.root={args.root}"])
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    normalise = datamodule.batch_pipeline

    def hand() -> float:
        model = build_model(cfg)
        optimizer, schedule = optimizer_and_schedule(model)
        for i, (images, labels) in enumerate(datamodule.train_dataloader()):
            if i == WARM_UP:
                started = time.perf_counter()
            if i == WARM_UP + args.steps:
                break
            loss = F.cross_entropy(model(normalise(images, train=True)), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        return (time.perf_counter() - started) / args.steps * 1e3

    def fit(module: pl.LightningModule, run_callbacks: bool = False) -> float:
        clock = StepClock(args.steps)
        folder = tempfile.mkdtemp(prefix="cnnlab-overhead-")
        options: dict = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, callbacks=[clock])
        if run_callbacks:
            options = dict(logger=CSVLogger(folder, name="", version=""), callbacks=[
                ModelCheckpoint(dirpath=folder, monitor="val/loss", save_last=True),
                LearningRateMonitor(logging_interval="epoch"), ProgressBar(), DivergenceGuard(), EpochHistory(), clock],
                profiler=NoProfiler())
        trainer = pl.Trainer(max_epochs=1, limit_train_batches=WARM_UP + args.steps, limit_val_batches=0,
                             num_sanity_val_steps=0, enable_model_summary=False, **options)
        trainer.fit(module, train_dataloaders=datamodule.train_dataloader())
        return clock.ms_per_step

    def cnnlab_module() -> pl.LightningModule:
        module = build_classifier(cfg, datamodule)
        module.on_after_batch_transfer = lambda batch, idx: (normalise(batch[0], train=True), batch[1])
        return module

    variants: dict[str, Callable[[], float]] = {
        "hand": hand,
        "lightning": lambda: fit(BareModule(build_model(cfg), normalise)),
        "cnnlab module": lambda: fit(cnnlab_module()),
        "cnnlab run": lambda: fit(cnnlab_module(), run_callbacks=True),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, variant in variants.items():
            times[name].append(variant())
    hand_ms = statistics.median(times["hand"])
    print(f"median of {args.rounds} rounds of {args.steps} steps (batch {cfg.data.batch_size}, "
          f"{torch.get_num_threads()} threads):")
    for name, values in times.items():
        ms = statistics.median(values)
        print(f"  {name:>13}: {ms:6.3f} ms/step  (+{ms - hand_ms:5.3f})  speed / hand loop {hand_ms / ms:.3f}")


if __name__ == "__main__":
    main()
