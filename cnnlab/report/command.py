"""``cnnlab report [--runs DIR ...] [--run] [--out DIR] [--only NAME ...] [--seeds N] [overrides ...]``.

The command line is read and checked (folders, names, overrides composed with a recipe) before torch is loaded, so
a typo costs a second. ``--run`` launches the rows that lack runs as Hydra sweeps, one per group of rows that
need the same seeds (a paper's recipes, usually), each in its own ``cnnlab train -m`` process (so a recipe that crashes its process is
reported as failed and the report goes on), on ``launcher=pool`` with one trial per core unless the overrides
pick another launcher or slot count.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Sequence

from cnnlab.errors import ConfigError
from cnnlab.report.papers import PAPERS, Paper, Row

HELP = """\
usage: cnnlab report [--runs DIR ...] [--run] [--out DIR] [--only NAME ...] [--seeds N] [overrides ...]

The lectures' papers (LeCun 1989's Net-1 ... Net-5, LeCun et al. 1989's zip-code network, LeNet-5, He et al.
2016's plain and residual CIFAR-10 networks) with cnnlab's figures beside theirs: architecture counts computed
from cnnlab's networks, and test figures from the finished runs of each paper's recipes (mean ± std over seeds),
with the difference and a verdict (matches / within noise / below). Printed, and written as report.md,
report.png and runs.csv into the output folder, whose path is printed last.

  --runs DIR ...   folders to search for run folders (results.json); default: outputs and multirun
  --run            first launch every row that has fewer finished runs than its seeds, as sweeps
                   (cnnlab train -m experiment=<recipe>,... seed=0,1,... launcher=pool, one trial per core),
                   into the first --runs folder (created if need be)
  --out DIR        where to write the report; default: reports/<date>/<time>
  --only NAME ...  only these papers (lecun1989, lecun1989_zipcode, lenet5, he2016) or recipes; * wildcards
  --seeds N        seeds per row instead of each row's own (5 for Net-1 ... Net-5, 3 for the zip-code
                   network, 2 for LeNet-5, 1 for the CIFAR-10 networks)
  overrides        key=value passed to every run that --run launches, after an optional --: where the data is
                   (data.root=../shared/data data.download=false), the launcher (launcher=basic,
                   hydra.launcher.slots=2). An override that changes the experiment (trainer.max_epochs=1)
                   also restricts the report to runs made with it, and the report says so.

examples:
  cnnlab report
  cnnlab report --run data.root=../shared/data data.download=false
  cnnlab report --only lecun1989 --runs outputs/multirun/2026-11-25
"""

DEFAULT_RUNS = ("outputs", "multirun")
DEFAULT_LAUNCHER = "launcher=pool"


@dataclass
class ReportArgs:
    runs: list[Path]
    runs_given: bool
    run: bool
    out: Path | None
    only: list[str]
    seeds: int | None
    overrides: list[str] = field(default_factory=list)


def _usage_error(message: str) -> ConfigError:
    return ConfigError(f"{message} Usage: cnnlab report [--runs DIR ...] [--run] [--out DIR] [--only NAME ...] "
                       f"[--seeds N] [key=value ...]; cnnlab report --help says more.")


def parse(args: Sequence[str]) -> ReportArgs:
    """Read the command line; ``ConfigError`` for anything wrong with it. Imports no torch."""
    runs: list[str] = []
    only: list[str] = []
    parsed = ReportArgs(runs=[], runs_given=False, run=False, out=None, only=[], seeds=None)
    rest = list(args)
    collecting: list[str] | None = None  # --runs and --only take every following word that is not a flag
    while rest:
        word = rest.pop(0)
        if word == "--":
            parsed.overrides += rest
            break
        if word in ("--runs", "--only"):
            collecting = runs if word == "--runs" else only
            parsed.runs_given = parsed.runs_given or word == "--runs"
            if not rest or rest[0].startswith("-") or "=" in rest[0]:
                raise _usage_error(f"{word} needs at least one {'folder' if word == '--runs' else 'name'}.")
            continue
        if word in ("--out", "--seeds"):
            collecting = None
            if not rest or rest[0].startswith("--"):
                raise _usage_error(f"{word} needs a value.")
            value = rest.pop(0)
            if word == "--out":
                parsed.out = Path(value)
            else:
                if not value.isdigit() or int(value) < 1:
                    raise _usage_error(f"--seeds {value}: give a whole number of seeds, 1 or more.")
                parsed.seeds = int(value)
            continue
        if word == "--run":
            collecting, parsed.run = None, True
            continue
        if word.startswith("-"):
            raise _usage_error(f"Unknown option {word}.")
        if "=" in word:
            collecting = None
            parsed.overrides.append(word)
        elif collecting is not None:
            collecting.append(word)
        else:
            raise _usage_error(f"'{word}' is neither an option nor a key=value override.")
    for i, folder in enumerate(runs):
        if not Path(folder).is_dir() and not (parsed.run and i == 0):  # --run creates the folder it launches into
            raise ConfigError(f"--runs {folder}: no such folder. Give the folders that hold your run "
                              f"folders (cnnlab train writes them under outputs/), or leave --runs out to read "
                              f"outputs and multirun.")
    parsed.runs = [Path(f) for f in (runs or DEFAULT_RUNS)]
    parsed.only = only
    _check_only(only)
    return parsed


def _check_only(patterns: Sequence[str]) -> None:
    names = [p.key for p in PAPERS] + [r.recipe for p in PAPERS for r in p.rows]
    unknown = [p for p in patterns if not fnmatch.filter(names, p)]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], list(dict.fromkeys(names)), n=1)
        hint = f"Did you mean --only {close[0]}? " if close else ""
        raise ConfigError(f"--only {' '.join(unknown)} names no paper or recipe of the report. {hint}Papers: "
                          f"{', '.join(p.key for p in PAPERS)}; recipes: {', '.join(dict.fromkeys(names[len(PAPERS):]))}.")


def select(patterns: Sequence[str], seeds: int | None) -> list[Paper]:
    """The papers, with only the rows (and networks) ``patterns`` name, and ``seeds`` seeds per row if given."""
    papers = []
    for paper in PAPERS:
        if not patterns or any(fnmatch.fnmatch(paper.key, p) for p in patterns):
            rows = paper.rows
        else:
            rows = tuple(r for r in paper.rows if any(fnmatch.fnmatch(r.recipe, p) for p in patterns))
        if not rows:
            continue
        if seeds is not None:
            rows = tuple(dataclasses.replace(r, seeds=seeds) for r in rows)
        keys = {r.key for r in rows}
        recipes = {r.recipe for r in rows}
        papers.append(dataclasses.replace(
            paper, rows=rows, networks=tuple(n for n in paper.networks if n.recipe in recipes),
            claims=tuple(c for c in paper.claims if set(c.increasing) <= keys)))
    return papers


def check_overrides(overrides: Sequence[str], papers: Sequence[Paper]) -> None:
    """Compose the overrides with the first recipe that exists, as ``cnnlab train`` would: a typo fails here."""
    if not overrides:
        return
    from cnnlab.config import compose_config
    from cnnlab.report.runs import override_key

    launcher = [] if any(override_key(o) == "launcher" for o in overrides) else [DEFAULT_LAUNCHER]
    for recipe in dict.fromkeys(r.recipe for p in papers for r in p.rows):
        try:
            compose_config([f"experiment={recipe}"])
        except ConfigError:
            continue  # a missing recipe is the report's news, not the overrides' fault
        try:
            compose_config([f"experiment={recipe}", *launcher, *overrides])
        except ConfigError as err:
            raise ConfigError(f"the overrides {' '.join(overrides)} do not compose with recipe "
                              f"{recipe}: {err.user_message}") from None
        return


# --- launching ------------------------------------------------------------------------------------------------

def train_arguments(rows: Sequence[Row], seeds: Sequence[int], overrides: Sequence[str]) -> list[str]:
    """``cnnlab train -m`` over the recipes of ``rows`` (which share their own overrides) and ``seeds``."""
    from cnnlab.report.runs import override_key

    launcher = [] if any(override_key(o) == "launcher" for o in overrides) else [DEFAULT_LAUNCHER]
    recipes = ",".join(dict.fromkeys(r.recipe for r in rows))
    return ["train", "-m", f"experiment={recipes}", *rows[0].overrides, f"seed={','.join(map(str, seeds))}",
            *launcher, *overrides]


def command_text(row: Row, seeds: Sequence[int], overrides: Sequence[str]) -> str:
    import shlex

    return shlex.join(["cnnlab", *train_arguments([row], seeds, overrides)])


def sweep_commands(rows: Sequence[Row], overrides: Sequence[str]) -> dict[str, str]:
    """The command that produces each row, for people to copy: rows of one recipe that differ in one key (He et
    al.'s depths) share one sweep over that key (``model.depth=20,32,44,56,110``)."""
    from cnnlab.report.runs import recipe_config

    commands = {}
    for recipe in dict.fromkeys(r.recipe for r in rows):
        group = [r for r in rows if r.recipe == recipe]
        keys = {o.split("=", 1)[0] for r in group for o in r.overrides}
        if len(group) > 1 and len(keys) == 1 and all(len(r.overrides) <= 1 for r in group):
            (key,) = keys
            try:
                default = str(recipe_config((f"experiment={recipe}",)).get(key))
            except ConfigError:
                default = None
            values = [r.overrides[0].split("=", 1)[1] if r.overrides else default for r in group]
            if None not in values:
                swept = dataclasses.replace(group[0], overrides=(f"{key}={','.join(map(str, values))}",))
                text = command_text(swept, list(range(max(r.seeds for r in group))), overrides)
                commands.update({r.key: text for r in group})
                continue
        commands.update({r.key: command_text(r, list(range(r.seeds)), overrides) for r in group})
    return commands


@dataclass
class Launch:
    rows: list[Row]
    seeds: list[int]
    command: str
    status: int | None = None
    tail: str = ""
    seconds: float = 0.0


def group_sweeps(plan: Sequence[tuple[Row, list[int]]]) -> list[tuple[list[Row], list[int]]]:
    """Rows that need the same seeds with the same overrides, as one sweep over their recipes: its trials share
    the launcher's slots, so a row of one seed does not leave the other cores idle while it trains."""
    groups: dict[tuple, tuple[list[Row], list[int]]] = {}
    for row, seeds in plan:
        groups.setdefault((row.overrides, tuple(seeds)), ([], list(seeds)))[0].append(row)
    return list(groups.values())


def sweep_arguments(rows: Sequence[Row], seeds: Sequence[int], overrides: Sequence[str]) -> list[str]:
    """``train_arguments``, and on the default launcher one trial per core: the papers' networks are small and
    most train one pattern at a time, which a second thread does not speed up (on a GPU machine the pool still
    gives each trial a GPU of its own)."""
    from cnnlab.report.runs import override_key

    args = train_arguments(rows, seeds, overrides)
    if not any(override_key(o) in ("launcher", "hydra.launcher.slots") for o in overrides):
        args.append(f"hydra.launcher.slots={os.cpu_count() or 1}")
    return args


def launch(rows: list[Row], seeds: list[int], overrides: Sequence[str], runs_folder: Path, number: str) -> Launch:
    """Run the sweep of ``rows``' missing ``seeds`` in a ``cnnlab train -m`` process, its output passed through."""
    import shlex

    stamp = datetime.now()
    name = "+".join(r.key for r in rows) if len(rows) <= 2 else f"{rows[0].key}+{len(rows) - 1}_more"
    name = name.replace(" ", "_").replace("=", "-").replace("/", "-")
    sweep_dir = runs_folder / "multirun" / stamp.strftime("%Y-%m-%d") / f"{stamp.strftime('%H-%M-%S')}_{name}"
    args = sweep_arguments(rows, seeds, overrides)
    done = Launch(rows, seeds, shlex.join(["cnnlab", *args]))
    args.append(f"hydra.sweep.dir={sweep_dir}")
    networks = ", ".join(dict.fromkeys(f"{r.network} ({r.training})" for r in rows))
    print(f"cnnlab report: [{number}] {networks}, seed{'s' * (len(seeds) > 1)} "
          f"{','.join(map(str, seeds))}: {done.command}", flush=True)
    started = time.monotonic()
    tail = b""
    try:
        process = subprocess.Popen([sys.executable, "-m", "cnnlab", *args], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT)
    except OSError as err:
        done.status, done.tail = 1, str(err)
        return done
    assert process.stdout is not None
    out = sys.stdout.buffer
    try:
        while chunk := os.read(process.stdout.fileno(), 65536):
            out.write(chunk)
            out.flush()
            tail = (tail + chunk)[-4000:]
        done.status = process.wait()
    except KeyboardInterrupt:
        process.wait()  # the sweep got the same Ctrl-C and stops its trials itself
        raise
    done.seconds = time.monotonic() - started
    lines = [line.strip() for line in tail.decode(errors="replace").replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    done.tail = (errors or lines or ["no output"])[-1]
    return done


# --- the report ---------------------------------------------------------------------------------------------------

# Where torchvision keeps the papers' datasets under data.root: cnnlab.data.sources.SOURCES says the same (a test
# checks it), but importing it loads Lightning, which takes seconds a report does not need.
DATA_FOLDERS = {"mnist": "MNIST/raw", "cifar10": "cifar-10-batches-py"}
DOWNLOADED_ON_RUN = ("mnist",)  # --run lets a run download these; CIFAR-10's 64k steps per network are for a GPU


def _data_unavailable(row: Row, overrides: Sequence[str]) -> str | None:
    """Why the row's dataset is missing here, or None when it is here (or a run will download it)."""
    from cnnlab.report.runs import recipe_config

    try:
        config = recipe_config((f"experiment={row.recipe}", *row.overrides, *overrides))
    except ConfigError:
        return None  # the recipe's own problem, reported as such
    name, root = str(config.get("data.name")), config.get("data.root")
    if name not in DATA_FOLDERS or root is None or "${" in str(root):
        return None
    folder = Path(str(root)) / DATA_FOLDERS[name]
    if folder.is_dir() and any(folder.iterdir()):
        return None
    if config.get("data.download") and name in DOWNLOADED_ON_RUN:
        return None
    return f"{name} is not in {folder}"


def _gather(papers: Sequence[Paper], args: ReportArgs, launches: dict[str, Launch]) -> tuple[list, list, list[str]]:
    from cnnlab.report.counts import count_recipe
    from cnnlab.report.render import PaperReport
    from cnnlab.report.runs import assign, find_runs, override_key, same_experiment
    from cnnlab.report.verdicts import FAILED, NOT_RUN, check_claim, outcome

    found = find_runs(args.runs)
    reports = []
    for paper in papers:
        counts: dict = {}
        for network in paper.networks:
            try:
                counts[network.name] = count_recipe([f"experiment={network.recipe}", *network.overrides],
                                                    [c.measure for c in network.counts])
            except ConfigError as err:
                counts[network.name] = err.user_message
        assigned = assign(found, paper.rows, args.overrides)
        outcomes = {}
        for row in paper.rows:
            result = outcome(paper, row, assigned[row.key], _data_unavailable(row, args.overrides))
            launched = launches.get(row.key)
            if launched is not None and launched.status and result.state == NOT_RUN:
                result.state, result.detail = FAILED, f"the sweep stopped before any run (exit {launched.status}): " \
                                                      f"{launched.tail}"
            outcomes[row.key] = result
        commands = sweep_commands(paper.rows, args.overrides)
        reports.append(PaperReport(paper, counts, list(outcomes.values()),
                                   [check_claim(c, outcomes) for c in paper.claims], commands))
    changing = [o for o in args.overrides if not same_experiment(override_key(o))]
    return reports, found, changing


def _to_launch(reports: Sequence) -> list[tuple[Row, list[int]]]:
    from cnnlab.report.verdicts import FAILED, MEASURED, NOT_RUN

    plan = []
    for report in reports:
        for o in report.outcomes:
            if o.state in (NOT_RUN, FAILED, MEASURED):
                seeds = o.runs.missing_seeds(o.row.seeds)
                if seeds:
                    plan.append((o.row, seeds))
    return plan


def _preamble(args: ReportArgs, found: Sequence, changing: Sequence[str], launches: dict[str, Launch],
              launch_seconds: float) -> list[str]:
    import cnnlab
    from cnnlab.tracking.provenance import git_commit

    code = git_commit()
    commit = f", commit {str(code['commit'])[:10]}{' (modified)' if code.get('dirty') else ''}" if code.get("commit") \
        else ""
    lines = [f"{datetime.now().strftime('%Y-%m-%d %H:%M')}, cnnlab {cnnlab.__version__}{commit}. Runs read from "
             f"{', '.join(str(f) for f in args.runs)}: {_plural(len(found), 'run folder')}."]
    if changing:
        lines += ["", f"**These figures are of runs made with {' '.join(changing)}, not of the recipes as published.**"]
    if launches:
        sweeps = list({id(la): la for la in launches.values()}.values())
        failed = [la for la in sweeps if la.status]
        runs = sum(len(la.rows) * len(la.seeds) for la in sweeps)
        lines += ["", f"--run launched {_plural(len(sweeps), 'sweep')} ({_plural(runs, 'run')}) in "
                      f"{launch_seconds / 60:.1f} min" + (f"; {len(failed)} exited with an error" if failed else "")
                  + "."]
    return lines


def _plural(n: int, thing: str) -> str:
    return f"{n} {thing}{'s' * (n != 1)}"


def main(args: Sequence[str]) -> int:
    if any(a in ("-h", "--help") for a in args):
        print(HELP)
        return 0
    parsed = parse(args)
    papers = select(parsed.only, parsed.seeds)
    check_overrides(parsed.overrides, papers)
    out = parsed.out or Path("reports") / datetime.now().strftime("%Y-%m-%d") / datetime.now().strftime("%H-%M-%S")

    reports, found, changing = _gather(papers, parsed, {})
    launches: dict[str, Launch] = {}
    interrupted = False
    started = time.monotonic()
    if parsed.run:
        plan = _to_launch(reports)
        if not plan:
            print("cnnlab report: nothing to launch: every row has its runs, or lacks its data or recipe here.",
                  flush=True)
        try:
            sweeps = group_sweeps(plan)
            for i, (rows, seeds) in enumerate(sweeps, start=1):
                done = launch(rows, seeds, parsed.overrides, parsed.runs[0], f"{i}/{len(sweeps)}")
                launches.update({row.key: done for row in rows})
        except KeyboardInterrupt:  # the sweep stopped its trials (the same Ctrl-C): report what there is
            interrupted = True
            print("cnnlab report: interrupted: no more sweeps; reporting the runs there are.", flush=True)
        if plan:
            reports, found, changing = _gather(papers, parsed, launches)
    launch_seconds = time.monotonic() - started

    from cnnlab.report.render import figure, markdown, write_runs_csv

    text = markdown(reports, _preamble(parsed, found, changing, launches, launch_seconds))
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(text)
    write_runs_csv(reports, out / "runs.csv")
    figure(reports, out / "report.png", "The lectures' papers, reproduced: the paper's figures against cnnlab's")
    print(text)
    print(out)
    if interrupted:
        return 130
    return 1 if any(la.status for la in launches.values()) else 0
