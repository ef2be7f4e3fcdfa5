"""What a sweep of many short trials spends beyond training: the pool launcher before and after one worker per slot.

Runs the same sweep — ``cnnlab train -m launcher=pool hydra.launcher.slots=2 trainer.max_epochs=1 model=linear
seed=0..15`` on digits — with

- ``after``: this checkout's pool launcher (one long-lived worker per slot, Hydra's job run in it);
- ``before``: the pool launcher of ``--before-rev`` (each trial a fresh ``cnnlab train`` process), taken from
  git into a temporary folder that shadows ``hydra_plugins/cnnlab_sweeps`` (cnnlab itself is this checkout's);
- ``basic``: Hydra's basic launcher (trials one after another in the sweep's own process), for reference.

Two per-trial figures, both beyond the trial's own training time (``train_time_s`` in its ``results.json``: fit
with validation):

- amortized: the sweep's wall time x slots / trials - training time; it includes what a sweep pays once (the
  command's start-up and config checks, each slot's worker start-up, the summary at the end);
- steady: slot time per trial once the sweep runs — from the start of trial 3 to the start of the last trial
  (``started_at`` in ``results.json``), x slots / trials in between — minus training time: what one more trial costs.

The target is <= 1 s of steady overhead for ``after``; ratios are to ``after``, measured in the same run.

    python benchmarks/bench_sweep_overhead.py [--trials 16] [--slots 2] [--before-rev 4ce841c~1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_S = 1.0
OLD_FILES = ("__init__.py", "pool_launcher.py", "ray_launcher.py", "trials.py")


def old_launcher(rev: str, into: Path) -> Path:
    """The pool launcher of ``rev`` as a package folder to put first on PYTHONPATH."""
    package = into / "hydra_plugins" / "cnnlab_sweeps"
    package.mkdir(parents=True)
    for name in OLD_FILES:
        text = subprocess.run(["git", "show", f"{rev}:hydra_plugins/cnnlab_sweeps/{name}"], cwd=REPO,
                              capture_output=True, text=True, check=True).stdout
        if name == "pool_launcher.py":  # accept (and ignore) the key this checkout's conf/launcher/pool.yaml sets
            text = text.replace("    resume: bool = True\n",
                                "    resume: bool = True\n    completed_if: Any = None\n", 1)
            text = text.replace("resume: bool = True) -> None:",
                                "resume: bool = True, completed_if: Any = None) -> None:")
        (package / name).write_text(text)
    shutil.copy(REPO / "hydra_plugins" / "cnnlab_sweeps" / "optuna_sweeper.py", package)
    return into


def sweep(name: str, launcher: list[str], trials: int, workdir: Path, env: dict[str, str]) -> dict:
    sweep_dir = workdir / name
    command = [sys.executable, "-m", "cnnlab", "train", "-m", *launcher, "trainer.max_epochs=1", "model=linear",
               "trainer.enable_model_summary=false", f"seed={','.join(map(str, range(trials)))}",
               f"hydra.sweep.dir={sweep_dir}"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    results = [json.loads(p.read_text()) for p in sweep_dir.glob("*/results.json")]
    completed = [r for r in results if r.get("status") == "completed"]
    if done.returncode != 0 or len(completed) != trials:
        raise SystemExit(f"{name}: {len(completed)}/{trials} trials completed (exit {done.returncode}):\n"
                         f"{done.stderr[-3000:]}")
    starts = sorted(datetime.fromisoformat(r["started_at"]).timestamp() for r in completed)
    return {"wall_s": wall, "train_s": statistics.mean(r["train_time_s"] for r in completed),
            "steady_span_s": starts[-1] - starts[2] if trials > 4 else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--before-rev", default="4ce841c~1", help="a commit with the subprocess-per-trial launcher")
    parser.add_argument("--skip-basic", action="store_true")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cnnlab-sweep-overhead-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_"))}
    env.setdefault("CNNLAB_CACHE_DIR", str(workdir / "cache"))
    pool = ["launcher=pool", f"hydra.launcher.slots={args.slots}", "hydra.launcher.gpus=[]"]
    try:
        # a first run fills the decoded-data cache, so that no variant pays for it
        sweep("warm-up", ["launcher=basic"], 1, workdir, env)
        old = old_launcher(args.before_rev, workdir / "old")
        runs = {
            "after": (pool, args.slots, env),
            "before": (pool, args.slots,
                       {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(old), env.get("PYTHONPATH")]))}),
        }
        if not args.skip_basic:
            runs["basic"] = (["launcher=basic"], 1, env)
        measured = {}
        for name, (launcher, slots, run_env) in runs.items():
            m = sweep(name, launcher, args.trials, workdir, run_env)
            m["slot_s"] = m["wall_s"] * slots / args.trials
            m["overhead_s"] = m["slot_s"] - m["train_s"]
            m["steady_slot_s"] = m.pop("steady_span_s") * slots / (args.trials - 3)
            m["steady_overhead_s"] = m["steady_slot_s"] - m["train_s"]
            measured[name] = m
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    after, steady_after = measured["after"]["overhead_s"], measured["after"]["steady_overhead_s"]
    print(f"{args.trials} trials of model=linear on digits, 1 epoch; pool with {args.slots} slots on "
          f"{os.cpu_count()} cores; seconds per trial beyond its train_time_s")
    print(f"{'launcher':<8} {'wall s':>7} {'train':>6} {'amortized':>10} {'/ after':>8} {'steady':>7} {'/ after':>8} "
          f"{'/ 1 s target':>13}")
    for name, m in measured.items():
        print(f"{name:<8} {m['wall_s']:>7.1f} {m['train_s']:>6.2f} {m['overhead_s']:>10.2f} "
              f"{m['overhead_s'] / after:>8.2f} {m['steady_overhead_s']:>7.2f} "
              f"{m['steady_overhead_s'] / steady_after:>8.2f} {m['steady_overhead_s'] / TARGET_S:>13.2f}")
    print(json.dumps({name: {k: round(v, 3) for k, v in m.items()} for name, m in measured.items()}))


if __name__ == "__main__":
    main()
