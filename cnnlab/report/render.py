"""The report as Markdown (what the terminal shows and ``report.md`` holds), ``runs.csv`` (every run read, and
whether it counted) and ``report.png`` (a panel per paper: the paper's figure against cnnlab's, seed by seed)."""

from __future__ import annotations

import csv
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from cnnlab.report.counts import Counts, matches_published
from cnnlab.report.papers import Paper
from cnnlab.report.verdicts import MARKS, MEASURED, NO_DATA, NOT_RUN, ClaimCheck, Outcome


@dataclass
class PaperReport:
    paper: Paper
    counts: dict[str, Counts | str]  # network name -> its counts, or why they could not be counted
    outcomes: list[Outcome]
    claims: list[ClaimCheck]
    commands: dict[str, str] = field(default_factory=dict)  # row key -> the command that produces it


# --- Markdown ----------------------------------------------------------------------------------------------------

def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> list[str]:
    """A Markdown table padded to align in a terminal too; ``right``: the columns aligned right (numbers)."""
    cells = [[c.replace("|", "\\|") for c in line] for line in [list(header), *map(list, rows)]]
    widths = [max(_width(line[i]) for line in cells) for i in range(len(header))]

    def line(values: Sequence[str]) -> str:
        padded = [(" " * (w - _width(v)) + v) if i in right else (v + " " * (w - _width(v)))
                  for i, (v, w) in enumerate(zip(values, widths))]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in right else "-" * (w + 2) for i, w in enumerate(widths)) + "|"
    return [line(cells[0]), rule, *(line(c) for c in cells[1:])]


def _count_cell(value: int | None, published: str) -> str:
    if value is None:
        return "n/a"
    exact = f"{value:,}"
    scale = published.strip()[-1:].upper()
    shown = (f"{value / 1e6:.{len(published.split('.')[-1]) - 1 if '.' in published else 0}f}M ({exact})"
             if scale == "M" else exact)
    return f"{shown} {'✓' if matches_published(value, published) else '✗'}"


def _architecture(report: PaperReport) -> list[str]:
    labels = list(dict.fromkeys(c.label for n in report.paper.networks for c in n.counts))
    header = ["network"] + [f"{label}: {who}" for label in labels for who in ("paper", "cnnlab")]
    rows = []
    for network in report.paper.networks:
        counted = report.counts.get(network.name)
        by_label = {c.label: c for c in network.counts}
        line = [network.name]
        for label in labels:
            published = by_label.get(label)
            if published is None:
                line += ["", ""]
            elif isinstance(counted, Counts):
                line += [published.published, _count_cell(counted.get(published.measure), published.published)]
            else:
                line += [published.published, "not counted"]
        rows.append(line)
    problems = [f"- {name}: {why}" for name, why in report.counts.items() if isinstance(why, str)]
    return table(header, rows, right=range(1, len(header))) + ([""] + problems if problems else [])


def _figure_cell(outcome: Outcome, index: int) -> str:
    figure = next((f for f in outcome.figures if f.metric == outcome.paper.metrics[index]), None)
    if figure is None:
        return "—" if outcome.state == MEASURED else outcome.state
    d = outcome.paper.decimals
    spread = f" ± {100 * figure.std:.{d}f}" if figure.std is not None else ""
    return f"{outcome.shown(figure.mean):.{d}f}{spread} (n={figure.n})"


def _notes(outcome: Outcome) -> str:
    runs, notes = outcome.runs, []
    wanted = outcome.row.seeds
    if outcome.state == MEASURED and len(runs.counted) < wanted:
        notes.append(f"{len(runs.counted)} of {wanted} seeds")
    if runs.failed:
        notes.append(f"{len(runs.failed)} failed")
    if runs.unfinished:
        notes.append(f"{len(runs.unfinished)} unfinished")
    if runs.not_counted:
        # the commonest difference, so the table says why (runs.csv lists every run's)
        reasons = Counter(differences[0] for _, differences in runs.not_counted if differences)
        why = f" ({reasons.most_common(1)[0][0]}{', …' if len(reasons) > 1 else ''})" if reasons else ""
        notes.append(f"{len(runs.not_counted)} with other settings, not counted{why}")
    return ", ".join(notes)


def _results(report: PaperReport) -> list[str]:
    paper = report.paper
    header = ["network", "variant", f"paper {paper.unit}",
              *(f"cnnlab: {m.label}" for m in paper.metrics), "cnnlab − paper", "verdict", "notes"]
    rows = []
    for o in report.outcomes:
        difference = o.difference
        rows.append([
            o.row.network, o.row.training, "—" if o.row.paper is None else f"{o.row.paper:.{paper.decimals}f}",
            *(_figure_cell(o, i) for i in range(len(paper.metrics))),
            "" if difference is None else f"{difference:+.{paper.decimals}f}",
            MARKS.get(o.verdict or "", "n/a (no paper figure)" if o.state == MEASURED else ""), _notes(o)])
    return table(header, rows, right=range(2, 3 + len(paper.metrics) + 1))


def _claims(report: PaperReport) -> list[str]:
    lines = []
    for check in report.claims:
        mark = {True: "✓ holds", False: "✗ does not hold", None: "not checked yet"}[check.holds]
        lines.append(f"- {check.claim.text}: {mark} ({check.detail})")
    return lines


def _to_do(report: PaperReport) -> list[str]:
    """What is missing and how to get it; rows that one command produces (a depth sweep) share a line."""
    entries: dict[tuple[str, str], list[Outcome]] = {}
    failures = []
    for o in report.outcomes:
        command = report.commands.get(o.row.key, "")
        if o.state == NOT_RUN:
            entries.setdefault((f"not run yet: `{command}`", o.row.training), []).append(o)
        elif o.state == NO_DATA:
            entries.setdefault((f"data not available here ({o.detail}); on a machine that has it: `{command}`",
                                o.row.training), []).append(o)
        elif o.state != MEASURED and not o.runs.failed:  # failed runs: listed one by one below
            entries.setdefault((f"{o.state}: {o.detail}", o.row.training), []).append(o)
        failures += [f"- {o.row.network} ({o.row.training}): {run.status} run {run.run_dir}: {run.error}"
                     for run in o.runs.failed]
    lines = [f"- {', '.join(o.row.network for o in rows)} ({training}): {what}"
             for (what, training), rows in entries.items()]
    return lines + failures


def markdown(reports: Sequence[PaperReport], preamble: Sequence[str]) -> str:
    lines = ["# The lectures' papers, reproduced", "", *preamble]
    for report in reports:
        paper = report.paper
        lines += ["", f"## {paper.title}", "", f"*{paper.reference}*", "",
                  "Architecture, counted live from cnnlab's networks (✓: equal to the paper's figure as printed):", "",
                  *_architecture(report), "",
                  f"Test {paper.unit}: the paper's figure and cnnlab's, mean ± std over n seeds:", "",
                  *_results(report)]
        if report.claims:
            lines += ["", "The paper's claims, on cnnlab's means:", "", *_claims(report)]
        to_do = _to_do(report)
        if to_do:
            lines += ["", "Rows without a figure, and runs that failed:", "", *to_do]
        lines += ["", f"*Note.* {paper.footnote}"]
    lines += ["", "*Verdicts.* ✓ matches: cnnlab's mean, rounded as the paper prints its figure, is at least as good "
                  "as the paper's. ≈ within noise: short of it by at most 2 standard errors of the difference (the spread "
                  "over seeds, std/√n, combined with the sampling error of cnnlab's and the paper's test sets, "
                  "√(a(1−a)/N) for accuracy a on N test images). ✗ below: short by more. A run counts for a row only if its saved config is the recipe's "
                  "(up to the seed, the data's folder, loggers, devices and precision); others are listed in "
                  "runs.csv as not counted, with the keys that differ."]
    return "\n".join(lines) + "\n"


def write_runs_csv(reports: Sequence[PaperReport], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["paper", "row", "run_dir", "seed", "status", "counted", "test/acc", "test_full/acc", "why not"])
        for report in reports:
            for o in report.outcomes:
                runs = o.runs
                listed: list[tuple[Any, bool, str]] = [(r, True, "") for r in runs.counted]
                listed += [(r, False, r.error) for r in runs.failed + runs.unfinished]
                listed += [(r, False, "; ".join(d[:3])) for r, d in runs.not_counted]
                for run, counted, why in listed:
                    writer.writerow([report.paper.key, o.row.key, run.run_dir, run.seed, run.status, counted,
                                     run.results.get("test/acc"), run.results.get("test_full/acc"), why])


# --- the figure ---------------------------------------------------------------------------------------------------

PAPER_COLOUR, TRAINING_COLOURS = "0.55", ("tab:blue", "tab:orange", "tab:green")


def figure(reports: Sequence[PaperReport], path: Path, title: str) -> Path:
    """A panel per paper: for each network the paper's figure (grey bar) and cnnlab's mean (coloured bar, one colour
    per training) with each seed's figure as a dot and ± std as an error bar; rows without runs say why; the
    paper's claims, checked, under each panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(reports), 1, figsize=(13, 3.9 * len(reports)), squeeze=False,
                             layout="constrained")
    for ax, report in zip(axes[:, 0], reports):
        _panel(ax, report)
    fig.suptitle(title, fontsize=13)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _panel(ax: Any, report: PaperReport) -> None:
    paper = report.paper
    networks = list(dict.fromkeys(o.row.network for o in report.outcomes))
    trainings = list(dict.fromkeys(o.row.training for o in report.outcomes))
    width = 0.8 / (1 + len(trainings))
    values: list[float] = []
    for x, network in enumerate(networks):
        rows = [o for o in report.outcomes if o.row.network == network]
        published = next((o.row.paper for o in rows if o.row.paper is not None), None)
        if published is not None:
            ax.bar(x - 0.4 + width / 2, published, width, color=PAPER_COLOUR)
            values.append(published)
        for o in rows:
            slot = trainings.index(o.row.training)
            centre = x - 0.4 + width * (slot + 1.5)
            colour = TRAINING_COLOURS[slot % len(TRAINING_COLOURS)]
            figure = o.figure
            if figure is None:  # written upwards from the bottom of the panel, whatever its scale
                ax.text(centre, 0.03, _short(o.state), rotation=90, ha="center", va="bottom", fontsize=7,
                        color=colour, transform=ax.get_xaxis_transform())
                continue
            seeds = [o.shown(v) for v in figure.values]
            mean = o.shown(figure.mean)
            ax.bar(centre, mean, width, color=colour, alpha=0.75,
                   yerr=100 * figure.std if figure.std is not None else None, capsize=3)
            ax.scatter([centre] * len(seeds), seeds, s=10, color="black", zorder=3)
            values += seeds + [mean]
            if o.verdict is not None:  # the verdict's mark over the bar: ✓ matches, ≈ within noise, ✗ below
                top = max(seeds + [mean + (100 * figure.std if figure.std is not None else 0.0)])
                ax.annotate(MARKS[o.verdict].split()[0], (centre, top), xytext=(0, 2), textcoords="offset points",
                            ha="center", va="bottom", fontsize=11, color=colour)
    handles = [matplotlib_patch(PAPER_COLOUR, "paper"), matplotlib_patch("white", "✓ matches, ≈ within\nnoise, ✗ below")] + [
        matplotlib_patch(TRAINING_COLOURS[i % len(TRAINING_COLOURS)], f"cnnlab, {training}\n(mean ± std; dots: seeds)")
        for i, training in enumerate(trainings)]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_xticks(range(len(networks)), networks, fontsize=9)
    ax.set_xlim(-0.6, len(networks) - 0.4)
    ax.set_ylabel(f"test {paper.unit}")
    measured = next((o.figure.metric.label for o in report.outcomes if o.figure is not None), paper.metrics[0].label)
    better = "lower is better" if paper.error else "higher is better"
    ax.set_title(f"{paper.title}\n({measured}; {better})", fontsize=10)
    if report.claims:
        marks = {True: "holds", False: "does not hold", None: "not checked yet"}
        ax.set_xlabel("\n".join(f"{c.claim.text}: {marks[c.holds]}" for c in report.claims), fontsize=9)
    if values:
        top, low = max(values), min(values)
        bottom = 0.0 if paper.error else max(0.0, low - 0.3 * (top - low + 5))
        ax.set_ylim(bottom, min(100.0, top + 0.1 * (top - bottom + 1)) if not paper.error else top * 1.15)
    ax.grid(axis="y", alpha=0.3)


def matplotlib_patch(colour: str, label: str) -> Any:
    from matplotlib.patches import Patch

    return Patch(color=colour, alpha=0.75 if colour != PAPER_COLOUR else 1.0, label=label)


def _short(state: str) -> str:
    return {NOT_RUN: "not run yet", NO_DATA: "no data here"}.get(state, state)
