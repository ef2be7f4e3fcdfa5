"""Aggregating a sweep from its trials' ``results.json`` (the run contract is all it reads).

Writes, in the sweep's folder:

- ``summary.csv`` and ``summary.md``: a row per trial with its status (``running``, ``completed``, ``failed``,
  ``diverged``, ``interrupted``, or ``unfinished`` for a trial folder without ``results.json``), its validation
  score and its test metrics; the best trial marked by the validation metric of the ``selection`` setting (see
  ``selection.py``), never by a test metric; mean ± std over ``seed`` when seeds were swept; a table of every
  trial that did not complete, with its error. Written even when no trial completed.
- ``metric_vs_<axis>.png`` for each swept axis of a grid: the validation score (left) and the test error (right)
  against the axis, a line per combination of the other axes; integer axes get integer ticks, learning rates a
  logarithmic axis.
- ``val_curves.png``: each trial's validation loss and accuracy per epoch, the best trial drawn thick.
- for an Optuna search (``sweep=optuna``): Optuna's own views, ``optuna_history.png``, ``optuna_importances.png``
  and ``optuna_slice.png``, instead of per-axis lines (every trial has its own values there).

Imports no torch.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnlab.errors import ConfigError
from cnnlab.record import RESULTS_FILE, STATUSES
from cnnlab.sweeps.selection import Selection, of_sweep

UNFINISHED = "unfinished"  # a trial folder without results.json: launched, then still running or killed
TRIAL_STATUSES = (*STATUSES, UNFINISHED)
REPORTED = ("val/acc_best", "test/acc", "test/acc_top5", "epochs", "train_time_s")
TEST = "test/acc"
NOT_AXES = ("group",)  # set per sweep by the launchers, the same for every trial
LOG_AXES = ("lr", "max_lr", "weight_decay", "eta_min", "min_lr", "l1")  # last part of a key: rates and penalties
MAX_TICKS = 12  # up to this many distinct values, each gets its own labelled tick


class NotASweep(ConfigError):
    """The folder given as a sweep holds no trials."""


@dataclass
class Trial:
    run_dir: Path
    results: dict[str, Any]
    axes: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> str:
        status = self.results.get("status")
        return status if status in TRIAL_STATUSES else UNFINISHED

    @property
    def label(self) -> str:
        return " ".join(f"{k}={_fmt(v)}" for k, v in self.axes.items()) or self.run_dir.name

    @property
    def problem(self) -> str:
        """Why the trial did not complete, in a few words."""
        if self.status == UNFINISHED:
            return "no results.json: still running, or its process was killed before the run started"
        if self.status == "running":
            return "still running, or its process was killed (results.json says running)"
        if self.status == "interrupted":
            by = self.results.get("interrupted_by") or "a signal"
            command = self.results.get("resume_command")
            return f"interrupted by {by}" + (f"; continue it with: {command}" if command else "")
        return " ".join(str(self.results.get("error") or "").split())


@dataclass
class SweepSummary:
    sweep_dir: Path
    trials: list[Trial]
    axes: list[str]
    selection: Selection = field(default_factory=Selection)

    @property
    def completed(self) -> list[Trial]:
        return [t for t in self.trials if t.status == "completed"]

    @property
    def failed(self) -> list[Trial]:
        """Every trial that did not complete (failed, diverged, interrupted, running or unfinished)."""
        return [t for t in self.trials if t.status != "completed"]

    @property
    def exit_status(self) -> int:
        """What a sweep command returns after the summary: 0 only when every trial completed."""
        return 0 if self.trials and not self.failed else 1

    @property
    def outcome(self) -> str:
        """``4 trials: 3 completed, 1 diverged``."""
        order = ("completed", "failed", "diverged", "interrupted", "running", UNFINISHED)
        counts = {s: sum(t.status == s for t in self.trials) for s in order}
        parts = [f"{n} {s}" for s, n in counts.items() if n]
        return f"{len(self.trials)} trial{'s' * (len(self.trials) != 1)}: {', '.join(parts) or 'none'}"

    def score(self, trial: Trial) -> float | None:
        return self.selection.score(trial.results)

    @property
    def best(self) -> Trial | None:
        """The completed trial with the best validation score (the selection metric); None if none has one."""
        best, best_score = None, None
        for trial in self.completed:
            score = self.score(trial)
            if score is not None and (best_score is None or self.selection.better(score, best_score)):
                best, best_score = trial, score
        return best

    @property
    def name(self) -> str:
        """The sweep as titles name it: its folder and the folder above (``2026-11-25/10-41-05_4321``)."""
        return "/".join(self.sweep_dir.resolve().parts[-2:])


def _overrides(results: dict[str, Any]) -> dict[str, str]:
    pairs = (o.lstrip("+~").split("=", 1) for o in results.get("overrides") or [] if "=" in o)
    return {k: v for k, v in pairs if not k.startswith("hydra.")}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _trial_results(run_dir: Path) -> dict[str, Any] | None:
    """A trial folder's results, or a stand-in for a launched trial without them; None for other folders."""
    results_file = run_dir / RESULTS_FILE
    # trial.json: written by the pool and ray launchers when a trial starts and when it ends
    launched = _read_json(run_dir / "trial.json") if (run_dir / "trial.json").is_file() else None
    if results_file.is_file():
        results = _read_json(results_file)
        if results is None:
            return {"status": UNFINISHED, "overrides": (launched or {}).get("overrides", []),
                    "error": f"{results_file} cannot be read"}
        if results.get("status") == "running" and launched and launched.get("status") == "FAILED":
            # the run never wrote its end: its process died (a crash, out of memory), as the launcher saw it
            return {**results, "status": "failed",
                    "error": f"the trial's process died: {launched.get('error') or 'no error recorded'}"}
        return results
    overrides: list[str] | None = None
    if launched is not None:
        overrides = [str(o) for o in launched.get("overrides") or []]
        if launched.get("status") == "FAILED":  # died before the run started (its config, its imports)
            return {"status": "failed", "overrides": overrides, "error": launched.get("error") or "no error recorded"}
    if (run_dir / ".hydra" / "overrides.yaml").is_file():  # written by Hydra when a job starts
        from omegaconf import OmegaConf

        try:
            overrides = [str(o) for o in OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")]
        except Exception:
            overrides = overrides or []
    return None if overrides is None else {"status": UNFINISHED, "overrides": overrides}


def load_sweep(sweep_dir: str | Path, selection: Selection | None = None) -> SweepSummary:
    """The trials of the sweep in ``sweep_dir``. Raises ``NotASweep`` when it holds none."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise NotASweep(f"{sweep_dir} is not a folder. Give cnnlab sweep-summary the folder of one sweep, the one "
                        f"cnnlab train -m printed (outputs/multirun/<date>/<time>_<pid>).")
    trials = []
    folders = (p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    for run_dir in sorted(folders, key=lambda p: (len(p.name), p.name)):
        results = _trial_results(run_dir)
        if results is not None:
            trials.append(Trial(run_dir, results))
    if not trials:
        raise NotASweep(
            f"{sweep_dir} holds no sweep trials: none of its folders has a results.json or a started trial's "
            f".hydra/overrides.yaml, so there is nothing to summarise (and nothing was written there). Give the "
            f"folder of one sweep, the one cnnlab train -m printed (outputs/multirun/<date>/<time>_<pid>); a "
            f"single run's folder is summarised by its own results.json and curves.png.")
    every = [_overrides(t.results) for t in trials]
    keys = list(dict.fromkeys(k for o in every for k in o))  # command-line order
    axes = [k for k in keys if len({o.get(k) for o in every}) > 1 and k not in NOT_AXES]
    for trial, overrides in zip(trials, every):
        trial.axes = {k: overrides.get(k, "") for k in axes}
    return SweepSummary(sweep_dir, trials, axes, selection or of_sweep(sweep_dir))


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _integer(value: Any) -> bool:
    try:
        int(str(value))
        return True
    except ValueError:
        return False


def _fmt(value: Any) -> str:
    """A value as a person reads it: 0.0012 not 0.0012345678901234567, 1e+09 not 1000000000.0, 64 not 64.0."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int) or (isinstance(value, str) and _integer(value)):
        return str(int(value))
    number = _number(value)
    if number is None:
        return str(value)
    if number.is_integer() and abs(number) < 1e6:
        return str(int(number))
    return f"{number:.4g}"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if 1e-3 <= abs(value) < 1e6 or value == 0 else f"{value:.3g}"
    return "" if value is None else str(value)


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def _columns(summary: SweepSummary) -> list[str]:
    """The score column (the selection metric's best value over epochs), then the reported metrics."""
    return [summary.selection.column, *(m for m in REPORTED if m != summary.selection.column)]


def write_tables(summary: SweepSummary) -> None:
    best = summary.best
    metrics = _columns(summary)
    header = ["trial", "best", "status", *summary.axes, *metrics, "run_dir", "error"]

    def values(t: Trial) -> list[Any]:
        return [summary.score(t) if m == summary.selection.column else t.results.get(m) for m in metrics]

    with open(summary.sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for t in summary.trials:
            writer.writerow([t.run_dir.name, "*" if t is best else "", t.status, *t.axes.values(), *values(t),
                             str(t.run_dir), "" if t.status == "completed" else t.problem])
    selection = summary.selection
    lines = [f"# Sweep {summary.name}", "", f"`{summary.sweep_dir.resolve()}`", "", f"{summary.outcome}.", ""]
    if best is not None:
        lines.append(f"**Best by validation, {selection.label}:** trial {best.run_dir.name} ({_md(best.label)}), "
                     f"{selection.column} {_cell(summary.score(best))}; its {TEST} {_cell(best.results.get(TEST))} "
                     f"is reported, not used to choose.")
    elif summary.completed:
        lines.append(f"**No best trial:** no completed trial recorded {selection.metric}.")
    else:
        lines.append("**No trial completed**, so there is no best trial: the errors are below.")
    lines += ["", "| " + " | ".join(header[:-2]) + " |", "|" + "---|" * (len(header) - 2)]
    for t in summary.trials:
        row = [t.run_dir.name, "**best**" if t is best else "", t.status, *(_fmt(v) for v in t.axes.values()),
               *(_cell(v) for v in values(t))]
        lines.append("| " + " | ".join(_md(c) for c in row) + " |")
    seeds = _seed_groups(summary)
    if seeds:
        shown = metrics[:3]
        lines += ["", "## Mean ± std over seeds", "", "| configuration | seeds | " + " | ".join(shown) + " |",
                  "|---|---|" + "---|" * len(shown)]
        for label, trials in seeds.items():
            cells = []
            for metric in shown:
                found = [summary.score(t) if metric == selection.column else t.results.get(metric) for t in trials]
                numbers = [v for v in found if v is not None]
                spread = statistics.stdev(numbers) if len(numbers) > 1 else 0.0
                cells.append(f"{statistics.mean(numbers):.4f} ± {spread:.4f}" if numbers else "")
            lines.append(f"| {_md(label) or 'all'} | {len(trials)} | " + " | ".join(cells) + " |")
    if summary.failed:
        lines += ["", "## Trials that did not complete", "", "| trial | status | swept values | error |",
                  "|---|---|---|---|"]
        for t in summary.failed:
            swept = " ".join(f"{k}={_fmt(v)}" for k, v in t.axes.items())
            lines.append(f"| {t.run_dir.name} | {t.status} | {_md(swept)} | {_md(t.problem)} |")
    (summary.sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")


def _seed_groups(summary: SweepSummary) -> dict[str, list[Trial]]:
    if "seed" not in summary.axes:
        return {}
    groups: dict[str, list[Trial]] = {}
    for trial in summary.completed:
        key = " ".join(f"{k}={_fmt(v)}" for k, v in trial.axes.items() if k != "seed")
        groups.setdefault(key, []).append(trial)
    return groups


# ---------------------------------------------------------------------------------------------------- plots


@dataclass
class AxisScale:
    """How one swept key is drawn along x: its values' positions, ticks and scale."""

    key: str
    values: list[str]  # distinct values, in drawing order
    numeric: bool
    integer: bool
    log_base: int | None  # None: linear

    def position(self, value: str) -> float:
        return _number(value) if self.numeric else float(self.values.index(value))  # type: ignore[return-value]

    def apply(self, ax: Any) -> None:
        from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator

        if self.log_base:
            ax.set_xscale("log", base=self.log_base)
        if not self.numeric:
            ax.set_xticks(range(len(self.values)), [_fmt(v) for v in self.values],
                          rotation=20 if max(len(v) for v in self.values) > 8 else 0)
            ax.set_xlim(-0.5, len(self.values) - 0.5)
            return
        if len(self.values) <= MAX_TICKS:
            ax.xaxis.set_major_locator(FixedLocator([self.position(v) for v in self.values]))
            ax.set_xticklabels([_fmt(v) for v in self.values])
            ax.xaxis.set_minor_locator(NullLocator())
        elif self.integer and not self.log_base:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def axis_scale(key: str, raw: list[str]) -> AxisScale:
    distinct = list(dict.fromkeys(raw))
    numbers = [_number(v) for v in distinct]
    numeric = all(n is not None for n in numbers)
    if not numeric:
        return AxisScale(key, distinct, False, False, None)
    distinct = sorted(distinct, key=_number)  # type: ignore[arg-type]
    low, high = min(numbers), max(numbers)  # type: ignore[type-var]
    integer = all(_integer(v) for v in distinct)
    name = key.rsplit(".", 1)[-1]
    log_base = None
    if low > 0:
        if name in LOG_AXES or high / low >= 100:
            log_base = 10
        elif integer and name.endswith("batch_size") and high / low >= 4:
            log_base = 2  # batch sizes double: equal steps for 32, 64, 128
    return AxisScale(key, distinct, True, integer, log_base)


def _legend_columns(labels: list[str], most: int) -> int:
    """As many legend columns as fit the figure's width (about 190 characters at legend size)."""
    return max(1, min(most, len(labels), 190 // (max((len(t) for t in labels), default=1) + 8)))


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(summary: SweepSummary) -> list[Path]:
    """Every figure this sweep warrants (none when no trial got as far as validating)."""
    written = []
    study = _optuna_study(summary.sweep_dir)
    if study is not None:
        written += _optuna_plots(summary, study)
    else:
        written += [p for axis in summary.axes if axis != "seed" for p in [_metric_vs(summary, axis)] if p]
    curves = _val_curves(summary)
    return [*written, curves] if curves else written


def _metric_vs(summary: SweepSummary, axis: str) -> Path | None:
    """Validation score and test error against ``axis``, a line per combination of the other axes."""
    done = [t for t in summary.completed if summary.score(t) is not None]
    if not done:
        return None
    plt = _pyplot()
    scale = axis_scale(axis, [t.axes[axis] for t in done])
    others = [a for a in summary.axes if a not in (axis, "seed")]
    selection = summary.selection
    panels = [(selection.column, summary.score, f"{selection.column} (validation; {selection.mode} is best)"),
              (TEST, lambda t: None if t.results.get(TEST) is None else 1 - t.results[TEST],
               "test error, 1 - test/acc (reported only)")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharex=True)
    for ax, (_, value, ylabel) in zip(axes, panels):
        lines: dict[str, dict[str, list[float]]] = {}
        for t in done:
            y = value(t)
            if y is not None:
                label = " ".join(f"{k}={_fmt(t.axes[k])}" for k in others) or "trials"
                lines.setdefault(label, {}).setdefault(t.axes[axis], []).append(y)
        for label, points in lines.items():
            xs = [v for v in scale.values if v in points]
            means = [statistics.mean(points[x]) for x in xs]
            errors = [statistics.stdev(points[x]) if len(points[x]) > 1 else 0.0 for x in xs]
            ax.errorbar([scale.position(x) for x in xs], means, yerr=errors, marker="o", capsize=3, label=label)
        best = summary.best
        if ax is axes[0] and best is not None and best.axes.get(axis) in scale.values:
            ax.plot([scale.position(best.axes[axis])], [summary.score(best)], marker="*", markersize=14,
                    color="black", linestyle="none", label="best (validation)", zorder=5)
        scale.apply(ax)
        ax.set_xlabel(axis + (f" (log scale)" if scale.log_base else ""))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    many = len(labels) > 8
    if labels:
        fig.legend(handles, labels, loc="lower center", ncol=_legend_columns(labels, 4), fontsize=8, frameon=False)
    missing = [t for t in summary.trials if t not in done]
    note = ""
    if missing:
        shown_missing = ", ".join(f"{t.run_dir.name} ({t.status})" for t in missing[:6])
        note = f"\nnot shown, did not complete: trial{'s' * (len(missing) > 1)} {shown_missing}" + \
            (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
    fig.suptitle(f"Sweep {summary.name}: {selection.column} and test error against {axis}"
                 f"{' (mean ± std over seeds)' if 'seed' in summary.axes else ''}{note}", fontsize=11)
    rows = math.ceil(len(labels) / _legend_columns(labels, 4)) if labels else 0
    fig.subplots_adjust(left=0.07, right=0.98, top=0.86 if missing else 0.9, wspace=0.25,
                        bottom=min(0.5, 0.15 + 0.05 * rows + (0.05 if scale.values and not scale.numeric else 0)))
    if many:
        fig.set_size_inches(11, 4.6 + 0.25 * rows)
    path = summary.sweep_dir / f"metric_vs_{axis.replace('/', '_')}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _val_curves(summary: SweepSummary) -> Path | None:
    """Validation loss and accuracy per epoch, a line per trial (the best thick, unfinished ones dashed)."""
    with_history = [t for t in summary.trials if any(r.get("val/loss") is not None or r.get("val/acc") is not None
                                                     for r in t.results.get("history") or [])]
    if not with_history:
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    best = summary.best
    crowded = len(with_history) > 12  # too many for a legend: the others in grey, only the best named
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    panels = ((axes[0], "val/loss", "validation loss"), (axes[1], "val/acc", "validation top-1 accuracy"))
    for ax, key, ylabel in panels:
        for t in with_history:
            rows = [r for r in t.results.get("history") or [] if _number(r.get(key)) is not None]
            if not rows:
                continue
            label = t.label + (" (best)" if t is best else "") + ("" if t.status == "completed" else f" [{t.status}]")
            ax.plot([r["epoch"] for r in rows], [r[key] for r in rows], marker=".",
                    linestyle="-" if t.status == "completed" else "--", linewidth=2.8 if t is best else 1.2,
                    color="black" if t is best else ("tab:gray" if crowded else None),
                    alpha=1.0 if t is best or not crowded else 0.45,
                    label=label if t is best or not crowded else "_nolegend_", zorder=3 if t is best else 2)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel + (" (selection metric)" if summary.selection.metric.startswith(key) else ""))
        ax.grid(alpha=0.3)
        _zoom_on_completed(ax, [t for t in with_history if t.status == "completed"], key)
    handles, labels = axes[0].get_legend_handles_labels()
    if labels:
        fig.legend(handles, labels, loc="lower center", ncol=_legend_columns(labels, 3), fontsize=8, frameon=False)
    rows = math.ceil(len(labels) / _legend_columns(labels, 3)) if labels else 0
    fig.suptitle(f"Sweep {summary.name}: validation per epoch, {len(with_history)} trials"
                 f"{' (grey: the others, listed in summary.md)' if crowded else ''}; best by "
                 f"{summary.selection.label}", fontsize=11)
    fig.set_size_inches(11, 4.6 + 0.22 * rows)
    fig.subplots_adjust(left=0.07, right=0.98, top=0.9, wspace=0.25,
                        bottom=min(0.5, 0.13 + 0.25 * rows / (4.6 + 0.22 * rows)))
    path = summary.sweep_dir / "val_curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _zoom_on_completed(ax: Any, completed: list[Trial], key: str) -> None:
    """Fit the y range to the completed trials: a diverged trial's loss of 1e9 would flatten every other line
    (its own line then leaves the plot, and its label says so)."""
    values = [v for t in completed for v in (_number(r.get(key)) for r in t.results.get("history") or [])
              if v is not None]
    if not values:
        return
    low, high = min(values), max(values)
    if key.endswith("acc"):
        low, high = max(low, 0.0), min(high, 1.0)
    pad = (high - low) * 0.08 or 0.05
    low, high = low - pad, high + pad
    ax.set_ylim(low, high)
    for line in ax.get_lines():
        if any(not (low <= y <= high) for y in line.get_ydata() if _number(y) is not None):
            line.set_label(f"{line.get_label()} (off scale)")


# ---------------------------------------------------------------------------------------------------- Optuna


def _optuna_study(sweep_dir: Path) -> Any:
    """The Optuna study of a ``sweep=optuna`` sweep (its ``optuna.db``, or the storage its multirun.yaml names),
    or None for other sweeps."""
    storage, study_name = None, "cnnlab"
    multirun = sweep_dir / "multirun.yaml"
    if multirun.is_file():
        try:
            from omegaconf import OmegaConf

            sweeper = OmegaConf.load(multirun).hydra.sweeper
            if "optuna" not in str(sweeper.get("_target_", "")):
                return None
            storage, study_name = sweeper.get("storage"), sweeper.get("study_name") or study_name
        except Exception:
            pass
    if storage is None:
        if not (sweep_dir / "optuna.db").is_file():
            return None
        storage = f"sqlite:///{sweep_dir / 'optuna.db'}"
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return optuna.load_study(study_name=study_name, storage=storage)
    except Exception:
        return None


def _optuna_plots(summary: SweepSummary, study: Any) -> list[Path]:
    """Optuna's own views of the search: the best value so far, which parameters matter, each parameter's slice."""
    import warnings

    import matplotlib
    import optuna
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        return []
    plt = _pyplot()
    import logging

    from optuna.visualization import matplotlib as views

    # matplotlib logs, at INFO, that categorical parameters' values look like numbers: noise in the sweep's log
    logging.getLogger("matplotlib.category").setLevel(logging.WARNING)

    target = summary.selection.label
    written = []
    figures = [("optuna_history.png", lambda: views.plot_optimization_history(study, target_name=target),
                f"{target} per trial, and the best so far"),
               ("optuna_importances.png", lambda: views.plot_param_importances(study, target_name=target),
                f"how much each parameter explains of {summary.selection.metric} (fANOVA)"),
               ("optuna_slice.png", lambda: views.plot_slice(study, target_name=target),
                f"{target} against each parameter")]
    for name, draw, what in figures:
        if name == "optuna_importances.png" and (len(complete) < 2 or len(complete[0].params) < 1):
            continue
        plt.close("all")
        try:
            # rc_context: Optuna switches matplotlib to its ggplot style for good; keep that to its own figures
            with warnings.catch_warnings(), matplotlib.rc_context():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                axes = draw()
        except Exception:  # too few trials for that view (importances need varied parameters)
            plt.close("all")
            continue
        several = hasattr(axes, "flat")
        first = axes.flat[0] if several else axes
        fig = first.figure
        for ax in (axes.flat if several else [axes]):
            for loc in ("left", "center", "right"):  # Optuna's own titles ("Hyperparameter Importances")
                ax.set_title("", loc=loc)
        fig.suptitle(f"Sweep {summary.name} (Optuna search): {what}", fontsize=10)
        if several:  # the slice plot: Optuna's colour bar took its room from the axes; a relayout would undo that
            fig.set_size_inches(max(fig.get_size_inches()[0], 3.6 * len(axes.flat) + 1.5), 5)
        else:
            fig.set_size_inches(9, 4.8)
            fig.tight_layout(rect=(0, 0, 1, 0.94))
        path = summary.sweep_dir / name
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def summarize_sweep(sweep_dir: str | Path, selection: Selection | None = None) -> SweepSummary:
    """Write the tables and plots of the sweep in ``sweep_dir`` (finished or still running).

    Raises ``NotASweep`` (a ``ConfigError``) and writes nothing when the folder holds no trials.
    """
    summary = load_sweep(sweep_dir, selection)
    write_tables(summary)
    write_plots(summary)
    return summary
