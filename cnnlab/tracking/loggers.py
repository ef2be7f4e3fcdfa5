"""Lightning loggers from ``conf/logger/``: several at once, W&B falling back to offline logging."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any, Mapping

from hydra.utils import instantiate
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from omegaconf import DictConfig

from cnnlab.tracking.provenance import PROVENANCE_KEY
from cnnlab.tracking.wandb_mode import offline_reason

log = logging.getLogger(__name__)

WANDB_TARGETS = {"lightning.pytorch.loggers.WandbLogger", "lightning.pytorch.loggers.wandb.WandbLogger",
                 "pytorch_lightning.loggers.WandbLogger"}


class RunCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger``, writing ``metrics.csv`` straight into the run dir and continuing it when the run
    resumes.

    Lightning's writer deletes an existing ``metrics.csv`` (and warns that the folder is not empty, which a run dir
    never is: Hydra has written ``.hydra/`` and the log there). This one keeps the rows logged before the resumed
    checkpoint's step and appends after them.
    """

    def __init__(self, save_dir: str, resume_step: int | None = None, **kwargs: Any) -> None:
        super().__init__(save_dir, name="", version="", **kwargs)
        self.resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._experiment = _ContinuedWriter(self.log_dir, self.resume_step)
        return self._experiment


class _ContinuedWriter(ExperimentWriter):
    def __init__(self, log_dir: str, resume_step: int | None) -> None:
        self.resume_step = resume_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        if self.resume_step is None:  # a new run in a used folder starts a new file
            path.unlink()
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            keys, rows = list(reader.fieldnames or []), [r for r in reader if int(r["step"]) < self.resume_step]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = keys


def _without_unset_anonymous(logger: WandbLogger) -> WandbLogger:
    # Lightning always passes wandb.init(anonymous=None); current W&B warns on every run that the setting has no
    # effect, whatever its value. Left out when unset, W&B says nothing.
    init = getattr(logger, "_wandb_init", None)
    if isinstance(init, dict) and init.get("anonymous") is None:
        init.pop("anonymous", None)
    return logger


def build_loggers(logger_cfg: DictConfig, run_name: str, run_dir: Path | None = None,
                  resume_step: int | None = None, wandb_id: str | None = None) -> list[Logger]:
    """The loggers of ``logger_cfg``. ``resume_step`` (a resumed run) makes the CSV log continue from that step;
    ``wandb_id`` makes W&B continue that run."""
    loggers: list[Logger] = []
    for name, conf in logger_cfg.items():
        if conf is None:  # logger.<name>=null switches one off
            continue
        target = conf.get("_target_")
        if target in WANDB_TARGETS:
            resume = {"id": wandb_id, "resume": "allow"} if wandb_id else {}
            reason = offline_reason(bool(conf.get("offline", False)))
            if reason is None:
                loggers.append(_without_unset_anonymous(instantiate(conf, offline=False, name=run_name, **resume)))
                continue
            log.info("W&B logs offline: %s.", reason)
            # Lightning refuses log_model offline, but W&B stores artifacts offline and uploads them on sync:
            # finish_wandb logs the checkpoints itself.
            logger = _without_unset_anonymous(instantiate(conf, offline=True, log_model=False, name=run_name, **resume))
            logger.cnnlab_log_model = bool(conf.get("log_model", False))
            loggers.append(logger)
        elif target == f"{RunCSVLogger.__module__}.{RunCSVLogger.__qualname__}":
            loggers.append(instantiate(conf, resume_step=resume_step))
        else:
            loggers.append(instantiate(conf))
    return loggers


def wandb_ids(loggers: list[Logger]) -> dict[str, str]:
    """``{"wandb_id": ...}`` for the run's W&B run (started here if need be), so that a resumed run continues it."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            return {"wandb_id": logger.experiment.id}
    return {}


def log_run_config(loggers: list[Logger], config: Mapping[str, Any], provenance: Mapping[str, Any] | None = None,
                   run_dir: Path | None = None) -> None:
    """The resolved config (and ``provenance``) as each logger's hyperparameters. A W&B run also gets the recipe's
    name as a tag and a ``config`` artifact: the recipe file and the run's ``.hydra/`` folder."""
    values = {**config, "provenance": dict(provenance)} if provenance else dict(config)
    for logger in loggers:
        logger.log_hyperparams(values)
        if isinstance(logger, WandbLogger) and provenance:
            _describe_wandb_run(logger.experiment, provenance, run_dir)


def _describe_wandb_run(run: Any, provenance: Mapping[str, Any], run_dir: Path | None) -> None:
    import wandb

    recipe = provenance.get("recipe") or {}
    if recipe.get("name"):
        run.tags = tuple(dict.fromkeys([*(run.tags or ()), f"recipe:{recipe['name']}"]))
    files = [(Path(recipe["file"]), f"recipe/{Path(recipe['file']).name}")] if recipe.get("file") else []
    if run_dir is not None and (run_dir / ".hydra").is_dir():
        files += [(p, f".hydra/{p.name}") for p in sorted((run_dir / ".hydra").iterdir()) if p.is_file()]
    if not files:
        return
    artifact = wandb.Artifact(f"config-{run.id}", type="config",
                              metadata={"recipe": recipe.get("name"), "sha256": recipe.get("sha256")})
    for path, name in files:
        if path.is_file():
            artifact.add_file(str(path), name=name)
    run.log_artifact(artifact)


class ProvenanceInCheckpoints(Callback):
    """Every checkpoint of the run keeps the run's provenance (``PROVENANCE_KEY``): plain values, readable with
    ``weights_only=True``."""

    def __init__(self, provenance: Mapping[str, Any]) -> None:
        self.provenance = dict(provenance)

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        checkpoint[PROVENANCE_KEY] = self.provenance


def _log_checkpoints(run: Any, checkpoints: dict[str, str]) -> None:
    import wandb

    artifact = wandb.Artifact(f"model-{run.id}", type="model")
    for alias, path in checkpoints.items():
        artifact.add_file(path, name=f"{alias}.ckpt")
    run.log_artifact(artifact, aliases=list(checkpoints))


def finish_wandb(loggers: list[Logger], status: str, checkpoints: dict[str, str],
                 results: Mapping[str, Any] | None = None) -> list[str]:
    """End the W&B runs (any status but completed finishes as failed) and return the ``wandb sync`` command of
    each offline one.

    ``checkpoints`` maps aliases ("best", "last") to files, uploaded as a model artifact by offline runs;
    ``results`` (the run's record) fills the run's summary.
    """
    commands = []
    for logger in loggers:
        if not isinstance(logger, WandbLogger) or logger._experiment is None:
            continue
        run = logger.experiment
        if results is not None:  # test and validation metrics, and how the run ended (with its error)
            run.summary.update({k: v for k, v in results.items() if k.startswith(("test/", "val/")) or k in
                                ("status", "error", "epochs", "train_time_s", "best_checkpoint")})
        if getattr(logger, "cnnlab_log_model", False) and checkpoints:
            _log_checkpoints(run, checkpoints)
        offline = bool(getattr(run, "offline", False)) or run.settings.mode == "offline"
        run_dir = Path(run.dir).parent
        run.finish(exit_code=0 if status == "completed" else 1)
        if offline:
            commands.append(f"wandb sync {run_dir}")
    return commands
