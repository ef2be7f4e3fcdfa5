"""Aggregating a sweep from its trials' ``results.json`` (the run contract is all it reads).

Writes ``summary.csv`` and ``summary.md`` (a row per trial, the best marked; mean ± std over seeds when seeds
were swept), ``metric_vs_<axis>.png`` (test error against each swept axis, a line per combination of the
other axes) and ``val_curves.png`` (every trial's validation accuracy per epoch). Imports no torch.
"""

from __future__ import annotations

import csv
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnlab.record import RESULTS_FILE

METRICS = ("test/acc", "test/acc_top5", "val/acc_best", "epochs", "train_time_s")
TARGET = "test/acc"
NOT_AXES = ("group",)  # set per sweep by the launchers, the same for every trial


@dataclass
class Trial:
    run_dir: Path
    results: dict[str, Any]
    axes: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return self.results.get("status", "unfinished")

    @property
    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.axes.items()) or self.run_dir.name


@dataclass
class SweepSummary:
    sweep_dir: Path
    trials: list[Trial]
    axes: list[str]

    @property
    def failed(self) -> list[Trial]:
        return [t for t in self.trials if t.status != "completed"]

    @property
    def best(self) -> Trial | None:
        done = [t for t in self.trials if t.status == "completed" and t.results.get(TARGET) is not None]
        return max(done, key=lambda t: t.results[TARGET]) if done else None


def _overrides(results: dict[str, Any]) -> dict[str, str]:
    pairs = (o.lstrip("+~").split("=", 1) for o in results.get("overrides", []) if "=" in o)
    return {k: v for k, v in pairs if not k.startswith("hydra.")}


def load_sweep(sweep_dir: Path) -> SweepSummary:
    trials = []
    for run_dir in sorted((p for p in sweep_dir.iterdir() if p.is_dir()), key=lambda p: (len(p.name), p.name)):
        results_file = run_dir / RESULTS_FILE
        if results_file.is_file():
            results = json.loads(results_file.read_text())
        elif (run_dir / "trial.json").is_file():  # launched, not finished (still running, or killed)
            results = {"status": "unfinished", "overrides": json.loads((run_dir / "trial.json").read_text())["overrides"]}
        else:
            continue
        trials.append(Trial(run_dir, results))
    every = [_overrides(t.results) for t in trials]
    keys = sorted({k for o in every for k in o})
    axes = [k for k in keys if len({o.get(k) for o in every}) > 1 and k not in NOT_AXES]
    for trial, overrides in zip(trials, every):
        trial.axes = {k: overrides.get(k, "") for k in axes}
    return SweepSummary(sweep_dir, trials, axes)


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def write_tables(summary: SweepSummary) -> None:
    best = summary.best
    header = ["trial", "best", "status", *summary.axes, *METRICS, "run_dir", "error"]
    rows = [[t.run_dir.name, "*" if t is best else "", t.status, *t.axes.values(),
             *[t.results.get(m) for m in METRICS], str(t.run_dir), t.results.get("error") or ""]
            for t in summary.trials]
    with open(summary.sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    lines = [f"# Sweep {summary.sweep_dir}", "",
             f"{len(summary.trials)} trials: {len(summary.trials) - len(summary.failed)} completed, "
             f"{len(summary.failed)} failed or unfinished. Best ({TARGET}): "
             f"{best.label + ' — ' + _cell(best.results[TARGET]) if best else 'none'}.", "",
             "| " + " | ".join(header[:-2]) + " |", "|" + "---|" * (len(header) - 2)]
    lines += ["| " + " | ".join(_cell(c) for c in row[:-2]) + " |" for row in rows]
    seeds = _seed_groups(summary)
    if seeds:
        lines += ["", "## Mean ± std over seeds", "", "| configuration | seeds | " + " | ".join(METRICS[:3]) + " |",
                  "|---|---|" + "---|" * 3]
        for label, trials in seeds.items():
            cells = []
            for metric in METRICS[:3]:
                values = [t.results[metric] for t in trials if t.results.get(metric) is not None]
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                cells.append(f"{statistics.mean(values):.4f} ± {spread:.4f}" if values else "")
            lines.append(f"| {label or 'all'} | {len(trials)} | " + " | ".join(cells) + " |")
    failed = [t for t in summary.failed if t.results.get("error")]
    if failed:
        lines += ["", "## Failures", ""] + [f"- {t.run_dir.name} ({t.label}): {t.results['error']}" for t in failed]
    (summary.sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")


def _seed_groups(summary: SweepSummary) -> dict[str, list[Trial]]:
    if "seed" not in summary.axes:
        return {}
    groups: dict[str, list[Trial]] = {}
    for trial in summary.trials:
        if trial.status == "completed":
            key = " ".join(f"{k}={v}" for k, v in trial.axes.items() if k != "seed")
            groups.setdefault(key, []).append(trial)
    return groups


def write_plots(summary: SweepSummary) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    done = [t for t in summary.trials if t.status == "completed" and t.results.get(TARGET) is not None]
    for axis in (a for a in summary.axes if a != "seed"):
        others = [a for a in summary.axes if a not in (axis, "seed")]
        lines: dict[str, dict[str, list[float]]] = {}
        for t in done:
            label = " ".join(f"{k}={t.axes[k]}" for k in others) or "trials"
            lines.setdefault(label, {}).setdefault(t.axes[axis], []).append(1 - t.results[TARGET])
        fig, ax = plt.subplots(figsize=(6, 4))
        numeric = all(_number(v) is not None for points in lines.values() for v in points)
        for label, points in lines.items():
            xs = sorted(points, key=lambda v: _number(v) if numeric else v)
            means = [statistics.mean(points[x]) for x in xs]
            errors = [statistics.stdev(points[x]) if len(points[x]) > 1 else 0 for x in xs]
            ax.errorbar([_number(x) if numeric else x for x in xs], means, yerr=errors, marker="o", capsize=3,
                        label=label)
        if numeric and all((_number(x) or 0) > 0 for points in lines.values() for x in points):
            values = sorted({_number(x) for points in lines.values() for x in points})
            if values[-1] / values[0] >= 100:
                ax.set_xscale("log")
        ax.set_xlabel(axis)
        ax.set_ylabel("test error (1 - top-1)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = summary.sweep_dir / f"metric_vs_{axis.replace('/', '_')}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    fig, ax = plt.subplots(figsize=(7, 4))
    for t in summary.trials:
        history = [r for r in t.results.get("history", []) if r.get("val/acc") is not None]
        if history:
            ax.plot([r["epoch"] for r in history], [r["val/acc"] for r in history], marker=".",
                    linestyle="--" if t.status != "completed" else "-", label=t.label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation top-1 accuracy")
    ax.grid(alpha=0.3)
    if len(summary.trials) <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = summary.sweep_dir / "val_curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [*written, path]


def summarize_sweep(sweep_dir: str | Path) -> SweepSummary:
    """Write the tables and plots of the sweep in ``sweep_dir`` (finished or still running)."""
    summary = load_sweep(Path(sweep_dir))
    write_tables(summary)
    write_plots(summary)
    return summary
