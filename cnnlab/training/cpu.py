"""Process settings for a run that trains on the CPU, applied once the Trainer has chosen its accelerator.

Both undo a default that costs a CPU run time on every step and buys it nothing; a run on a GPU keeps them.
"""

from __future__ import annotations

import ctypes
import os

import lightning.pytorch as pl
from lightning.pytorch.accelerators import CPUAccelerator

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


def tune_for_cpu(trainer: pl.Trainer) -> None:
    """Apply this module's settings when ``trainer`` trains on the CPU."""
    if isinstance(trainer.accelerator, CPUAccelerator):
        stop_probing_nvml()
        reuse_freed_memory()
