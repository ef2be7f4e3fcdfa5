"""The run contract: what every run leaves in its run dir for people, sweeps and reports to read.

``results.json`` holds the outcome, metrics as fractions in [0, 1], timing and provenance; ``curves.png`` plots
loss and accuracy per epoch. ``status`` is exactly one of ``STATUSES``:

- ``running``: written when the run starts; a run killed outright (SIGKILL, a lost machine) stays so.
- ``completed``: trained and tested.
- ``failed``: stopped by an error, given in ``error``.
- ``diverged``: the training loss became NaN or exploded (``error`` says when).
- ``interrupted``: stopped by a signal after saving a checkpoint; ``resume_command`` continues it.

``results.json`` is replaced atomically (a temporary file, then a rename), so a reader never sees half of one.
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

RESULTS_FILE = "results.json"
CURVES_FILE = "curves.png"
STATUSES = ("running", "completed", "failed", "diverged", "interrupted")
UNFINISHED = ("running", "interrupted")  # statuses a run dir can be resumed from


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def write_json_atomically(path: Path, data: Any) -> None:
    """Replace ``path`` by ``data`` as JSON in one step: readers see the old file or the new one, never a part."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(data, indent=2, default=str) + "\n")
    partial.replace(path)


def read_results(run_dir: Path) -> dict[str, Any] | None:
    """A run dir's ``results.json``, or None when there is none (or it cannot be read, or holds no JSON object)."""
    try:
        results = json.loads((run_dir / RESULTS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return results if isinstance(results, dict) else None


class RunRecord:
    """Accumulates a run's outcome and writes it to ``results.json``, whatever happens.

    A resumed run continues the record of its first segment: ``segments`` lists each segment's start, end, status
    and training time, and ``train_time_s`` is their sum.
    """

    def __init__(self, run_dir: Path, overrides: Sequence[str], previous: dict[str, Any] | None = None,
                 write: bool = True) -> None:
        self.run_dir = run_dir
        self.writes = write  # False in the other processes of a distributed run: one record, by rank 0
        self.data: dict[str, Any] = dict(previous) if previous else {
            "status": "running",
            "run_dir": str(run_dir.resolve()),
            "overrides": list(overrides),
            "started_at": _now(),
        }
        self.segments: list[dict[str, Any]] = [dict(s) for s in self.data.get("segments", [])]
        for segment in self.segments:
            segment.setdefault("status", "interrupted")  # it never closed: the process was killed
        self.segment: dict[str, Any] = {"started_at": _now(), "train_time_s": 0.0}
        self.data.update(status="running", error=None)
        for stale in ("interrupted_by", "resume_command", "finished_at"):
            self.data.pop(stale, None)

    def update(self, **fields: Any) -> None:
        self.data.update(fields)

    def add_train_time(self, seconds: float) -> None:
        self.segment["train_time_s"] = round(seconds, 3)

    def complete(self, metrics: dict[str, float]) -> None:
        self.data.update({k: float(v) for k, v in metrics.items()})
        self.data.update(status="completed", error=None)

    def fail(self, message: str, status: str = "failed") -> None:
        assert status in STATUSES
        self.data.update(status=status, error=message)

    def interrupt(self, signal_name: str, resume_command: str) -> None:
        self.data.update(status="interrupted", error=None, interrupted_by=signal_name, resume_command=resume_command)

    def write(self, final: bool = True) -> Path:
        """Write ``results.json``; ``final`` closes the current segment (the run stopped, for good or not)."""
        if final:
            self.segment.update(finished_at=_now(), status=self.data["status"])
            self.data["finished_at"] = self.segment["finished_at"]
        segments = [*self.segments, self.segment]
        self.data["segments"] = segments
        self.data["train_time_s"] = round(sum(s.get("train_time_s", 0.0) for s in segments), 3)
        path = self.run_dir / RESULTS_FILE
        if self.writes:
            write_json_atomically(path, self.data)
        return path


def plot_curves(rows: list[dict[str, float]], path: Path, title: str | None = None,
                results: dict[str, Any] | None = None) -> Path | None:
    """Training and validation loss and accuracy against epoch, side by side.

    ``title`` names what was trained (``"lenet5_bn on digits"``); with the run's ``results`` the title adds its
    test accuracy (or its status, when it did not complete) and a dotted line marks the epoch of the tested
    (best) checkpoint.
    """
    if not rows:
        return None
    import re

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    results = results or {}
    epochs = [r["epoch"] for r in rows]
    best = re.search(r"epoch(\d+)", Path(str(results.get("best_checkpoint") or "")).name)
    tested = int(best.group(1)) + 1 if best else None  # Lightning counts epochs from 0 in the file name
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, label in ((axes[0], "loss", "loss"), (axes[1], "acc", "top-1 accuracy")):
        for split, style in (("train", "-o"), ("val", "-s")):
            values = [r.get(f"{split}/{metric}", math.nan) for r in rows]
            if not all(math.isnan(v) for v in values):
                ax.plot(epochs, values, style, label=split, markersize=3)
        if tested is not None and tested in epochs:
            ax.axvline(tested, color="grey", linestyle=":", label=f"tested checkpoint (epoch {tested})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[1]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, f"no {label} recorded", transform=ax.transAxes, ha="center", color="grey")
    finite = [v for r in rows for k in ("train/loss", "val/loss") for v in [r.get(k)] if v is not None
              and math.isfinite(v) and v > 0]
    if finite and max(finite) / min(finite) >= 1000:  # an exploding loss: keep the early epochs readable
        axes[0].set_yscale("log")
    status = results.get("status")
    if results.get("test/acc") is not None:
        outcome = f"test/acc {results['test/acc']:.4f}"
        if results.get("test/acc_top5") is not None:
            outcome += f", top-5 {results['test/acc_top5']:.4f}"
    else:
        outcome = f"{status}, not tested" if status and status != "completed" else "not tested"
    name = path.parent.name
    fig.suptitle(f"{title}: {outcome}  ({name})" if title else f"{name}: {outcome}" if results else name)
    # Fixed margins: tight_layout would draw the whole figure once more only to measure it (a third of the time).
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.9, wspace=0.22)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
