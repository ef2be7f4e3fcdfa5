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
            if reason is None:
                loggers.append(instantiate(conf, offline=False, name=run_name))
                continue
            log.info("W&B logs offline: %s.", reason)
            # Lightning refuses log_model offline, but W&B stores artifacts offline and uploads them on sync:
            # finish_wandb logs the checkpoints itself.
            logger = instantiate(conf, offline=True, log_model=False, name=run_name)
            logger.cnnlab_log_model = bool(conf.get("log_model", False))
            loggers.append(logger)
        else:
            loggers.append(instantiate(conf))
    return loggers


def log_run_config(loggers: list[Logger], config: Mapping[str, Any]) -> None:
    for logger in loggers:
        logger.log_hyperparams(dict(config))


def _log_checkpoints(run: Any, checkpoints: dict[str, str]) -> None:
    import wandb

    artifact = wandb.Artifact(f"model-{run.id}", type="model")
    for alias, path in checkpoints.items():
        artifact.add_file(path, name=f"{alias}.ckpt")
    run.log_artifact(artifact, aliases=list(checkpoints))


def finish_wandb(loggers: list[Logger], failed: bool, checkpoints: dict[str, str]) -> list[str]:
    """End the W&B runs (failed runs finish as failed) and return the ``wandb sync`` command of each offline one.

    ``checkpoints`` maps aliases ("best", "last") to files, uploaded as a model artifact by offline runs.
    """
    commands = []
    for logger in loggers:
        if not isinstance(logger, WandbLogger) or logger._experiment is None:
            continue
        run = logger.experiment
        if getattr(logger, "cnnlab_log_model", False) and checkpoints:
            _log_checkpoints(run, checkpoints)
        offline = bool(getattr(run, "offline", False)) or run.settings.mode == "offline"
        run_dir = Path(run.dir).parent
        run.finish(exit_code=1 if failed else 0)
        if offline:
            commands.append(f"wandb sync {run_dir}")
    return commands
