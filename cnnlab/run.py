"""One run: build the model, data and trainer from a config, fit, test the best checkpoint, record the outcome."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import lightning.pytorch as pl
from lightning.pytorch.accelerators import CPUAccelerator
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from cnnlab.checkpoint_file import read_checkpoint
from cnnlab.config.flat_keys import flat_keys
from cnnlab.data import ImageDataModule, build_datamodule
from cnnlab.errors import ConfigError, RunInterrupted, TrainingDivergedError
from cnnlab.models import build_model
from cnnlab.record import CURVES_FILE, UNFINISHED, RunRecord, plot_curves, read_results
from cnnlab.tracking.loggers import ProvenanceInCheckpoints, build_loggers, finish_wandb, log_run_config, wandb_ids
from cnnlab.tracking.provenance import collect as collect_provenance, dataset_fingerprint, git_commit
from cnnlab.training import ImageClassifier
from cnnlab.training.callbacks import DivergenceGuard, EpochHistory
from cnnlab.training.checkpointing import LAST_CHECKPOINT, ResumeCheckpoint
from cnnlab.training.cpu import tune_for_cpu
from cnnlab.training.interrupts import SignalRequests, launched_by_slurm_launcher, requeue_slurm_job
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
# A run's checkpoint folder is its own: when it exists, the run is being resumed and its checkpoints are kept.
warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


class _DropMessages(logging.Filter):
    """Drops the log records that start with one of ``prefixes``: advertising, not information about the run."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropMessages("💡 Tip"))


def _describe(cfg: DictConfig, datamodule: ImageDataModule, classifier: ImageClassifier, trainer: pl.Trainer) -> str:
    """The run's essentials in one line: what is trained on what, how big, where."""
    sizes = " / ".join(f"{len(s):,} {name}" for name, s in (("training", datamodule.train_set),
                                                             ("validation", datamodule.val_set),
                                                             ("test", datamodule.test_set)))
    params = sum(p.numel() for p in classifier.model.parameters())
    where = f"{trainer.num_devices} {trainer.accelerator.__class__.__name__.removesuffix('Accelerator')}"
    if isinstance(trainer.accelerator, CPUAccelerator):
        threads = torch.get_num_threads()
        where += f" ({threads} thread{'' if threads == 1 else 's'})"
    return (f"{cfg.model.name} ({params:,} parameters) on {cfg.data.name} ({datamodule.num_classes} classes: "
            f"{sizes} images), {where}, {cfg.trainer.max_epochs} epoch{'' if cfg.trainer.max_epochs == 1 else 's'}")


def build_classifier(cfg: DictConfig, datamodule: ImageDataModule, store_config: bool = False) -> ImageClassifier:
    """The LightningModule for ``cfg``; fills ``data.num_classes`` from the data when the config leaves it null.

    With ``store_config`` (a run inside Hydra) its checkpoints keep the resolved ``cfg``, for ``cnnlab eval``.
    """
    if cfg.data.num_classes is None:
        with open_dict(cfg):
            cfg.data.num_classes = datamodule.num_classes
    classifier = ImageClassifier(
        build_model(cfg),
        num_classes=cfg.data.num_classes,
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
        loss=OmegaConf.to_container(cfg.loss, resolve=True),
        run_config=OmegaConf.to_container(cfg, resolve=True) if store_config else None,
        adversarial=OmegaConf.to_container(cfg.training.adversarial, resolve=True)
        if cfg.training.get("adversarial") is not None else None,
        normalisation=(list(cfg.data.mean), list(cfg.data.std)),
    )
    if not cfg.model.compile:  # an example image lets Lightning's model summary show sizes and FLOPs
        classifier.example_input_array = torch.zeros(1, cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    return classifier


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


def _cluster_plugins() -> list:
    """Under SLURM, Lightning's own pre-emption handling is switched off: cnnlab's signal handling checkpoints at
    the end of a step and requeues the job itself (see ``cnnlab.training.interrupts``)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def _trainer(cfg: DictConfig, **kwargs: Any) -> pl.Trainer:
    """Lightning's Trainer with ``cfg.trainer``'s options; a device this machine lacks is a config error."""
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    try:
        return pl.Trainer(**_trainer_options(cfg), **kwargs)
    except (MisconfigurationException, RuntimeError) as err:
        accelerator = cfg.trainer.accelerator
        if accelerator in ("gpu", "cuda", "mps", "tpu") and not torch.cuda.is_available():
            raise ConfigError(f"trainer.accelerator={accelerator} needs a GPU, and torch finds none on this machine "
                              f"({' '.join(str(err).split())}). Train on the CPU with trainer=cpu, or run on a "
                              f"machine with a GPU.") from None
        raise


def _best_checkpoint(trainer: pl.Trainer | None) -> str:
    saver = trainer.checkpoint_callback if trainer is not None else None
    return getattr(saver, "best_model_path", "") or ""


# What Lightning's DDP launcher puts in os.environ for the processes it starts (and leaves there).
_LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


@contextlib.contextmanager
def _distributed_scope() -> Iterator[None]:
    """Leave no trace of a distributed run in this process: Lightning's DDP launcher sets MASTER_PORT, LOCAL_RANK
    and friends in os.environ and keeps the process group, so the next run of a sweep in the same process would
    think it was started by a launcher and talk to processes that are gone."""
    before = {key: os.environ.get(key) for key in _LAUNCHER_ENV}
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def is_global_zero() -> bool:
    """Whether this is the process that reports for the run: the only one, or rank 0 of a distributed run (the
    others are started by Lightning's DDP launcher, or by SLURM, with their rank in the environment)."""
    return rank_zero_only.rank == 0


def train(cfg: DictConfig, run_dir: Path, overrides: Sequence[str] = (), resume_from: Path | None = None
          ) -> dict[str, Any]:
    """Fit and test ``cfg`` in ``run_dir``; with ``resume_from``, continue the run from that checkpoint.

    Writes ``results.json`` when the run starts (status ``running``) and when it stops, however it stops, and
    ``curves.png``. A stop signal ends the run after a resumable checkpoint with ``RunInterrupted``; in a trial of
    ``launcher=slurm``, SLURM's pre-emption warning (SIGUSR1) also puts the job back in the queue.
    """
    previous = read_results(run_dir) if resume_from is not None else None
    record = RunRecord(run_dir, overrides, previous=previous, write=is_global_zero())
    record.update(git=git_commit())
    record.update(provenance={**collect_provenance(), **_rerun_of(previous)})  # provenance: see tracking/provenance.py
    record.write(final=False)  # on disk from the start: a run killed outright is visibly unfinished
    history = EpochHistory()
    loggers: list = []
    checkpoints: dict[str, str] = {}
    trainer: pl.Trainer | None = None
    started = time.perf_counter()
    with SignalRequests() as signals, _distributed_scope():
        try:
            pl.seed_everything(cfg.seed, workers=True, verbose=False)
            datamodule = build_datamodule(cfg)
            datamodule.prepare_data()
            datamodule.setup("fit")
            record.data["provenance"]["data"] = dataset_fingerprint(OmegaConf.to_container(cfg.data, resolve=True))
            classifier = build_classifier(cfg, datamodule, store_config=True)
            if cfg.get("analysis"):  # analysis=[...]: a wrong layer name fails now, not after training
                from cnnlab.analysis.common import check_analyses

                check_analyses(cfg, classifier.model)
            record.update(params=sum(p.numel() for p in classifier.model.parameters()))
            loggers = build_loggers(cfg.logger, run_name(overrides) or run_dir.name, run_dir=run_dir,
                                    resume_step=_global_step(resume_from), wandb_id=(previous or {}).get("wandb_id"))
            record.update(**wandb_ids(loggers))
            if resume_from is None:
                log_run_config(loggers, classifier.run_config, record.data["provenance"], run_dir)
            callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
            training = cfg.training
            trainer = _trainer(
                cfg,
                logger=loggers or False,
                callbacks=[*callbacks, ProvenanceInCheckpoints(record.data["provenance"]),
                           DivergenceGuard(training.divergence_factor, cfg.data.num_classes), history,
                           ResumeCheckpoint(run_dir / "checkpoints", training.checkpoint_every_n_steps,
                                            training.checkpoint_every_n_minutes, signals)],
                plugins=_cluster_plugins(),
                default_root_dir=str(run_dir),
            )
            tune_for_cpu(trainer, datamodule.loader_workers)
            log.info("%s", _describe(cfg, datamodule, classifier, trainer))
            if resume_from is not None:
                log.info("Resuming from %s (epoch %d, step %d)", resume_from, *_epoch_and_step(resume_from))
            started = time.perf_counter()
            trainer.fit(classifier, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None,
                        weights_only=True)
            record.add_train_time(time.perf_counter() - started)
            record.update(epochs=len(history.rows), train_images_per_s=history.images_per_second)
            best = _best_checkpoint(trainer)
            checkpoints = {alias: path for alias, path in (("best", best), ("last", str(run_dir / "checkpoints" /
                                                                                       LAST_CHECKPOINT))) if path}
            if best:  # the weights only: the callbacks keep the state of the finished fit (its history)
                classifier.load_state_dict(read_checkpoint(best, purpose="testing the best checkpoint")["state_dict"])
            # one dict per test dataloader (two with data.full_test: the subset, then the whole test split)
            tested = {k: v for d in trainer.test(classifier, datamodule=datamodule, verbose=False) for k, v in d.items()}
            record.update(best_checkpoint=best or None, **{"val/acc_best": history.best("val/acc"),
                                                           "val/loss_best": history.lowest("val/loss")})
            record.update(**_analyses(cfg, run_dir, classifier, datamodule, best or checkpoints.get("last"), loggers))
            record.complete({k: v for k, v in tested.items() if k.startswith(("test/", "test_full/"))})
            return record.data
        except RunInterrupted as err:
            _close_progress_bars(trainer)
            record.add_train_time(time.perf_counter() - started)
            record.interrupt(err.signal_name, f"cnnlab resume {run_dir}")
            if err.signal_name == "SIGUSR1" and launched_by_slurm_launcher():
                record.update(requeued=requeue_slurm_job())
            raise
        except TrainingDivergedError as err:
            _close_progress_bars(trainer)
            record.fail(err.user_message, status="diverged")
            raise
        except BaseException as err:
            _close_progress_bars(trainer)
            record.fail(getattr(err, "user_message", None) or f"{type(err).__name__}: {err}")
            raise
        finally:
            if record.data["status"] != "completed":
                record.update(best_checkpoint=_best_checkpoint(trainer) or record.data.get("best_checkpoint"),
                              **{"val/acc_best": history.best("val/acc"),
                                 "val/loss_best": history.lowest("val/loss")})
            if history.rows or resume_from is None:  # a resume that failed early keeps the history it found
                record.update(epochs=len(history.rows), history=history.rows)
            record.update(devices=os.environ.get("CUDA_VISIBLE_DEVICES"), torch_threads=torch.get_num_threads())
            for command in finish_wandb(loggers, record.data["status"], checkpoints, results=record.data):
                log.info("W&B run saved offline; upload it with: %s", command)
                record.update(wandb_sync=command)
            record.write()
            if is_global_zero():
                plot_curves(history.rows, run_dir / CURVES_FILE, title=f"{cfg.model.name} on {cfg.data.name}",
                            results=record.data)


def _analyses(cfg: DictConfig, run_dir: Path, classifier: ImageClassifier, datamodule: ImageDataModule,
              checkpoint: str | None, loggers: Sequence[Any] = ()) -> dict[str, Any]:
    """The analyses the config lists (``analysis=[features,...]``, ``cnnlab.analysis``) on the tested network: their
    headline numbers for results.json (and their images for W&B). One that fails is logged and recorded, not fatal:
    the run itself is done, and ``cnnlab analyze`` can run it again."""
    names = list(cfg.get("analysis") or {})
    if not names or not is_global_zero():
        return {}
    from cnnlab.analysis.common import log_to_wandb, run_analyses

    try:
        headline = run_analyses(cfg, run_dir, names, checkpoint=checkpoint, net=classifier.model,
                                datamodule=datamodule)
        log_to_wandb(loggers, run_dir, names, headline)
        return headline
    except Exception as err:  # noqa: BLE001 - reported, and the run's outcome stands
        message = getattr(err, "user_message", None) or f"{type(err).__name__}: {err}"
        log.error("analysis failed (%s); run it again with: cnnlab analyze %s analysis=[%s]", message, run_dir,
                  ",".join(names))
        return {"analysis_error": message}


def _rerun_of(previous: dict[str, Any] | None) -> dict[str, Any]:
    """A resumed run keeps the provenance of the run it continues (``rerun_of``, set by ``cnnlab rerun``)."""
    kept = ((previous or {}).get("provenance") or {}).get("rerun_of")
    return {"rerun_of": kept} if kept else {}


def _epoch_and_step(checkpoint: Path) -> tuple[int, int]:
    state = read_checkpoint(checkpoint, purpose="cnnlab resume")
    return int(state.get("epoch", 0)), int(state.get("global_step", 0))


def _global_step(checkpoint: Path | None) -> int | None:
    return None if checkpoint is None else _epoch_and_step(checkpoint)[1]


# Keys a continued run may differ in from the run it continues: where things are, not what is trained.
_RELOCATABLE = ("group", "data.root", "data.cache_dir", "data.num_workers", "data.download")


def resumable_checkpoint(run_dir: Path, cfg: DictConfig) -> Path | None:
    """The checkpoint from which the unfinished run in ``run_dir`` continues, or None: no run there, it finished,
    it has no checkpoint yet, or it was a run of another config (then it is started over, and the log says why)."""
    results = read_results(run_dir)
    last = run_dir / "checkpoints" / LAST_CHECKPOINT
    if results is None or results.get("status") not in UNFINISHED or not last.is_file():
        return None
    stored = flat_keys(read_checkpoint(last, purpose=f"resuming {run_dir}").get(RUN_CONFIG_KEY) or {})
    wanted = flat_keys(OmegaConf.to_container(cfg, resolve=True))
    # A null in the new config is filled in later (data.num_classes), so it matches what the old run filled in.
    changed = [key for key in sorted(set(stored) | set(wanted)) if not key.startswith(_RELOCATABLE)
               and wanted.get(key) is not None and stored.get(key) != wanted.get(key)]
    if changed:
        log.warning("%s holds an unfinished run of another config (%s differ): starting over.", run_dir,
                    ", ".join(changed[:5]))
        return None
    return last




def evaluate(ckpt_path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Re-test a checkpoint on its run's test split, with the config saved in the checkpoint (plus ``overrides``).

    Writes ``eval-<checkpoint>.json`` beside the run's ``results.json`` and returns the metrics.
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(f"No checkpoint at {path}. Pass ckpt_path=<run_dir>/checkpoints/<file>.ckpt of a finished "
                          f"run.")
    checkpoint = read_checkpoint(path, purpose="cnnlab eval")
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
    tune_for_cpu(trainer, datamodule.loader_workers)
    # The weights only (Lightning's ckpt_path would also restore the training callbacks, which testing lacks).
    classifier.load_state_dict(checkpoint["state_dict"])
    metrics = trainer.test(classifier, datamodule=datamodule, verbose=False)[0]
    result = {"checkpoint": str(path.resolve()), **{k: float(v) for k, v in metrics.items()}}
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    (run_dir / f"eval-{path.stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
