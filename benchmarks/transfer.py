"""The transfer experiment's table and plot: test accuracy against labels per class, one line per strategy.

Reads the trials of a sweep of ``experiment=transfer_finetune`` (their ``results.json`` only, the run contract):

    cnnlab train -m experiment=transfer_finetune model.weights=RUN,null model.freeze=[],conv,lower_conv \
        data.train_per_class=5,10,20,50
    python benchmarks/transfer.py outputs/multirun/<date>/<time>_<pid>

and writes ``transfer.md`` (the table), ``transfer.csv`` and ``transfer.png`` into the sweep folder. The strategies:
from scratch (no weights, nothing frozen), full fine-tuning, frozen conv layers (train the fully connected layers),
frozen lower conv layers, and the feature-extraction route (the pre-trained network's penultimate features, no
fine-tuning, classified by a linear SVM, 1-NN and DINO's weighted k-NN fitted on the same few labels: the
``features`` analysis with ``network=pretrained``). Random frozen conv layers (no weights, ``freeze=conv``) are kept
as a baseline (in the table, not in the plot).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

STRATEGIES = {  # (pre-trained?, freeze) -> name
    (False, ""): "from scratch",
    (True, ""): "full fine-tuning",
    (True, "conv"): "frozen conv layers (train FC)",
    (True, "lower_conv"): "frozen lower conv layers",
    (False, "conv"): "random frozen conv layers (baseline)",
    (False, "lower_conv"): "random frozen lower conv (baseline)",
}
FEATURE_ROUTES = {"linear_svm": "pre-trained features + linear SVM", "knn": "pre-trained features + 1-NN",
                  "dino_knn": "pre-trained features + weighted k-NN (DINO)"}


def _override(overrides: list[str], key: str) -> str | None:
    found = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == key]
    return found[-1] if found else None


def collect(sweep_dir: Path) -> dict[str, dict[int, float]]:
    """``{strategy: {labels per class: test top-1}}`` from the completed trials under ``sweep_dir``."""
    table: dict[str, dict[int, float]] = defaultdict(dict)
    for path in sorted(sweep_dir.glob("*/results.json")):
        results: dict[str, Any] = json.loads(path.read_text())
        if results.get("status") != "completed":
            continue
        overrides = results.get("overrides", [])
        weights = _override(overrides, "model.weights")
        pretrained = weights not in (None, "null", "")
        freeze = (_override(overrides, "model.freeze") or "").strip("[]")
        per_class = int(_override(overrides, "data.train_per_class") or 10)
        name = STRATEGIES.get((pretrained, freeze))
        if name is not None and "test/acc" in results:
            table[name][per_class] = results["test/acc"]
        if pretrained and freeze == "":
            for key, route in FEATURE_ROUTES.items():
                value = results.get(f"analysis/features/{key}_acc")
                if value is not None:
                    table[route][per_class] = value
    return table


def write(table: dict[str, dict[int, float]], sweep_dir: Path) -> Path:
    budgets = sorted({b for row in table.values() for b in row})
    order = [*STRATEGIES.values(), *FEATURE_ROUTES.values()]
    names = [n for n in order if n in table]
    with (sweep_dir / "transfer.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["strategy", *budgets])
        for name in names:
            writer.writerow([name, *(table[name].get(b, "") for b in budgets)])
    lines = ["| strategy | " + " | ".join(f"{b} labels/class" for b in budgets) + " |",
             "|---|" + "---:|" * len(budgets)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(f"{table[name][b]:.4f}" if b in table[name] else ""
                                                for b in budgets) + " |")
    (sweep_dir / "transfer.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name in names:
        if "baseline" in name:  # in the table; far below the others, they would squash the plot
            continue
        points = sorted(table[name].items())
        dashed = name.startswith("pre-trained features")
        ax.plot([p for p, _ in points], [a for _, a in points], "--" if dashed else "-", marker="o", markersize=4,
                label=name)
    ax.set_xscale("log")
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.minorticks_off()
    ax.set_xlabel("labelled training images per class (digits, 28x28)")
    ax.set_ylabel("test top-1 accuracy (360 images)")
    ax.set_title("LeNet-5 pre-trained on MNIST, transferred to scikit-learn's digits", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(sweep_dir / "transfer.png", dpi=100)
    plt.close(fig)
    return sweep_dir / "transfer.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="the folder of a sweep of experiment=transfer_finetune")
    args = parser.parse_args(argv)
    table = collect(args.sweep_dir)
    if not table:
        print(f"{args.sweep_dir}: no completed trial of experiment=transfer_finetune", file=sys.stderr)
        return 1
    print(write(table, args.sweep_dir).read_text(), end="")
    print(args.sweep_dir / "transfer.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
