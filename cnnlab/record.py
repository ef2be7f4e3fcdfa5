"""The run contract: what every run leaves in its run dir for people, sweeps and reports to read.

``results.json`` holds the outcome (``status`` "completed" or "failed", metrics as fractions in [0, 1], timing,
provenance); ``curves.png`` plots loss and accuracy per epoch.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

RESULTS_FILE = "results.json"
CURVES_FILE = "curves.png"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class RunRecord:
    """Accumulates a run's outcome and writes it to ``results.json``, whatever happens."""

    def __init__(self, run_dir: Path, overrides: Sequence[str]) -> None:
        self.run_dir = run_dir
        self.data: dict[str, Any] = {
            "status": "running",
            "run_dir": str(run_dir.resolve()),
            "overrides": list(overrides),
            "started_at": _now(),
        }

    def update(self, **fields: Any) -> None:
        self.data.update(fields)

    def complete(self, metrics: dict[str, float]) -> None:
        self.data.update({k: float(v) for k, v in metrics.items()})
        self.data.update(status="completed", error=None)

    def fail(self, message: str) -> None:
        self.data.update(status="failed", error=message)

    def write(self) -> Path:
        self.data["finished_at"] = _now()
        path = self.run_dir / RESULTS_FILE
        path.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        return path


def plot_curves(rows: list[dict[str, float]], path: Path) -> Path | None:
    """Training and validation loss and accuracy against epoch, side by side."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, label in ((axes[0], "loss", "loss"), (axes[1], "acc", "top-1 accuracy")):
        for split, style in (("train", "-o"), ("val", "-s")):
            values = [r.get(f"{split}/{metric}", math.nan) for r in rows]
            if not all(math.isnan(v) for v in values):
                ax.plot(epochs, values, style, label=split, markersize=3)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(path.parent.name)
    # Fixed margins: tight_layout would draw the whole figure once more only to measure it (a third of the time).
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.9, wspace=0.22)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
