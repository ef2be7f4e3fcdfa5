"""One run: build the model, data and trainer from a config, fit, test the best checkpoint, record the outcome."""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import lightning.pytorch as pl
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from cnnlab.data import ImageDataModule, build_datamodule
from cnnlab.errors import ConfigError
from cnnlab.models import build_model
from cnnlab.record import CURVES_FILE, RunRecord, plot_curves
from cnnlab.tracking.loggers import build_loggers, finish_wandb, log_run_config
from cnnlab.tracking.provenance import git_commit
from cnnlab.training import ImageClassifier
from cnnlab.training.callbacks import DivergenceGuard, EpochHistory
from cnnlab.training.cpu import tune_for_cpu
from cnnlab.training.module import RUN_CONFIG_KEY
from cnnlab.training.profilers import build_profiler

log = logging.getLogger(__name__)

# The unified `lightning` package always attaches its own console handler. Under Hydra, whose root handlers
# already print every record (and write it to the run's log file), that would print each line twice.
if logging.getLogger().hasHandlers():
    logging.getLogger("lightning").handlers.clear()
# Lightning 2.6 calls a torch.utils._pytree API that newer torch deprecates, once per batch: noise for users.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
# Short epochs (the digits default has 23 batches) would warn that they log no per-step loss; every epoch's
# metrics are logged anyway, so the advice to log more often would only cost speed.
warnings.filterwarnings("ignore", message=r"The number of training batches .* is smaller than the logging interval")


def build_classifier(cfg: DictConfig, datamodule: ImageDataModule, store_config: bool = False) -> ImageClassifier:
    """The LightningModule for ``cfg``; fills ``data.num_classes`` from the data when the config leaves it null.

    With ``store_config`` (a run inside Hydra) its checkpoints keep the resolved ``cfg``, for ``cnnlab eval``.
    """
    if cfg.data.num_classes is None:
        with open_dict(cfg):
            cfg.data.num_classes = datamodule.num_classes
    return ImageClassifier(
        build_model(cfg),
        num_classes=cfg.data.num_classes,
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
        loss=OmegaConf.to_container(cfg.loss, resolve=True),
        run_config=OmegaConf.to_container(cfg, resolve=True) if store_config else None,
    )


def _trainer_options(cfg: DictConfig) -> dict[str, Any]:
    options = OmegaConf.to_container(cfg.trainer, resolve=True)
    options["profiler"] = build_profiler(options.get("profiler"))  # type: ignore[union-attr]
    return {k: v for k, v in options.items() if v is not None}  # type: ignore[union-attr]


def run_name(overrides: Sequence[str]) -> str | None:
    """A readable name from the command-line overrides (``optimizer.lr=0.1,model=mlp``), for trackers."""
    return ",".join(o for o in overrides if not o.startswith("hydra")) or None


def _close_progress_bars(trainer: pl.Trainer | None) -> None:
    """A run that fails mid-epoch leaves tqdm's bars open; tqdm would redraw them at exit, after the run dir."""
    bar = trainer.progress_bar_callback if trainer is not None else None
    for name in ("_train_progress_bar", "_val_progress_bar", "_test_progress_bar"):
        progress = getattr(bar, name, None)
        if progress is not None:
            progress.close()


def train(cfg: DictConfig, run_dir: Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Fit and test ``cfg`` in ``run_dir``. Writes ``results.json`` and ``curves.png`` even when the run fails."""
    record = RunRecord(run_dir, overrides)
    record.update(git=git_commit())
    history = EpochHistory()
    loggers: list = []
    checkpoints: dict[str, str] = {}
    trainer: pl.Trainer | None = None
    failed = True
    try:
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        datamodule = build_datamodule(cfg)
        datamodule.prepare_data()
        datamodule.setup("fit")
        classifier = build_classifier(cfg, datamodule, store_config=True)
        record.update(params=sum(p.numel() for p in classifier.model.parameters()))
        loggers = build_loggers(cfg.logger, run_name(overrides) or run_dir.name)
        log_run_config(loggers, classifier.run_config)
        callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
        trainer = pl.Trainer(
            **_trainer_options(cfg),
            logger=loggers or False,
            callbacks=[*callbacks, DivergenceGuard(), history],
            default_root_dir=str(run_dir),
        )
        tune_for_cpu(trainer)
        started = time.perf_counter()
        trainer.fit(classifier, datamodule=datamodule)
        record.update(train_time_s=round(time.perf_counter() - started, 3), epochs=len(history.rows),
                      train_images_per_s=history.images_per_second)
        saver = trainer.checkpoint_callback
        best = saver.best_model_path if saver else ""
        checkpoints = {alias: path for alias, path in (("best", best), ("last", saver.last_model_path if saver else ""))
                       if path}
        tested = trainer.test(classifier, datamodule=datamodule, ckpt_path=best or None, verbose=False)[0]
        record.update(best_checkpoint=best or None, **{"val/acc_best": history.best("val/acc")})
        record.complete({k: v for k, v in tested.items() if k.startswith("test/")})
        failed = False
        return record.data
    except BaseException as err:
        _close_progress_bars(trainer)
        record.fail(getattr(err, "user_message", None) or f"{type(err).__name__}: {err}")
        raise
    finally:
        record.update(epochs=len(history.rows), history=history.rows,
                      devices=os.environ.get("CUDA_VISIBLE_DEVICES"), torch_threads=torch.get_num_threads())
        for command in finish_wandb(loggers, failed, checkpoints):
            log.info("W&B run saved offline; upload it with: %s", command)
            record.update(wandb_sync=command)
        record.write()
        plot_curves(history.rows, run_dir / CURVES_FILE)


def evaluate(ckpt_path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Re-test a checkpoint on its run's test split, with the config saved in the checkpoint (plus ``overrides``).

    Writes ``eval-<checkpoint>.json`` beside the run's ``results.json`` and returns the metrics.
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(f"No checkpoint at {path}. Pass ckpt_path=<run_dir>/checkpoints/<file>.ckpt of a finished "
                          f"run.")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if RUN_CONFIG_KEY not in checkpoint:
        raise ConfigError(f"{path} was not written by cnnlab train (it holds no run config), so it cannot be "
                          f"re-evaluated here.")
    cfg = OmegaConf.create(checkpoint[RUN_CONFIG_KEY])
    OmegaConf.set_struct(cfg, True)
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if OmegaConf.select(cfg, key, default=KeyError) is KeyError:
            raise ConfigError(f"Unknown config key '{key}' for this run. Overrides for eval change the saved config, "
                              f"e.g. data.root=/new/place or trainer.accelerator=gpu.")
        OmegaConf.update(cfg, key, override.value(), merge=False)
    datamodule = build_datamodule(cfg)
    classifier = build_classifier(cfg, datamodule)
    options = {k: v for k, v in _trainer_options(cfg).items()
               if k in ("accelerator", "devices", "precision", "deterministic", "limit_test_batches", "profiler")}
    trainer = pl.Trainer(**options, logger=False, enable_checkpointing=False, default_root_dir=str(path.parent))
    tune_for_cpu(trainer)
    metrics = trainer.test(classifier, datamodule=datamodule, ckpt_path=str(path), verbose=False)[0]
    result = {"checkpoint": str(path.resolve()), **{k: float(v) for k, v in metrics.items()}}
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    (run_dir / f"eval-{path.stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
