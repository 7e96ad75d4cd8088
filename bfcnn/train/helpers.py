"""Pieces of a training run around the trainer: the original project's helpers (the model applied k times to its
own output, the noisy | denoised | clean grid, centre crops), the Ctrl-C / SIGTERM handling and metrics.jsonl
trimming on resume."""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path

import torch

from ..checkpoint import write_text_atomic

log = logging.getLogger("bfcnn")

class Iterated(torch.nn.Module):
    """The model applied k times to its own output (the seed's iterations_choice), as one module so that
    DistributedDataParallel and torch.compile see a single forward."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, k: int = 1):
        for _ in range(k):
            x = self.net(x)
        return x


def center_crop(image, size):
    if not size:
        return image
    h, w = image.shape[-2:]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return image[..., top:top + size, left:left + size]


def image_grid(noisy, denoised, clean):
    """One C x H x W image: a row per image, noisy | denoised | clean side by side, clamped to [0, 1]."""
    rows = [torch.cat([noisy[i], denoised[i], clean[i]], dim=-1) for i in range(noisy.shape[0])]
    grid = torch.cat(rows, dim=-2).float().clamp(0, 1)
    return grid.expand(3, -1, -1) if grid.shape[0] == 1 else grid[:3]


class InterruptFlag:
    """SIGINT/SIGTERM set a flag (the loop saves a checkpoint and stops); a second SIGINT interrupts at once."""

    def __init__(self):
        self.is_set, self.previous = False, {}

    def handle(self, signum, frame):
        if self.is_set and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.is_set = True
        log.warning("stopping after this step (signal %d): a checkpoint is being saved", signum)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


def trim_jsonl(path: Path, step):
    """Keep the complete lines of metrics.jsonl up to `step` (a resumed run rewrites what came after)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("step", 0) <= step:
            kept.append(line)
    write_text_atomic(path, "".join(line + "\n" for line in kept))

