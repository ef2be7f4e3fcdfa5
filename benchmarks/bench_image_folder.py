"""Training from a folder of JPEGs: the loop users write against cnnlab's three ways of reading a folder.

The benchmark writes its own folder (deterministic): ImageFolder layout, 10 classes of 96×96 JPEGs (quality 90),
20,000 in train/ and 2,000 in val/ — each class a colour and a stripe orientation, with random frequency, phase,
position and noise, so the network has something to learn. Every run trains the modern LeNet-5 at 64 px
(batch 64, Adam, cosine schedule, 2 epochs), with random-resized crops and horizontal flips:

* baseline        — benchmarks/folder_loop.py: torchvision ``ImageFolder`` + ``DataLoader(num_workers=2,
                    pin_memory=True)`` with ``RandomResizedCrop`` + flip + ``ToTensor`` + ``Normalize``, in a
                    hand-written loop: what users and templates write.
* cnnlab before   — benchmarks/pil_folder_pipeline.py: ``cnnlab train`` on the per-sample path as it was before
                    this work (PIL loader, ``v2.Compose`` of Transform objects, float batches).
* cnnlab per-sample — ``cnnlab train data.cache=off``: torchvision.io decoding, functional crops and flips in
                    the workers, uint8 batches (prefetch 4), batched normalisation in the training process.
* cnnlab cache    — ``cnnlab train data.cache=memory``: the folder decoded once into a uint8 cache (a fresh
                    cache directory each round, so its build is part of the run's wall time), then the tensor path.

Why LeNet-5 at 64 px (it resizes its input to 32×32 inside): its training step costs ~0.1 ms an image on two
cores, against ~0.3 ms to decode and crop a 96×96 JPEG, so the data path decides the speed, as it does on a GPU.
ResNet-20 at 64 px costs ~10 ms an image here: every path would run at the network's speed.

The four run one after another in rotating order, ``--rounds`` times, all with 2 DataLoader workers and one
intra-op thread in the training process (``ONE_THREAD``, below). Printed and
written into benchmarks/RESULTS.md: medians of training images/s in epoch 1 and from epoch 2 on, wall time (the
whole process: start, folder scan or cache build, training, validation, test), peak memory (the RSS of the
largest process, and the PSS of the whole process tree, workers included, sampled every 0.2 s), test accuracy, and the ratios to the baseline (the median over
rounds of each round's ratio, so that a change in the machine's load between rounds cancels out).

    python benchmarks/bench_image_folder.py --rounds 3
    python benchmarks/bench_image_folder.py --small --rounds 1 --results /tmp/results.md   # seconds, for tests
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
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

HERE = Path(__file__).resolve().parent
SECTION = "## Image folders: `bench_image_folder.py`"
TARGETS = {"cnnlab cache": 3.0, "cnnlab per-sample": 1.5}
FOLDER_VERSION = 1
# Every run's training process computes on one thread. With two DataLoader workers on two cores, a second
# intra-op thread has no core of its own: torch's OpenMP threads then spin at every barrier while a worker holds
# the other core, and on a loaded machine LeNet-5's step cost 30x more CPU on two threads than on one (measured:
# ~5,000 vs ~160 µs an image). The same setting for every path, so that the data paths, not the thread
# contention, decide the figures.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Folder:
    train: int
    val: int
    size: int = 96
    classes: int = 10
    seed: int = 0

    def describe(self) -> dict:
        return {"version": FOLDER_VERSION, "train": self.train, "val": self.val, "size": self.size,
                "classes": self.classes, "seed": self.seed}


def _image(rng: np.random.Generator, label: int, folder: Folder, grid: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    yy, xx = grid
    hue = 2 * np.pi * label / folder.classes
    colour = 0.5 + 0.45 * np.cos(hue + np.array([0.0, 2.1, 4.2]))
    angle = np.pi * label / folder.classes + rng.normal(0, 0.08)
    frequency = rng.uniform(3, 6)
    centre = rng.uniform(-0.2, 0.2, size=2)
    phase = 2 * np.pi * frequency * ((xx - centre[0]) * np.cos(angle) + (yy - centre[1]) * np.sin(angle))
    stripes = (0.5 + 0.5 * np.sin(phase + rng.uniform(0, 2 * np.pi)))[..., None]
    background = rng.uniform(0.1, 0.9, size=3)
    image = stripes * colour + (1 - stripes) * background + rng.normal(0, 0.06, size=(*xx.shape, 3))
    return (image.clip(0, 1) * 255).astype(np.uint8)


def write_folder(root: Path, folder: Folder) -> Path:
    """The benchmark's JPEG folder in ``root`` (written once; reused while its description matches)."""
    from PIL import Image
    from tqdm.auto import tqdm

    marker = root / "folder.json"
    if marker.is_file() and json.loads(marker.read_text()) == folder.describe():
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(folder.seed)
    grid = np.mgrid[0:folder.size, 0:folder.size] / folder.size - 0.5
    with tqdm(total=folder.train + folder.val, desc="writing the JPEG folder", unit="image") as bar:
        for split, count in (("train", folder.train), ("val", folder.val)):
            for c in range(folder.classes):
                (root / split / f"class_{c:02d}").mkdir(parents=True, exist_ok=True)
            for i in range(count):
                label = i % folder.classes
                Image.fromarray(_image(rng, label, folder, (grid[0], grid[1]))).save(
                    root / split / f"class_{label:02d}" / f"{i:06d}.jpg", quality=90)
                bar.update()
    marker.write_text(json.dumps(folder.describe()))
    return root


def _tree_pss_kib(pid: int) -> int:
    """The summed proportional set size (PSS) of ``pid`` and its descendants (DataLoader and cache-building
    workers), from /proc: forked workers share most of their pages with the trainer, and PSS counts a shared
    page once in all, where summing RSS would count it once per process."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent and p not in tree]
        tree.update(children)
        frontier += children
    total = 0
    for p in tree:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return total


def measure(command: list[str], cwd: Path) -> dict:
    """Run ``command`` to the end: wall time, CPU time of the process and its workers (from wait4: user + system,
    what the run costs whatever else the machine runs), peak RSS (largest process, from wait4; process tree,
    sampled), the 1-minute load average at its start and the per-epoch training images/s it reports (a JSON line,
    or a cnnlab run dir's results.json)."""
    load, stamp = os.getloadavg()[0], time.time()
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(command, cwd=cwd, env=ONE_THREAD, stdout=subprocess.PIPE, stderr=stderr, text=True)
        peak_tree = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.2):
                peak_tree[0] = max(peak_tree[0], _tree_pss_kib(process.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        stdout = process.stdout.read()  # type: ignore[union-attr]
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        done.set()
        sampler.join()
        if os.waitstatus_to_exitcode(status) != 0:
            stderr.seek(0)
            raise SystemExit(f"failed: {' '.join(command)}\n{stderr.read()[-3000:]}")
    last = stdout.strip().splitlines()[-1]
    if last.startswith("{"):
        report = json.loads(last)
        per_epoch, accuracy = report["epoch_images_per_s"], report["test/acc"]
    else:
        results = json.loads(Path(last, "results.json").read_text())
        per_epoch = [row["train_images_per_s"] for row in results["history"]]
        accuracy = results["test/acc"]
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "load": load, "started": stamp,
            "rss_mib": usage.ru_maxrss / 1024, "tree_pss_mib": peak_tree[0] / 1024,
            "epoch1": per_epoch[0], "later": statistics.mean(per_epoch[1:]) if len(per_epoch) > 1 else per_epoch[0],
            "test_acc": accuracy}


def commands(root: Path, work: Path, epochs: int) -> dict[str, list[str] | None]:
    cnnlab_args = ["train", "data=imagefolder", f"data.root={root}", "data.image_size=64", "data.num_workers=2",
                   "data.batch_size=64", "model=lenet5", "optimizer=adam", "scheduler=cosine", "augmentation=none",
                   "+augmentation.horizontal_flip.p=0.5", f"trainer.max_epochs={epochs}",
                   "trainer.enable_model_summary=false"]
    cnnlab = [sys.executable, "-m", "cnnlab", *cnnlab_args]
    return {
        "baseline": [sys.executable, str(HERE / "folder_loop.py"), "--root", str(root), "--image-size", "64",
                     "--epochs", str(epochs), "--workers", "2", "--batch-size", "64"],
        "cnnlab before": [sys.executable, str(HERE / "pil_folder_pipeline.py"), *cnnlab_args, "data.cache=off"],
        "cnnlab per-sample": [*cnnlab, "data.cache=off"],
        "cnnlab cache": [*cnnlab, "data.cache=memory"],  # cache_dir: a fresh one per round, added in run()
    }


def run(root: Path, work: Path, epochs: int, rounds: int) -> Iterator[tuple[dict[str, list[dict]], dict]]:
    """After each round: every run so far, and the machine's load (the results so far survive a long run cut
    short)."""
    planned = commands(root, work, epochs)
    runs: dict[str, list[dict]] = {name: [] for name in planned}
    names = list(planned)
    load_before = os.getloadavg()
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            command = list(planned[name])  # type: ignore[arg-type]
            if name == "cnnlab cache":
                cache_dir = work / f"cache-{r}"
                shutil.rmtree(cache_dir, ignore_errors=True)
                command.append(f"data.cache_dir={cache_dir}")
            result = measure(command, work)
            runs[name].append(result)
            print(f"round {r + 1}/{rounds} {name:18s} epoch 1 {result['epoch1']:8.0f} images/s, "
                  f"later {result['later']:8.0f} images/s, wall {result['wall_s']:6.1f} s, "
                  f"CPU {result['cpu_s']:6.1f} s, load {result['load']:5.1f}, "
                  f"RSS {result['rss_mib']:6.0f} MiB, tree PSS {result['tree_pss_mib']:6.0f} MiB", file=sys.stderr)
        yield runs, {"cores": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg()}


def ratios(runs: dict[str, list[dict]]) -> dict[str, float]:
    """Per path: the median over rounds of (its images/s from epoch 2 on) / (the baseline's, same round)."""
    base = runs["baseline"]
    return {name: statistics.median(r["later"] / b["later"] for r, b in zip(results, base))
            for name, results in runs.items() if name != "baseline"}


def _per_image_us(work: Callable[[Any], object], files: Sequence[Any], repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for path in files:
            work(path)
        best = min(best, (time.perf_counter() - started) / len(files) * 1e6)
    return best


def where_the_time_goes(root: Path, count: int = 300) -> list[tuple[str, float]]:
    """Per training image, in one thread (as in a DataLoader worker): each path's CPU work, and the network's
    own training step, in µs. Best of 3 passes over ``count`` files of the folder."""
    import torch
    from PIL import Image
    from torchvision import transforms as v1
    from torchvision.transforms import v2
    from torchvision.transforms.v2 import functional as TF

    from cnnlab.data.batch_augment import BatchPipeline
    from cnnlab.data.decode import read_image_file
    from cnnlab.data.sample_path import TrainSample, random_box, resized_crop
    from cnnlab.models.lenet5 import ModernLeNet5

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    files = sorted(str(p) for p in (root / "train").glob("*/*.jpg"))[:count]
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

    def pil(path: str) -> Image.Image:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")

    template = v1.Compose([v1.RandomResizedCrop(64), v1.RandomHorizontalFlip(), v1.ToTensor(), v1.Normalize(mean, std)])
    objects = v2.Compose([v2.ToImage(), v2.RandomResizedCrop(64, antialias=True), v2.RandomHorizontalFlip(),
                          v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    crop = TrainSample(64, {}, flips=[(-1, 0.5)])  # the flip comes first among the batched ones: in the worker
    normalise = BatchPipeline({}, mean, std)
    crops = [crop(read_image_file(path, 3)) for path in files[:64]]

    def per_batch_image_us(work: Callable[[], object], repeats: int = 20) -> float:
        work()
        started = time.perf_counter()
        for _ in range(repeats):
            work()
        return (time.perf_counter() - started) / repeats / 64 * 1e6

    batch = torch.stack(crops)  # the workers' default collate stacks it
    collate_us = per_batch_image_us(lambda: normalise(batch, train=True))
    # the folder cache's training batch: 64 stored squares (64 / 0.875 = 73 px) cropped, flipped, normalised
    stored = torch.stack([TF.resize(read_image_file(path, 3), [73], antialias=True)[..., :73, :73]
                          for path in files[:64]])
    cache_batch = BatchPipeline({"horizontal_flip": {"p": 0.5}}, mean, std, crop=64)
    decoded = [read_image_file(path, 3) for path in files]
    rows = [
        ("PIL: open + convert to RGB (the decode of the baseline and of cnnlab before)", _per_image_us(pil, files)),
        ("torchvision.io.decode_image (cnnlab's decode now)", _per_image_us(lambda p: read_image_file(p, 3), files)),
        ("baseline: PIL + v1 RandomResizedCrop, flip, ToTensor, Normalize",
         _per_image_us(lambda p: template(pil(p)), files)),
        ("cnnlab before: PIL + v2.Compose(ToImage, RandomResizedCrop, flip, ToDtype, Normalize)",
         _per_image_us(lambda p: objects(pil(p)), files)),
        ("decode_image + the same v2.Compose of Transform objects",
         _per_image_us(lambda p: objects(read_image_file(p, 3)), files)),
        ("cnnlab per-sample now: read + decode_image + random-resized crop + flip (uint8)",
         _per_image_us(lambda p: crop(read_image_file(p, 3)), files)),
        ("  of which the crop box: cnnlab's random_box (torchvision's get_params: next row)",
         _per_image_us(lambda i: random_box(96, 96), range(len(files)))),
        ("  torchvision's RandomResizedCrop.get_params",
         _per_image_us(lambda i: v1.RandomResizedCrop.get_params(decoded[i], [0.08, 1.0], [3 / 4, 4 / 3]),
                       range(len(files)))),
        ("  of which the crop and resize: cnnlab's resized_crop (torchvision's resized_crop_image: next row)",
         _per_image_us(lambda i: resized_crop(decoded[i], (10, 12, 60, 70), 64), range(len(files)))),
        ("  torchvision's resized_crop_image",
         _per_image_us(lambda i: TF.resized_crop_image(decoded[i], 10, 12, 60, 70, [64, 64], antialias=True),
                       range(len(files)))),
        ("  + the batch's normalisation, in the training process, per image", collate_us),
        ("cnnlab cache: batched random-resized crop + flip + normalise of 73-px squares (batch 64), per image",
         per_batch_image_us(lambda: cache_batch(stored, train=True))),
    ]
    model = ModernLeNet5(3, 10, 64)
    optimizer = torch.optim.Adam(model.parameters())
    images, labels = torch.randn(64, 3, 64, 64), torch.randint(0, 10, (64,))

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    rows.append(("LeNet-5 at 64 px: forward, backward and Adam step (batch 64), per image",
                 per_batch_image_us(step)))
    rows.append(("the per-sample path's training process: a uint8 batch received from 2 workers, per image",
                 _receive_us(torch.uint8)))
    rows.append(("  the same for a float batch (what the workers handed over before)", _receive_us(torch.float32)))
    if threads > 1:  # the cache path on cnnlab's own choice: every core (it has no workers)
        torch.set_num_threads(threads)
        rows.append((f"LeNet-5's step on {threads} threads (the cache path's choice), per image",
                     per_batch_image_us(step)))
        rows.append((f"cnnlab cache: batched crop + flip + normalise on {threads} threads, per image",
                     per_batch_image_us(lambda: cache_batch(stored, train=True))))
    torch.set_num_threads(threads)
    return rows


class _Batch:
    """A collate function that makes 64 × 3 × 64 × 64 batches of ``dtype`` (a class: workers may pickle it)."""

    def __init__(self, dtype: object) -> None:
        self.dtype = dtype

    def __call__(self, indices: list[int]) -> tuple:
        import torch

        return torch.ones(len(indices), 3, 64, 64, dtype=self.dtype), torch.tensor(indices)


def _receive_us(dtype: object, batches: int = 150) -> float:
    """CPU time the training process spends per image taking 64-image batches of ``dtype`` out of 2 workers'
    queue and touching each of their pages: shared-memory handles, mapping and page faults — work that runs
    beside the network's step on the same core."""
    import torch
    from torch.utils.data import DataLoader

    loader = DataLoader(range(64 * (batches + 1)), batch_size=64, num_workers=2, collate_fn=_Batch(dtype),
                        prefetch_factor=4)
    batch_iter = iter(loader)
    next(batch_iter)
    started = time.process_time()
    count = 0
    for images, _ in batch_iter:
        images.flatten().view(torch.uint8)[::4096].sum()  # a byte a page: the page faults, not a sum's cost
        count += len(images)
    return (time.process_time() - started) / count * 1e6


def report(runs: dict[str, list[dict]], machine: dict, folder: Folder, epochs: int, rounds: tuple[int, int],
           costs: list[tuple[str, float]], files: int) -> str:
    """The Markdown section: medians over the ``rounds[0]`` rounds done of ``rounds[1]``, ratios, per-image costs."""
    import torch
    import torchvision

    median = {name: {key: statistics.median(r[key] for r in results) for key in results[0]}
              for name, results in runs.items()}
    found = ratios(runs)
    lines = [
        SECTION, "",
        f"Date: {time.strftime('%Y-%m-%d')}. {machine['cores']} CPU cores, no GPU; torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}. Load average (1, 5, 15 min) before: "
        f"{', '.join(f'{v:.2f}' for v in machine['load_before'])}; after: "
        f"{', '.join(f'{v:.2f}' for v in machine['load_after'])}. Command: "
        f"`python benchmarks/bench_image_folder.py --rounds {rounds[1]}`"
        + (" `--small`" if folder.train < 20_000 else "")
        + ("" if rounds[0] == rounds[1] else f" (cut short: {rounds[0]} of {rounds[1]} rounds done)") + ".",
        "",
        f"{folder.train:,} training + {folder.val:,} validation JPEGs, {folder.size}×{folder.size}, "
        f"{folder.classes} classes; modern LeNet-5 at 64 px, batch 64, {epochs} epochs, 2 DataLoader workers; "
        f"{rounds[0]} round{'s' if rounds[0] > 1 else ''} in rotating order, medians.",
        "",
        "| path | train images/s, epoch 1 | from epoch 2 | wall | CPU time (process tree) | peak RSS (largest "
        "process) | peak PSS (process tree) | test top-1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in median.items():
        lines.append(f"| {name} | {m['epoch1']:,.0f} | {m['later']:,.0f} | {m['wall_s']:.1f} s | {m['cpu_s']:.1f} s | "
                     f"{m['rss_mib']:,.0f} MiB | {m['tree_pss_mib']:,.0f} MiB | {m['test_acc']:.3f} |")
    lines += ["", "| ratio to the baseline, training images/s from epoch 2 on | measured | target | |",
              "|---|---|---|---|"]
    for name, value in found.items():
        target = TARGETS.get(name)
        verdict = "" if target is None else ("met" if value >= target else "**not met**")
        lines.append(f"| {name} / baseline | {value:.2f} | {f'≥ {target}' if target else '(no target)'} | "
                     f"{verdict} |")
    lines += ["", "| CPU time of the whole run (start, data, 2 epochs, validation, test), baseline / path | measured |",
              "|---|---|"]
    for name, results in runs.items():
        if name != "baseline":
            value = statistics.median(b["cpu_s"] / r["cpu_s"] for r, b in zip(results, runs["baseline"]))
            lines.append(f"| baseline / {name} | {value:.2f} |")
    lines += ["", "Every run, in the order run (1-minute load average at its start; 2 cores):", ""]
    order = sorted(((r, name) for name, results in runs.items() for r in range(len(results))),
                   key=lambda item: runs[item[1]][item[0]]["started"])
    lines += [f"- round {r + 1}, {name}: {runs[name][r]['later']:,.0f} images/s from epoch 2, "
              f"{runs[name][r]['wall_s']:.0f} s wall, {runs[name][r]['cpu_s']:.0f} s CPU, load "
              f"{runs[name][r]['load']:.1f}" for r, name in order]
    lines += ["", "Where the time goes, per training image (one thread, as in a DataLoader worker; best of 3 passes "
              f"over {files} files):", "", "| work | µs / image |", "|---|---|"]
    lines += [f"| {what} | {us:.0f} |" for what, us in costs]
    return "\n".join(lines) + "\n"


def write_section(path: Path, section: str, heading: str = SECTION) -> None:
    """Put ``section`` (starting with ``heading``) into ``path`` in place of its previous version (appended the
    first time)."""
    text = path.read_text() if path.is_file() else "# Benchmark results\n"
    start = text.find(heading)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(heading))
        rest = text[end + 1:] if end >= 0 else ""
        text = text[:start] + section + ("\n" + rest if rest else "")
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--small", action="store_true", help="500 + 100 images: a check that every path runs")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "cnnlab-bench-image-folder"),
                        help="where the folder, caches and run dirs go (the folder is reused)")
    parser.add_argument("--results", default=str(HERE / "RESULTS.md"), help="the Markdown file to write into")
    args = parser.parse_args()
    folder = Folder(500, 100) if args.small else Folder(20_000, 2_000)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    root = write_folder(work / ("folder-small" if args.small else "folder"), folder)
    files = 60 if args.small else 300
    costs = where_the_time_goes(root, files)
    for done, (runs, machine) in enumerate(run(root, work, args.epochs, args.rounds), start=1):
        section = report(runs, machine, folder, args.epochs, (done, args.rounds), costs, files)
        write_section(Path(args.results), section)
    print(section)


if __name__ == "__main__":
    main()
