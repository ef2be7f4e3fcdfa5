"""Checks on a composed config that types alone cannot express. Imports neither torch nor Lightning."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from cnnlab.errors import ConfigError

LOSSES = ("cross_entropy", "mse")
PIPELINES = ("auto", "tensor", "loader")
SCHEDULE_INTERVALS = ("epoch", "step")
PROFILERS = ("simple", "advanced", "pytorch", "xla")  # the names Lightning's Trainer(profiler=...) knows


def validate(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` naming the first impossible value in ``cfg``."""
    data, scheduler, loss, trainer = cfg.data, cfg.scheduler, cfg.loss, cfg.trainer
    if OmegaConf.is_missing(data, "root"):
        raise ConfigError(
            f"data.root must be set for the {data.name} dataset: add data.root=/path/to/{data.name} to the command."
        )
    if data.batch_size < 1:
        raise ConfigError(f"data.batch_size must be at least 1, got {data.batch_size}.")
    if not 0.0 < data.val_split < 1.0:
        raise ConfigError(f"data.val_split is the fraction of the training split held out to pick the best "
                          f"checkpoint and stop early: use a value in (0, 1), got {data.val_split}.")
    if len(data.mean) != data.channels or len(data.std) != data.channels:
        raise ConfigError(f"data.mean and data.std need one value per channel ({data.channels}), got "
                          f"{len(data.mean)} and {len(data.std)}.")
    if data.pipeline not in PIPELINES:
        raise ConfigError(f"data.pipeline must be one of {', '.join(PIPELINES)}, got '{data.pipeline}'.")
    if loss.name not in LOSSES:
        raise ConfigError(f"Unknown loss '{loss.name}'. Valid losses: {', '.join(LOSSES)}. Set loss=<name>.")
    if not 0.0 <= loss.label_smoothing < 1.0:
        raise ConfigError(f"loss.label_smoothing must be in [0, 1), got {loss.label_smoothing}.")
    if scheduler.interval not in SCHEDULE_INTERVALS:
        raise ConfigError(f"scheduler.interval must be 'epoch' or 'step', got '{scheduler.interval}'.")
    if scheduler.name == "onecycle" and scheduler.interval != "step":
        raise ConfigError("The one-cycle schedule changes the rate every batch: set scheduler.interval=step.")
    if scheduler.name in ("onecycle", "plateau") and scheduler.warmup:
        raise ConfigError(f"scheduler.warmup cannot be combined with the {scheduler.name} schedule: set "
                          f"scheduler.warmup=0, or pick scheduler=cosine, which can warm up.")
    if trainer.profiler is not None and trainer.profiler not in PROFILERS:
        raise ConfigError(f"Unknown trainer.profiler '{trainer.profiler}'. Lightning's profilers: "
                          f"{', '.join(PROFILERS)}; leave it null (the default) to profile nothing.")
    if trainer.max_epochs < 1 and trainer.max_steps < 1:
        raise ConfigError("Set trainer.max_epochs (or trainer.max_steps) to at least 1.")
