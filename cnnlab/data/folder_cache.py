"""Image folders decoded once into a compact uint8 file, so that training reads them at in-memory tensor speed.

What FFCV and DALI do for large datasets, kept to what an image folder on one machine needs: every image of a
split is decoded once (``torchvision.io``), resized so that its *shorter side* is the storage size
(``data.cache_size``, by default the training crop's side / 0.875) and cut to the square of that side around
its centre, and written as one row of a raw ``(N, C, S, S)`` uint8 file. Training then cuts random-resized
crops of the model's input size out of those squares, per sample and batched on the device (``batch_augment``),
and evaluation takes their centre crop: pixel for pixel the per-sample path's ``Resize(size / 0.875)`` +
``CenterCrop(size)`` (tested). The price of the square storage: a training crop never reaches the parts of a
non-square image outside its centre square (the per-sample path's ``RandomResizedCrop`` can).

The file is keyed like the small datasets' cache (``tensor_path``): the folder, every file's relative path,
label, size and modification time, the storage size, the crop size, the channels and :data:`FORMAT_VERSION`. A folder changed
since the cache was built (a file added, removed or rewritten) gets a new key, so it is decoded again and the
stale copy removed. The build runs in worker processes, one shard of :data:`SHARD_IMAGES` images each, written
in place into a preallocated ``images.u8.partial``; a shard counts as done only once its marker file is
renamed into place after its rows are written, so an interrupted build (Ctrl-C, a killed job) resumes with the
shards it had not finished, and readers never see a partial file under the final name.

``torch.from_file`` maps the finished file into memory rather than reading it: opening a cache costs no
decode and no copy, and the operating system's page cache keeps it between runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from cnnlab.data.decode import read_image_file
from cnnlab.data.tensor_path import ImageTensors
from cnnlab.errors import CorruptImageError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the stored layout or the resize changes: older caches are rebuilt, not misread
SHARD_IMAGES = 256  # images per unit of work: small enough to resume cheaply, large enough to amortise a task
EVAL_RATIO = 0.875  # the per-sample path evaluates on centre crops of the size / 0.875 resize (ImageNet's 224/256)


def storage_size(spec: Mapping[str, Any]) -> int:
    """The side of the stored squares: ``data.cache_size``, or the training crop's side / 0.875."""
    return int(spec.get("cache_size") or round(spec["image_size"] / EVAL_RATIO))


@dataclass(frozen=True)
class FolderListing:
    """One split's image files as torchvision's ``ImageFolder`` lists them (so labels and order are the same
    as the per-sample path's), with each file's size and modification time."""

    folder: Path
    classes: list[str]
    paths: list[str]
    labels: list[int]
    stats: list[tuple[int, int]]  # (bytes, modification time in ns) per file

    @classmethod
    def of(cls, dataset: Any) -> "FolderListing":
        """The listing of a torchvision ``ImageFolder`` (its ``root``, ``classes`` and ``samples``)."""
        paths = [path for path, _ in dataset.samples]
        stats = []
        for path in paths:
            st = os.stat(path)
            stats.append((st.st_size, st.st_mtime_ns))
        return cls(Path(dataset.root).resolve(), list(dataset.classes), paths,
                   [label for _, label in dataset.samples], stats)

    def __len__(self) -> int:
        return len(self.paths)

    def relative(self) -> list[str]:
        # ImageFolder joins its root and each file's name, so cutting the root's prefix gives what relpath
        # would, at a tenth of its cost (relpath normalises both paths: ~0.1 s a run on 22,000 files).
        prefix = os.path.join(str(self.folder), "")
        return [p[len(prefix):] if p.startswith(prefix) else os.path.relpath(p, self.folder) for p in self.paths]

    def entries(self) -> list[tuple[str, int, int, int]]:
        """(relative path, label, bytes, mtime ns) per file: what the key covers and what a rebuild compares."""
        return [(rel, label, size, mtime) for rel, label, (size, mtime) in zip(self.relative(), self.labels,
                                                                                self.stats)]


@dataclass(frozen=True)
class CacheLayout:
    """Where one split's cache lives and the shape of its rows."""

    directory: Path
    count: int
    channels: int
    size: int
    crop: int | None = None  # the evaluation crop the squares are aligned to (see ``square``)

    @property
    def row_bytes(self) -> int:
        return self.channels * self.size * self.size

    @property
    def images_file(self) -> Path:
        return self.directory / "images.u8"

    @property
    def partial_file(self) -> Path:
        return self.directory / "images.u8.partial"

    @property
    def index_file(self) -> Path:
        return self.directory / "index.json"

    @property
    def shard_dir(self) -> Path:
        return self.directory / "shards"

    def marker(self, shard: int) -> Path:
        return self.shard_dir / f"{shard:06d}.done"

    def shards(self) -> list[range]:
        return [range(start, min(start + SHARD_IMAGES, self.count)) for start in range(0, self.count, SHARD_IMAGES)]


def cache_directory(cache_dir: str | Path, name: str, split: str, listing: FolderListing, size: int,
                    channels: int, crop: int) -> Path:
    """``<cache_dir>/<name>-<split>-<S>px-<folder key>-<listing key>``: the folder key groups the caches of one
    folder (so stale ones can be removed), the listing key changes whenever a file does."""
    folder_key = hashlib.sha1(str(listing.folder).encode()).hexdigest()[:8]
    listing_key = hashlib.sha1(repr((FORMAT_VERSION, size, channels, crop, listing.classes, listing.entries()))
                               .encode()).hexdigest()[:12]
    root = Path(os.path.expanduser(str(cache_dir)))
    return root / f"{name}-{split}-{size}px-{folder_key}-{listing_key}"


def decoded_bytes(count: int, channels: int, size: int) -> int:
    return count * channels * size * size


def available_memory() -> int:
    """Bytes of memory this process can use without swapping: Linux's MemAvailable, capped by a container's
    limit (cgroup v2 ``memory.max``, less what the container uses); total physical memory elsewhere."""
    available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit.isdigit():
            available = min(available, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(available, 0)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB") else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def choose(spec: Mapping[str, Any], unbatched: Sequence[str], count: Callable[[], int]) -> tuple[bool, str]:
    """Whether a folder dataset trains from its cache, and why, in words for the log. ``unbatched``: the
    configured augmentations without a batched version; ``count``: the number of images of both splits (called
    only when the choice depends on it: it lists the folders)."""
    mode = spec.get("cache", "off")
    if spec["pipeline"] == "loader" or mode == "off":
        setting = "data.pipeline=loader" if spec["pipeline"] == "loader" else "data.cache=off"
        return False, f"{setting}: the per-sample DataLoader path decodes every image every epoch"
    if unbatched:
        return False, (f"{', '.join(unbatched)} has no batched version, so the images go through the per-sample "
                       f"DataLoader path instead of data.cache={mode}")
    size, channels, count_ = storage_size(spec), spec["channels"], count()
    needed = decoded_bytes(count_, channels, size)
    what = f"{count_:,} images at {size}×{size} px, {human_bytes(needed)}"
    if mode == "memory" or spec["pipeline"] == "tensor":
        setting = "data.cache=memory" if mode == "memory" else "data.pipeline=tensor"
        return True, f"{setting}: training from the decoded cache ({what})"
    share = spec.get("cache_memory_fraction", 0.5)
    budget = share * available_memory()
    if needed <= budget:
        return True, (f"data.cache=auto: the decoded images ({what}) fit in {share:.0%} of the available memory "
                      f"({human_bytes(budget)}): training from the cache")
    return False, (f"data.cache=auto: the decoded images ({what}) need more than {share:.0%} of the available "
                   f"memory ({human_bytes(budget)}): the per-sample DataLoader path; data.cache=memory caches them "
                   f"anyway (data.cache_memory_fraction sets the share)")


class MappedRows(ImageTensors):
    """Rows ``rows`` of a memory-mapped cache, gathered a batch at a time (``take``) rather than copied whole.

    Splits of a folder cache are these, so that a set larger than memory still trains (from the page cache and
    the disk) and one that fits is held once, by the page cache, not again by a copy per split. ``images`` —
    what analyses read to go through a whole split — gathers the rows once, on first use.
    """

    def __init__(self, source: ImageTensors, rows: torch.Tensor) -> None:  # noqa: D107 (no dataclass fields)
        self.source, self.rows = source, rows.long()
        self._gathered: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"MappedRows({len(self)} of {len(self.source)} images {tuple(self.source.images.shape[1:])})"

    @property
    def device(self) -> torch.device:
        return self.source.images.device

    @property
    def images(self) -> torch.Tensor:  # type: ignore[override]
        if self._gathered is None:
            self._gathered = self.source.images.index_select(0, self.rows)
        return self._gathered

    @property
    def labels(self) -> torch.Tensor:  # type: ignore[override]
        return self.source.labels.index_select(0, self.rows)

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.rows.index_select(0, index.to(self.rows.device))
        return self.source.images.index_select(0, rows), self.source.labels.index_select(0, rows)

    def subset(self, indices: list[int] | torch.Tensor) -> "MappedRows":
        return MappedRows(self.source, self.rows.index_select(0, torch.as_tensor(indices, dtype=torch.long)))

    def resized(self, size: int) -> ImageTensors:
        if size == self.source.images.shape[-1]:
            return self
        return ImageTensors(self.images, self.labels).resized(size)


# --- decoding one shard (runs in a worker process) ----------------------------------------------------------------

def square(image: torch.Tensor, size: int, crop: int | None = None) -> torch.Tensor:
    """Shorter side resized to ``size`` (antialiased), then the ``size`` × ``size`` square around the centre.

    With ``crop``, the square sits where its own centre ``crop`` × ``crop`` window is exactly the per-sample
    path's evaluation crop (torchvision's ``center_crop`` of the resized image): two centre crops in a row can
    otherwise land a pixel away from one, as each rounds its offset.
    """
    image = TF.resize(image, [size], antialias=True)
    height, width = image.shape[-2:]
    if crop is None:
        return TF.center_crop(image, [size, size])
    inner = round((size - crop) / 2)
    top = min(max(round((height - crop) / 2) - inner, 0), height - size)
    left = min(max(round((width - crop) / 2) - inner, 0), width - size)
    return image[..., top:top + size, left:left + size]


def _decode_shard(partial: str, rows: range, paths: Sequence[str], size: int, crop: int | None, channels: int,
                  skip_bad: bool, marker: str) -> list[tuple[int, str, str]]:
    """Decode ``paths`` into rows ``rows`` of the partial file, then mark the shard done.

    Returns the files skipped as undecodable (row, path, reason); without ``skip_bad`` the first one raises.
    """
    row_bytes = channels * size * size
    block = np.zeros((len(rows), channels, size, size), dtype=np.uint8)
    bad: list[tuple[int, str, str]] = []
    for i, (row, path) in enumerate(zip(rows, paths)):
        try:
            block[i] = square(read_image_file(path, channels), size, crop).numpy()
        except CorruptImageError as err:
            if not skip_bad:
                raise
            bad.append((row, path, str(err)))
    fd = os.open(partial, os.O_WRONLY)
    try:
        os.pwrite(fd, block.tobytes(), rows.start * row_bytes)
    finally:
        os.close(fd)
    _write_atomically(Path(marker), json.dumps(bad))
    return bad


def _quiet_worker() -> None:
    # One thread per worker: the workers already use every core between them.
    torch.set_num_threads(1)


def _write_atomically(path: Path, text: str) -> None:
    # A name of this process's own, then a rename: a concurrent builder of the same cache (two sweep trials)
    # writes the same bytes, and a reader never sees half a file.
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    partial.write_text(text)
    partial.replace(path)


# --- building and opening a split's cache ---------------------------------------------------------------------------

def build(layout: CacheLayout, listing: FolderListing, workers: int, skip_bad: bool, desc: str) -> None:
    """Decode the shards not yet done into ``layout``'s partial file, then put the finished file in place."""
    from tqdm.auto import tqdm

    layout.shard_dir.mkdir(parents=True, exist_ok=True)
    expected = layout.count * layout.row_bytes
    if not layout.partial_file.exists() or layout.partial_file.stat().st_size != expected:
        with open(layout.partial_file, "wb") as f:
            f.truncate(expected)  # sparse: the disk fills as shards are written
        for stale in layout.shard_dir.glob("*.done"):
            stale.unlink()
    shards = layout.shards()
    todo = [i for i in range(len(shards)) if not layout.marker(i).exists()]
    if len(todo) < len(shards):
        log.info("Resuming the cache of %s: %d of %d shards were already decoded", listing.folder,
                 len(shards) - len(todo), len(shards))
    tasks = [(str(layout.partial_file), shards[i], listing.paths[shards[i].start:shards[i].stop], layout.size,
              layout.crop, layout.channels, skip_bad, str(layout.marker(i))) for i in todo]
    with tqdm(total=sum(len(shards[i]) for i in todo), desc=desc, unit="img", leave=False,
              dynamic_ncols=True) as progress:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                _decode_shard(*task)
                progress.update(len(task[1]))
        else:
            context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods()
                                                  else "spawn")
            with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=context,
                                     initializer=_quiet_worker) as pool:
                futures = {pool.submit(_decode_shard, *task): len(task[1]) for task in tasks}
                try:
                    for future in as_completed(futures):
                        future.result()  # a CorruptImageError from a worker stops the build here
                        progress.update(futures[future])
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
    bad = [entry for i in range(len(shards)) for entry in json.loads(layout.marker(i).read_text())]
    index = {"format": FORMAT_VERSION, "count": layout.count, "channels": layout.channels, "size": layout.size,
             "classes": listing.classes, "skipped": bad}
    try:
        layout.partial_file.replace(layout.images_file)
    except FileNotFoundError:  # another builder finished first (without flock: Windows)
        if not layout.images_file.exists():
            raise
    _write_atomically(layout.directory / "listing.json", json.dumps(listing.entries()))
    _write_atomically(layout.index_file, json.dumps(index))  # last: its presence means the cache is complete
    shutil.rmtree(layout.shard_dir, ignore_errors=True)


@contextmanager
def _building(directory: Path) -> Iterator[None]:
    """Hold ``directory``'s build lock (an advisory ``flock``, released if the process dies)."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no lock; concurrent builders write the same bytes
        yield
        return
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_index(layout: CacheLayout) -> dict[str, Any] | None:
    try:
        index = json.loads(layout.index_file.read_text())
    except (OSError, ValueError):
        return None
    complete = (index.get("format") == FORMAT_VERSION and index.get("count") == layout.count
                and layout.images_file.is_file()
                and layout.images_file.stat().st_size == layout.count * layout.row_bytes)
    return index if complete else None


def open_images(layout: CacheLayout) -> torch.Tensor:
    """The finished file as a ``(N, C, S, S)`` uint8 tensor, memory-mapped (copy-on-write: never written back)."""
    if layout.count == 0:
        return torch.empty(0, layout.channels, layout.size, layout.size, dtype=torch.uint8)
    flat = torch.from_file(str(layout.images_file), shared=False, size=layout.count * layout.row_bytes,
                           dtype=torch.uint8)
    return flat.view(layout.count, layout.channels, layout.size, layout.size)


def describe_change(directory: Path, listing: FolderListing) -> str | None:
    """What changed in the folder since its most recent other cache was built (None when there is none)."""
    older = sorted((d for d in stale_caches(directory)), key=lambda d: d.stat().st_mtime)
    for previous in reversed(older):
        try:
            entries = json.loads((previous / "listing.json").read_text())
        except (OSError, ValueError):
            continue
        before = {e[0]: tuple(e[1:]) for e in entries}
        now = {e[0]: tuple(e[1:]) for e in listing.entries()}
        added = len(now.keys() - before.keys())
        removed = len(before.keys() - now.keys())
        changed = sum(1 for k in now.keys() & before.keys() if now[k] != before[k])
        return f"{added} added, {removed} removed, {changed} changed"
    return None


def stale_caches(directory: Path) -> list[Path]:
    """The other caches of the same folder, split and storage size (built from an earlier state of it)."""
    prefix = directory.name.rsplit("-", 1)[0] + "-"
    return [d for d in directory.parent.glob(f"{prefix}*") if d.is_dir() and d != directory]


def skipped_message(folder: str | Path, paths: Sequence[str]) -> str:
    """The log's list of the files of ``folder`` that ``data.skip_bad_images=true`` left out."""
    listed = "\n".join(f"  {path}" for path in paths)
    return (f"Skipped {len(paths)} undecodable image{'s' if len(paths) > 1 else ''} of {folder} "
            f"(data.skip_bad_images=true):\n{listed}")


def load_or_build(spec: Mapping[str, Any], split: str, dataset: Any,
                  announce: bool = True) -> tuple[MappedRows, list[int]]:
    """Split ``split`` of the folder dataset ``dataset`` (an ``ImageFolder``) from its cache, built first when
    missing or out of date. Returns its images and labels (memory-mapped rows), and the rows of files skipped
    as undecodable (``data.skip_bad_images``): the caller lists them, once a run (:func:`skipped_message`).
    ``announce``: log that an existing cache is reused (a build is always announced)."""
    listing = FolderListing.of(dataset)
    size, channels = storage_size(spec), spec["channels"]
    crop = spec["image_size"]
    directory = cache_directory(spec["cache_dir"], spec["name"], split, listing, size, channels, crop)
    layout = CacheLayout(directory, len(listing), channels, size, crop)
    index = read_index(layout)
    if index is not None and announce:
        built = time.strftime("%Y-%m-%d %H:%M", time.localtime(layout.index_file.stat().st_mtime))
        log.info("Reusing the decoded cache %s (%d images at %d×%d px, built %s)", directory, layout.count, size,
                 size, built)
    if index is None:
        with _building(directory):  # concurrent runs on one folder (a sweep's trials): one builds, the rest wait
            index = read_index(layout)
            if index is None:
                change = describe_change(directory, listing)
                why = f"the folder changed since its cache was built ({change})" if change else "no cache yet"
                log.info("Decoding %s (%d images) once into %s: %s", listing.folder, len(listing), directory, why)
                build(layout, listing, spec.get("num_workers") or 0, bool(spec.get("skip_bad_images")),
                      desc=f"Caching {split} images")
                index = read_index(layout)
                assert index is not None, f"the cache {directory} was not completed"
                for stale in stale_caches(directory):
                    shutil.rmtree(stale, ignore_errors=True)
    skipped = index["skipped"]
    if skipped and not spec.get("skip_bad_images"):  # built by a run that skipped them; this one must not
        raise CorruptImageError(skipped[0][2])
    images = ImageTensors(open_images(layout), torch.tensor(listing.labels, dtype=torch.long))
    return MappedRows(images, torch.arange(len(listing))), [row for row, _, _ in skipped]
