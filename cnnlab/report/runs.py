"""The runs behind each row of the report: found through their ``results.json`` (the run contract), tied to a recipe,
and counted only when they ran what the recipe says today.

Which recipe a run used: ``results.json``'s provenance (``provenance.recipe.name``), else Hydra's record of the
job's choices (``.hydra/hydra.yaml``: ``runtime.choices.experiment``), else an ``experiment=`` override.

Whether it counts for a row: its saved config (``.hydra/config.yaml``) is compared key by key with the config
the row's recipe composes to now (with the row's overrides, such as ``model.depth=56``, and the report's own
overrides). Keys that do not change what is measured are not compared (``SAME_EXPERIMENT``: the seed, where the
data lies, loggers, callbacks, devices, precision, ...); neither are keys only one side has (options added to
cnnlab after the run). Any other difference — an override such as ``trainer.max_epochs=1``, or a recipe edited
since the run — keeps the run out of the row's figures: the report lists it under "runs not counted" with the
keys that differ. This compares what ran, not how it was typed, so ``model.depth=20`` on the command line of a
20-layer recipe, or a ``cnnlab rerun`` of a recipe's run, still counts.

Per row and seed the newest completed run counts (a seed run twice is one measurement, not two); failed, diverged
and unfinished runs are reported for the seeds that have no completed run. Imports no torch.
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import yaml
from omegaconf import DictConfig

from cnnlab.config.flat_keys import flat_keys
from cnnlab.errors import ConfigError
from cnnlab.record import RESULTS_FILE, read_results
from cnnlab.report.papers import Row

# Keys (and key prefixes) whose value does not change what a run measures.
SAME_EXPERIMENT = (
    "seed", "data.root", "data.download", "data.num_workers", "data.cache_dir", "data.pipeline",
    "data.eval_batch_size", "model.channels_last", "model.compile", "trainer.accelerator", "trainer.precision",
    "trainer.deterministic", "trainer.benchmark", "trainer.log_every_n_steps", "trainer.enable_model_summary",
    "trainer.enable_progress_bar", "trainer.profiler", "training.checkpoint_every_n_steps",
    "training.checkpoint_every_n_minutes", "training.divergence_factor", "logger", "callbacks", "tags", "group",
    "project", "analysis", "hydra", "launcher",
)
SKIPPED_FOLDERS = {"checkpoints", "analysis", "wandb", ".hydra", "lightning_logs", ".submitit", "__pycache__"}


def same_experiment(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in SAME_EXPERIMENT)


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


@dataclass
class FoundRun:
    run_dir: Path
    results: dict[str, Any]
    recipe: str | None

    @property
    def status(self) -> str:
        return str(self.results.get("status") or "unfinished")

    @property
    def finished_at(self) -> str:
        return str(self.results.get("finished_at") or self.results.get("started_at") or "")

    @property
    def error(self) -> str:
        return " ".join(str(self.results.get("error") or "").split())

    def config(self) -> dict[str, Any] | None:
        return _saved_config(self.run_dir)

    @property
    def seed(self) -> int | None:
        config = self.config() or {}
        seed = config.get("seed")
        return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def run_folders(folders: Iterable[Path]) -> Iterator[Path]:
    """Every folder under ``folders`` that holds a ``results.json``; a run folder's own subfolders are not searched."""
    for top in folders:
        for current, subfolders, files in os.walk(top):
            if RESULTS_FILE in files:
                subfolders[:] = []
                yield Path(current)
            else:
                subfolders[:] = sorted(s for s in subfolders if s not in SKIPPED_FOLDERS)


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, ten times faster, when PyYAML has it


@lru_cache(maxsize=4096)
def _saved_config(run_dir: Path) -> dict[str, Any] | None:
    try:
        config = yaml.load((run_dir / ".hydra" / "config.yaml").read_text(), Loader=_YAML_LOADER)
    except (OSError, yaml.YAMLError):
        return None
    return flat_keys(config) if isinstance(config, dict) else None


def recipe_of(run_dir: Path, results: dict[str, Any]) -> str | None:
    """The recipe (``experiment=...``) a run used, or None."""
    recipe = ((results.get("provenance") or {}).get("recipe") or {}).get("name")
    if recipe:
        return str(recipe)
    try:
        hydra = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())
        recipe = hydra["hydra"]["runtime"]["choices"].get("experiment")
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        recipe = None
    if recipe:
        return str(recipe)
    for override in results.get("overrides") or []:
        if override_key(str(override)) == "experiment":
            return str(override).split("=", 1)[1]
    return None


def find_runs(folders: Sequence[Path]) -> list[FoundRun]:
    runs = []
    for run_dir in run_folders(folders):
        results = read_results(run_dir)
        if results is not None:
            runs.append(FoundRun(run_dir, results, recipe_of(run_dir, results)))
    return runs


@lru_cache(maxsize=256)
def composed(overrides: tuple[str, ...]) -> DictConfig:
    """The config ``cnnlab train <overrides>`` runs now (composed once per report: Hydra takes a good part of a
    second each time). Raises ``ConfigError`` for a recipe that does not exist (any more)."""
    from cnnlab.config import compose_config

    return compose_config(list(overrides))


@lru_cache(maxsize=256)
def recipe_config(overrides: tuple[str, ...]) -> dict[str, Any]:
    """``composed(overrides)`` as flat keys, interpolations unresolved, as Hydra saves them in ``.hydra/config.yaml``."""
    from omegaconf import OmegaConf

    return flat_keys(OmegaConf.to_container(composed(overrides), resolve=False))


def differences(saved: dict[str, Any], recipe: dict[str, Any]) -> list[str]:
    """``key: run's value (recipe: value)`` for each key that changes the experiment and differs."""
    return [f"{key}: {saved[key]!r} (recipe: {recipe[key]!r})" for key in recipe
            if key in saved and not same_experiment(key) and saved[key] != recipe[key]]


@dataclass
class RowRuns:
    """The runs of one row: those counted (one per seed), and those that are not and why."""

    row: Row
    counted: list[FoundRun] = field(default_factory=list)
    failed: list[FoundRun] = field(default_factory=list)  # failed or diverged, for seeds without a completed run
    unfinished: list[FoundRun] = field(default_factory=list)  # running, interrupted, or killed
    not_counted: list[tuple[FoundRun, list[str]]] = field(default_factory=list)  # other settings: the differences
    recipe_error: str | None = None  # the recipe cannot be composed (missing, broken)

    def values(self, metric: str) -> list[float]:
        out = []
        for run in self.counted:
            value = run.results.get(metric)
            if isinstance(value, (int, float)) and math.isfinite(value):
                out.append(float(value))
        return out

    def seeds_done(self) -> set[int]:
        return {r.seed for r in self.counted if r.seed is not None}

    def missing_seeds(self, wanted: int) -> list[int]:
        """The seeds to run so that ``wanted`` seeds are done: the smallest ones not done yet."""
        done = self.seeds_done()
        need = max(0, wanted - len(self.counted))
        return [s for s in range(wanted + len(done)) if s not in done][:need]


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for one value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def assign(runs: Sequence[FoundRun], rows: Sequence[Row], overrides: Sequence[str] = ()) -> dict[str, RowRuns]:
    """The runs of each row (keyed by ``Row.key``); ``overrides``: the report's own (``trainer.max_epochs=1``),
    which every counted run must have run with too.

    A run goes to the row of its recipe whose config it ran (ResNet-56's run to the ResNet-56 row); a run that
    ran none of them is listed, with its differences, under the row it is closest to.
    """
    changing = tuple(o for o in overrides if not same_experiment(override_key(o)))
    out = {row.key: RowRuns(row) for row in rows}
    targets: dict[str, dict[str, Any]] = {}
    for row in rows:
        try:
            targets[row.key] = recipe_config((f"experiment={row.recipe}", *row.overrides, *changing))
        except ConfigError as err:
            out[row.key].recipe_error = err.user_message
    placed: dict[str, list[FoundRun]] = {row.key: [] for row in rows}
    for run in runs:
        candidates = [row for row in rows if row.recipe == run.recipe and row.key in targets]
        if not candidates:
            continue
        saved = run.config()
        if saved is None:
            out[candidates[0].key].not_counted.append((run, ["no readable .hydra/config.yaml"]))
            continue
        differ = {row.key: differences(saved, targets[row.key]) for row in candidates}
        closest = min(candidates, key=lambda row: len(differ[row.key]))
        if differ[closest.key]:
            out[closest.key].not_counted.append((run, differ[closest.key]))
        else:
            placed[closest.key].append(run)
    for key, found in out.items():
        seeds_seen: set[int] = set()
        for run in sorted(placed[key], key=lambda r: r.finished_at, reverse=True):
            if run.status == "completed":
                if run.seed is None or run.seed not in seeds_seen:
                    found.counted.append(run)
                    if run.seed is not None:
                        seeds_seen.add(run.seed)
            elif run.status in ("failed", "diverged"):
                found.failed.append(run)
            else:
                found.unfinished.append(run)
        # A failed or unfinished run whose seed later completed is history, not news.
        found.failed = [r for r in found.failed if r.seed is None or r.seed not in seeds_seen]
        found.unfinished = [r for r in found.unfinished if r.seed is None or r.seed not in seeds_seen]
        found.counted.sort(key=lambda r: (r.seed is None, r.seed or 0))
    return out
