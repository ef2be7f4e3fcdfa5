"""cnnlab's figure for each row of a paper, its difference to the paper's, and the verdict.

The verdict compares cnnlab's mean over seeds with the paper's figure, in the paper's own unit and precision:

- ``matches``: cnnlab's mean, rounded as the paper prints its figure, is at least as good as the paper's;
- ``within noise``: it falls short by at most two standard errors of the difference, which combine the spread
  over seeds (std / √n) and the sampling error of both test sets, cnnlab's and the paper's (√(a(1−a)/N) for
  accuracy a on N test images; the paper's figures on 160 images are uncertain by several points): a shortfall
  that size is what re-running, or testing on other images, could undo;
- ``below``: it falls short by more. A miss is printed as a miss.

Imports no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from cnnlab.report.papers import Claim, Metric, Paper, Row
from cnnlab.report.runs import RowRuns, mean_std

MATCHES, WITHIN_NOISE, BELOW = "matches", "within noise", "below"
MARKS = {MATCHES: "✓ matches", WITHIN_NOISE: "≈ within noise", BELOW: "✗ below"}
NOISE_STANDARD_ERRORS = 2.0

# Row states, when there is no figure to compare
MEASURED, NOT_RUN, FAILED, NO_DATA, NO_RECIPE = "measured", "not run yet", "failed", "data not available here", \
    "recipe missing"


@dataclass
class Figure:
    """cnnlab's accuracy on one metric: mean and std over ``n`` seeds (fractions in [0, 1])."""

    metric: Metric
    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return mean_std(self.values)[0]

    @property
    def std(self) -> float | None:
        return mean_std(self.values)[1]

    @property
    def standard_error(self) -> float:
        a = self.mean
        seeds = (self.std or 0.0) ** 2 / self.n
        sampling = a * (1 - a) / self.metric.test_images
        return math.sqrt(seeds + sampling)


@dataclass
class Outcome:
    paper: Paper
    row: Row
    runs: RowRuns
    state: str
    figures: list[Figure] = field(default_factory=list)  # one per metric of the paper that the runs have
    detail: str = ""  # why there is no figure: the error, the missing data, the recipe's problem

    @property
    def figure(self) -> Figure | None:
        """The figure the verdict is on: the paper's first metric that the runs have."""
        return self.figures[0] if self.figures else None

    def shown(self, accuracy: float) -> float:
        """An accuracy in the paper's unit: percent accuracy or percent error."""
        return 100 * (1 - accuracy) if self.paper.error else 100 * accuracy

    @property
    def difference(self) -> float | None:
        """cnnlab minus the paper, in points of the paper's unit (for errors, negative is better)."""
        if self.figure is None or self.row.paper is None:
            return None
        return self.shown(self.figure.mean) - self.row.paper

    @property
    def verdict(self) -> str | None:
        if self.figure is None or self.row.paper is None:
            return None
        ours = round(self.shown(self.figure.mean), self.paper.decimals)
        theirs = round(self.row.paper, self.paper.decimals)
        if (ours <= theirs) if self.paper.error else (ours >= theirs):
            return MATCHES
        shortfall = self._paper_accuracy - self.figure.mean
        return WITHIN_NOISE if shortfall <= NOISE_STANDARD_ERRORS * self.standard_error else BELOW

    @property
    def _paper_accuracy(self) -> float:
        assert self.row.paper is not None
        return 1 - self.row.paper / 100 if self.paper.error else self.row.paper / 100

    @property
    def standard_error(self) -> float | None:
        """Of the difference between cnnlab's mean and the paper's figure (fractions): cnnlab's seeds and test set,
        and the paper's test set."""
        if self.figure is None or self.row.paper is None:
            return None
        p = self._paper_accuracy
        return math.sqrt(self.figure.standard_error ** 2 + p * (1 - p) / self.paper.test_images)


def outcome(paper: Paper, row: Row, runs: RowRuns, unavailable: str | None = None) -> Outcome:
    """What the report says for ``row``: ``unavailable`` says why its data is missing on this machine, if it is."""
    figures = [Figure(m, runs.values(m.key)) for m in paper.metrics]
    figures = [f for f in figures if f.values]
    if runs.recipe_error is not None:
        return Outcome(paper, row, runs, NO_RECIPE, detail=runs.recipe_error)
    if figures:
        return Outcome(paper, row, runs, MEASURED, figures)
    if runs.failed:
        newest = runs.failed[0]
        return Outcome(paper, row, runs, FAILED, detail=f"{newest.status}: {newest.error or 'no error recorded'}")
    if unavailable:
        return Outcome(paper, row, runs, NO_DATA, detail=unavailable)
    return Outcome(paper, row, runs, NOT_RUN)


@dataclass
class ClaimCheck:
    claim: Claim
    holds: bool | None  # None: not every row measured
    detail: str


def check_claim(claim: Claim, outcomes: dict[str, Outcome]) -> ClaimCheck:
    """Whether cnnlab's means increase along ``claim.increasing`` (on each row's verdict metric)."""
    rows = [outcomes[key] for key in claim.increasing if key in outcomes]
    measured = [o for o in rows if o.figure is not None]
    if len(measured) < len(claim.increasing):
        return ClaimCheck(claim, None, f"{len(measured)} of {len(claim.increasing)} networks measured")
    broken = [(a, b) for a, b in zip(measured, measured[1:]) if b.figure.mean <= a.figure.mean]  # type: ignore[union-attr]
    unit = "error" if rows[0].paper.error else "accuracy"

    def say(o: Outcome) -> str:
        return f"{o.row.network} {o.shown(o.figure.mean):.{o.paper.decimals}f} %"  # type: ignore[union-attr]

    if not broken:
        return ClaimCheck(claim, True, f"in cnnlab's means ({unit}): " + ", ".join(say(o) for o in measured))
    return ClaimCheck(claim, False, "; ".join(f"{say(b)} is not better than {say(a)}" for a, b in broken))
