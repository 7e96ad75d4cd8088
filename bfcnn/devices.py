"""Which torch device a run, a denoise or an explain uses: `auto`, `cpu`, `cuda` or `cuda:N`."""

from __future__ import annotations

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
