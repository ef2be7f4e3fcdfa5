"""Robustness of two (or more) trained networks side by side: the ``adversarial`` analysis of each run, one plot
and one table.

Reads each run folder's ``analysis/adversarial/adversarial.json`` (written by ``cnnlab analyze <run_dir>
analysis=[adversarial]``, or by a run with ``analysis=[adversarial]``) and ``results.json``:

    cnnlab train experiment=lenet5_mnist
    cnnlab train experiment=lenet5_mnist_adversarial
    cnnlab analyze <run_dir> analysis=[adversarial] analysis.adversarial.epsilons=[0,0.05,0.1,0.15,0.2,0.25,0.3]
    python benchmarks/adversarial_robustness.py standard=<run_dir> "adversarially trained=<run_dir>" --out robustness

writes ``robustness.png`` (accuracy against ε: a colour per attack, a line style per network) and
``robustness.md`` (clean, FGSM and PGD accuracy at each ε, a row per network and attack), and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def read(run_dir: Path) -> dict[str, Any]:
    report = run_dir / "analysis" / "adversarial" / "adversarial.json"
    if not report.is_file():
        sys.exit(f"{run_dir} has no {report.relative_to(run_dir)}: run cnnlab analyze {run_dir} "
                 f"analysis=[adversarial] first.")
    return json.loads(report.read_text())


def table(reports: dict[str, dict[str, Any]]) -> str:
    """Markdown: a row per network and attack, a column per ε (ε = 0 is the clean accuracy)."""
    from cnnlab.config.rules import epsilon_key

    epsilons = sorted({row["epsilon"] for report in reports.values() for attack in report["attacks"].values()
                       for row in attack["curve"]})
    header = "| network | attack | " + " | ".join(f"ε = {epsilon_key(e)}" for e in epsilons) + " |"
    lines = [header, "|" + "---|" * (2 + len(epsilons))]
    for network, report in reports.items():
        for attack, result in report["attacks"].items():
            by_epsilon = {row["epsilon"]: row["acc"] for row in result["curve"]}
            name = attack.upper() + (f"-{result['steps']}" if attack == "pgd" else "")
            cells = [f"{by_epsilon[e]:.4f}" if e in by_epsilon else "" for e in epsilons]
            lines.append(f"| {network} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="name=run_dir, one per network")
    parser.add_argument("--out", default="robustness", help="where to write <out>.png and <out>.md")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    from cnnlab.analysis.adversarial import plot_curves

    reports = {}
    for item in args.runs:
        name, _, folder = item.rpartition("=")
        reports[name or Path(folder).name] = read(Path(folder))
    curves = {name: {attack: ([row["epsilon"] for row in result["curve"]], [row["acc"] for row in result["curve"]])
                     for attack, result in report["attacks"].items()} for name, report in reports.items()}
    images = {report["test_images"] for report in reports.values()}
    title = args.title or (f"Test accuracy under attack ({', '.join(f'{n:,}' for n in sorted(images))} test "
                           f"images)\n" + " vs ".join(reports))
    out = Path(args.out)
    plot_curves(out.with_suffix(".png"), curves, title)
    text = table(reports)
    out.with_suffix(".md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
