"""How long cnnlab's fast paths take: --help, printing the config, a config error (target: under 1.5 s each).

Each command runs ``--repeat`` times; the median is printed next to the same-run baseline of starting Python
and importing Hydra (the least any Hydra CLI can cost), and the ratio to the 1.5 s target.

    python benchmarks/bench_startup.py
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

TARGET_S = 1.5
COMMANDS = {
    "python -c 'import hydra' (baseline)": [sys.executable, "-c", "import hydra"],
    "cnnlab train --help": [sys.executable, "-m", "cnnlab", "train", "--help"],
    "cnnlab train --cfg job": [sys.executable, "-m", "cnnlab", "train", "--cfg", "job"],
    "cnnlab train model=lenet6": [sys.executable, "-m", "cnnlab", "train", "model=lenet6"],
    "cnnlab train optimizer.lrr=0.1": [sys.executable, "-m", "cnnlab", "train", "optimizer.lrr=0.1"],
    "cnnlab train data.batch_size=abc": [sys.executable, "-m", "cnnlab", "train", "data.batch_size=abc"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cwd = tempfile.mkdtemp(prefix="cnnlab-startup-")
    medians = {}
    for name, command in COMMANDS.items():
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            subprocess.run(command, cwd=cwd, capture_output=True)
            times.append(time.perf_counter() - started)
        medians[name] = statistics.median(times)
    baseline = medians[next(iter(COMMANDS))]
    print(f"median of {args.repeat} runs    seconds   / baseline   / target {TARGET_S} s")
    for name, seconds in medians.items():
        print(f"  {name:<36} {seconds:6.3f}   {seconds / baseline:8.2f}   {seconds / TARGET_S:8.2f}")


if __name__ == "__main__":
    main()
