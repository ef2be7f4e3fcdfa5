"""The image-folder benchmark's cnnlab paths on the intra-op thread counts cnnlab chooses, on one and on two.

``bench_image_folder.py`` runs every path on one intra-op thread (``OMP_NUM_THREADS=1``), the fair setting for the
paths with DataLoader workers: beside two workers on two cores a second OpenMP thread spins. ``cnnlab train`` picks
its own count on a CPU (``cnnlab.training.cpu.leave_cores_to_workers``): torch's default less the training
workers — one thread here for the per-sample path with two workers, every core for the folder cache, which has
none. This runs, in alternating rounds on the same folder: the baseline loop on one thread (its best setting, the
figure every ratio divides by) and on torch's default; the cache path on one thread and on cnnlab's choice; the
per-sample path on cnnlab's choice and on torch's default (what cnnlab did before it chose). Printed, and written
into benchmarks/RESULTS.md: each one's training images/s from epoch 2 on and its ratio to the one-thread baseline
(the median over rounds of each round's ratio). The cache is built once (round 1) and reused, so the figures are
epoch-2 figures throughout.

    python benchmarks/bench_image_folder_threads.py [rounds]
    python benchmarks/bench_image_folder_threads.py 1 --small --results /tmp/results.md   # a check that it runs
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_image_folder as bench  # noqa: E402

SECTION = "## Image folders: thread counts (`bench_image_folder_threads.py`)"
CORES = os.cpu_count() or 1
CNNLAB_CHOOSES = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
ONE_THREAD = {**CNNLAB_CHOOSES, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
ALL_CORES = {**CNNLAB_CHOOSES, "OMP_NUM_THREADS": str(CORES), "MKL_NUM_THREADS": str(CORES)}
RUNS = {  # name: (path in bench_image_folder.commands, environment)
    "baseline loop, 1 thread (its best setting; the figure the ratios divide by)": ("baseline", ONE_THREAD),
    "cnnlab cache, 1 thread (as in bench_image_folder.py)": ("cnnlab cache", ONE_THREAD),
    "cnnlab cache, cnnlab's choice (no workers: every core)": ("cnnlab cache", CNNLAB_CHOOSES),
    "cnnlab per-sample, cnnlab's choice (cores less 2 workers: 1 thread)": ("cnnlab per-sample", CNNLAB_CHOOSES),
    f"cnnlab per-sample, {CORES} threads (torch's default: cnnlab before it chose)":
        ("cnnlab per-sample", ALL_CORES),
    "baseline loop, torch's default threads (the loop as users write it)": ("baseline", CNNLAB_CHOOSES),
}


def main(rounds: int, small: bool, results_file: Path) -> None:
    work = Path(tempfile.gettempdir()) / "cnnlab-bench-image-folder"
    work.mkdir(parents=True, exist_ok=True)
    root = bench.write_folder(work / ("folder-small" if small else "folder"),
                              bench.Folder(500, 100) if small else bench.Folder(train=20000, val=2000))
    planned = bench.commands(root, work, epochs=2)
    results: dict[str, list[dict]] = {name: [] for name in RUNS}
    load_before, started = os.getloadavg(), time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    for r in range(rounds):
        for name, (path, env) in RUNS.items():
            bench.ONE_THREAD = env  # measure() starts every run with this environment
            command = list(planned[path])  # type: ignore[arg-type]
            if path == "cnnlab cache":
                cache = work / ("cache-threads-small" if small else "cache-threads")  # built in round 1, reused
                command.append(f"data.cache_dir={cache}")
            result = bench.measure(command, work)
            results[name].append(result)
            print(f"round {r + 1} {name[:60]:60s} {result['later']:7.0f} images/s from epoch 2, wall "
                  f"{result['wall_s']:5.1f} s, CPU {result['cpu_s']:5.1f} s, load {result['load']:.1f}", flush=True)
    base = next(iter(results.values()))
    lines = [SECTION, "",
             f"Date: {started}–{time.strftime('%H:%M', time.gmtime())} UTC. {CORES} CPU cores, no GPU. Load average "
             f"(1, 5, 15 min) before: {', '.join(f'{v:.2f}' for v in load_before)}; after: "
             f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}. Same folder and model as above, {rounds} "
             f"alternating rounds, the cache built in round 1 and reused (epoch-2 figures throughout). Command: "
             f"`python benchmarks/bench_image_folder_threads.py {rounds}{' --small' if small else ''}`.", "",
             "| run | images/s from epoch 2 (median) | ratio to the one-thread baseline (median of rounds) |",
             "|---|---:|---:|"]
    for name, runs in results.items():
        ratio = statistics.median(a["later"] / b["later"] for a, b in zip(runs, base))
        lines.append(f"| {name} | {statistics.median(x['later'] for x in runs):,.0f} | {ratio:.2f} |")
    lines += ["", "Every run, in the order run (1-minute load average at its start):", ""]
    lines += [f"- round {r + 1}, {name}: {runs[r]['later']:,.0f} images/s, load {runs[r]['load']:.1f}"
              for r in range(rounds) for name, runs in results.items()]
    section = "\n".join(lines) + "\n"
    bench.write_section(results_file, section, SECTION)
    print(section)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rounds", type=int, nargs="?", default=2)
    parser.add_argument("--small", action="store_true", help="500 + 100 images: a check that every run works")
    parser.add_argument("--results", default=str(bench.HERE / "RESULTS.md"), help="the Markdown file to write into")
    args = parser.parse_args()
    main(args.rounds, args.small, Path(args.results))
