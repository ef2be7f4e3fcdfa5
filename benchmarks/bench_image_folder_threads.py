"""The image-folder benchmark's cache path and baseline loop on torch's default intra-op threads as well as on one.

``bench_image_folder.py`` runs every path on one intra-op thread, the fair setting for the paths with DataLoader
workers (a second OpenMP thread beside two workers on two cores spins). The cache path has no workers, so one
thread leaves a core idle; users run both with torch's default. This runs, in alternating rounds on the same
folder: the baseline and the cache path on one thread and on the default (two here), and prints each one's
training images/s from epoch 2 on and its ratio to the one-thread baseline. The cache is built once (round 1)
and reused, so the figures are epoch-2 figures throughout.

    python benchmarks/bench_image_folder_threads.py [rounds]
"""
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_image_folder as bench  # noqa: E402

ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
DEFAULT_THREADS = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
RUNS = {  # name: (path in bench_image_folder.commands, environment)
    "baseline, 1 thread": ("baseline", ONE_THREAD),
    "cache, 1 thread": ("cnnlab cache", ONE_THREAD),
    "cache, default threads": ("cnnlab cache", DEFAULT_THREADS),
    "baseline, default threads": ("baseline", DEFAULT_THREADS),
}


def main(rounds: int) -> None:
    work = Path(tempfile.gettempdir()) / "cnnlab-bench-image-folder"
    work.mkdir(parents=True, exist_ok=True)
    root = bench.write_folder(work / "folder", bench.Folder(train=20000, val=2000))
    planned = bench.commands(root, work, epochs=2)
    results: dict[str, list[dict]] = {name: [] for name in RUNS}
    for r in range(rounds):
        for name, (path, env) in RUNS.items():
            bench.ONE_THREAD = env  # measure() starts every run with this environment
            command = list(planned[path])  # type: ignore[arg-type]
            if path == "cnnlab cache":
                command.append(f"data.cache_dir={work / 'cache-threads'}")  # built in round 1, reused after
            result = bench.measure(command, work)
            results[name].append(result)
            print(f"round {r + 1} {name:26s} {result['later']:7.0f} images/s from epoch 2, wall "
                  f"{result['wall_s']:5.1f} s, CPU {result['cpu_s']:5.1f} s, load {result['load']:.1f}", flush=True)
    base = results["baseline, 1 thread"]
    print(f"torch's default intra-op threads here: {os.cpu_count()} cores")
    for name, runs in results.items():
        ratio = statistics.median(a["later"] / b["later"] for a, b in zip(runs, base))
        print(f"{name:26s} median {statistics.median(x['later'] for x in runs):7.0f} images/s, "
              f"{ratio:.2f}x the one-thread baseline")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
