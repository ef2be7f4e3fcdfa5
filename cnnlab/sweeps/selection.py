"""What "best" means: one validation metric and its direction, the root config's ``selection`` node.

The same setting picks the checkpoint a run keeps as best (``conf/callbacks/default.yaml`` monitors
``${selection.metric}``), the trial a sweep's summary marks best, and what ``sweep=optuna`` optimises
(``conf/sweep/optuna.yaml``). It must be a validation metric: the test split is measured and reported, never used
to choose. Imports neither torch nor Lightning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

MODES = ("min", "max")


@dataclass(frozen=True)
class Selection:
    metric: str = "val/loss"  # a metric every run logs per epoch (val/loss, val/acc) or a results.json key
    mode: str = "min"

    @property
    def label(self) -> str:
        """How the metric reads in tables and plots: ``val/loss (lowest)``."""
        return f"{self.metric} ({'lowest' if self.mode == 'min' else 'highest'})"

    @property
    def column(self) -> str:
        """The summary column of each trial's score: the best value over its epochs, as results.json names it."""
        return self.metric if self.metric.endswith("_best") else f"{self.metric}_best"

    def better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def score(self, results: Any) -> float | None:
        """A trial's score: the best value of the metric over its epochs (what its kept checkpoint scored).

        ``results`` is a run's ``results.json`` (or a task function's return value): a number is its own score;
        in a mapping, ``<metric>_best`` or ``<metric>`` when recorded (``val/acc_best``), else the best value of
        ``<metric>`` over the rows of its ``history``. None when there is none (the run failed before validating).
        """
        if isinstance(results, (int, float)) and not isinstance(results, bool):
            return _finite(results)
        if not isinstance(results, Mapping):
            return None
        for key in (self.column, self.metric):
            value = _finite(results.get(key))
            if value is not None:
                return value
        per_epoch = self.metric[:-len("_best")] if self.metric.endswith("_best") else self.metric
        values = [v for v in (_finite(row.get(per_epoch)) for row in results.get("history") or []
                              if isinstance(row, Mapping)) if v is not None]
        if not values:
            return None
        return min(values) if self.mode == "min" else max(values)


DEFAULT = Selection()


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def from_config(node: Any) -> Selection:
    """The ``selection`` node of a composed config (a DictConfig or a plain mapping); the default when absent."""
    if node is None:
        return DEFAULT
    metric, mode = node.get("metric") or DEFAULT.metric, node.get("mode") or DEFAULT.mode
    return Selection(str(metric), str(mode))


def of_sweep(sweep_dir: Path) -> Selection:
    """The selection a sweep ran with: its ``multirun.yaml`` (written by Hydra when the sweep starts), else the
    first trial's ``.hydra/config.yaml``; the default for sweeps from before the setting existed."""
    candidates = [sweep_dir / "multirun.yaml"]
    candidates += sorted(sweep_dir.glob("*/.hydra/config.yaml"))[:1]
    for path in candidates:
        node = _selection_node(path)
        if node is not None:
            return node
    return DEFAULT


def _selection_node(path: Path) -> Selection | None:
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.load(path)
        node = cfg.get("selection")
        if node is not None:
            return from_config(OmegaConf.to_container(node, resolve=False))
        sweeper = OmegaConf.select(cfg, "hydra.sweeper") or {}
        metric, direction = sweeper.get("metric"), str(sweeper.get("direction") or "")
        if metric and direction[:3] in MODES:  # an Optuna search from before `selection`: what it optimised
            return Selection(str(metric), direction[:3])
        return None
    except Exception:  # unreadable: fall back on the next candidate
        return None
