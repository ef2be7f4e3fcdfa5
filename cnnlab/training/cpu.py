"""Process settings for a run that trains on the CPU, applied once the Trainer has chosen its accelerator.

Each undoes a default that costs a CPU run time on every step and buys it nothing; a run on a GPU keeps them.
"""

from __future__ import annotations

import ctypes
import logging
import os

import lightning.pytorch as pl
import torch
from lightning.pytorch.accelerators import CPUAccelerator

log = logging.getLogger(__name__)

# glibc's mallopt() parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's upper limit on 64-bit systems
TRIM_THRESHOLD = 256 << 20
# Set by a user who tunes the allocator themselves (or preloads jemalloc/tcmalloc): theirs wins.
_ALLOCATOR_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD")


def stop_probing_nvml() -> None:
    """Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 at import, so that looking for GPUs never initialises CUDA
    (forked DDP workers could not use it then). torch then asks NVML again on every ``torch.cuda.is_available()``
    until CUDA is initialised, and optimizers call that on every step: ~30 µs each, a few percent of a small
    network's step. A run that trains on the CPU never initialises CUDA, so it gets torch's cached answer instead.
    """
    os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)


def reuse_freed_memory() -> bool:
    """Keep memory that tensors free in the process, for the next step's tensors; True if glibc took the setting.

    glibc's malloc gives each block over a threshold (128 KiB at first, raised as such blocks are freed) fresh
    pages from the OS, and hands them back when the block is freed. A training step's activations and gradients
    are such blocks, so on every step the kernel zeroes new pages for them and the memory-bound kernels (ReLU
    and max-pool backward, fills) run at page-fault speed: 8.0 ms instead of 6.5 ms per LeNet-5 step on MNIST in
    NHWC layout, here. Serving blocks below 32 MiB from the heap, and trimming its free top only past 256 MiB,
    recycles warm pages instead; PyTorch's CPU performance guide gets the same by preloading jemalloc or
    tcmalloc.
    """
    if any(name in os.environ for name in _ALLOCATOR_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter is linked against
    except (OSError, AttributeError, TypeError):  # no mallopt (macOS, Windows): a different allocator
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


# Set by a user who chose the thread count themselves: theirs wins.
_THREAD_SETTINGS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
_torch_default_threads: int | None = None  # torch's own count, seen before this module first changed it


def leave_cores_to_workers(workers: int) -> int:
    """Compute on the cores that DataLoader workers leave free: torch's default thread count less ``workers``,
    at least 1; all of them without workers. Returns the count the run computes on.

    torch starts one intra-op (OpenMP) thread per core whatever else runs. Beside busy workers its threads
    have no cores of their own, and OpenMP threads spin at every barrier while a worker holds the core they
    wait for: on 2 cores with 2 workers, LeNet-5 on a JPEG folder trained 1.7x slower on torch's 2 threads than
    on 1 on an idle machine, 1.8-4.9x with other jobs on it (benchmarks/RESULTS.md, image folders). A run
    without workers (the in-memory and folder-cache paths) keeps every core — also after a run with workers in
    the same process (a sweep's trials). ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` set by the user are left alone.
    """
    global _torch_default_threads
    if any(name in os.environ for name in _THREAD_SETTINGS):
        return torch.get_num_threads()
    if _torch_default_threads is None:
        _torch_default_threads = torch.get_num_threads()
    cores = _torch_default_threads
    threads = max(1, cores - workers) if workers > 0 else cores
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    if threads != cores:
        log.info("%d DataLoader worker%s beside the training on %d cores: torch computes on %d thread%s "
                 "(OMP_NUM_THREADS overrides)", workers, "" if workers == 1 else "s", cores, threads,
                 "" if threads == 1 else "s")
    return threads


def tune_for_cpu(trainer: pl.Trainer, workers: int = 0) -> None:
    """Apply this module's settings when ``trainer`` trains on the CPU; ``workers``: the DataLoader worker
    processes that feed it (0 on the in-memory paths)."""
    if isinstance(trainer.accelerator, CPUAccelerator):
        stop_probing_nvml()
        reuse_freed_memory()
        if trainer.num_devices == 1:  # several CPU processes (DDP): their launcher sets the threads
            leave_cores_to_workers(workers)
