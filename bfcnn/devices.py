"""Which torch device a run, a denoise or an explain uses (`auto`, `cpu`, `cuda` or `cuda:N`), and how the
process treats host memory."""

from __future__ import annotations

import ctypes
import os

import torch

from .errors import BfcnnError


def resolve_device(name="auto", local_rank=0) -> torch.device:
    """`auto` is CUDA where there is one; a plain `cuda` under torchrun means this process's GPU (LOCAL_RANK).
    A device this machine does not have is bad input (exit 2), said before any work starts."""
    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise BfcnnError(f"device {name!r} is not a device ({error})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BfcnnError(f"device {name!r}: CUDA is not available on this machine; use cpu or auto")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index >= torch.cuda.device_count():
            raise BfcnnError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    return device


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MALLOC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse; every bfcnn command does this first. By default it
    gives each large freed block back to the kernel and trims the heap, so every step's activations (tens of MB
    for a whole image) are mapped and paged in afresh: on dev-2core the kernel's share was a third of training's
    CPU time and made evaluation 1.8x slower. Blocks up to 32 MB (glibc's ceiling for this setting) now come
    from the heap, which is trimmed only past 1 GB of free space. False, and nothing changed, off glibc or
    where the user set MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_ (their choice wins)."""
    if any(name in os.environ for name in MALLOC_VARIABLES):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))
