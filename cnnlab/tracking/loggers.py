"""Lightning loggers from ``conf/logger/``: several at once, W&B falling back to offline logging."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig

from cnnlab.tracking.wandb_mode import offline_reason

log = logging.getLogger(__name__)

WANDB_TARGETS = {"lightning.pytorch.loggers.WandbLogger", "lightning.pytorch.loggers.wandb.WandbLogger",
                 "pytorch_lightning.loggers.WandbLogger"}


def build_loggers(logger_cfg: DictConfig, run_name: str) -> list[Logger]:
    loggers: list[Logger] = []
    for name, conf in logger_cfg.items():
        if conf is None:  # logger.<name>=null switches one off
            continue
        if conf.get("_target_") in WANDB_TARGETS:
            reason = offline_reason(bool(conf.get("offline", False)))
            if reason:
                log.info("W&B logs offline: %s.", reason)
            loggers.append(instantiate(conf, offline=reason is not None, name=run_name))
        else:
            loggers.append(instantiate(conf))
    return loggers


def log_run_config(loggers: list[Logger], config: Mapping[str, Any]) -> None:
    for logger in loggers:
        logger.log_hyperparams(dict(config))


def finish_wandb(loggers: list[Logger], failed: bool) -> list[str]:
    """End the W&B runs (marking failed ones as failed) and return the ``wandb sync`` commands for offline ones."""
    commands = []
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            run = logger.experiment
            offline = run.settings.mode == "offline" if hasattr(run, "settings") else False
            run_dir = run.dir
            run.finish(exit_code=1 if failed else 0)
            if offline:
                commands.append(f"wandb sync {Path(run_dir).parent}")
    return commands
