"""Helpers shared by the training tests: a tiny config (1-channel 3-layer DnCNN, 16x16 crops) and a
one-thread torch, so the tests stay fast on a busy 2-core machine."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "seed": 3,
    "device": "cpu",
    "model": {"type": "dncnn", "channels": 1, "depth": 3, "filters": 4},
    "noise": {"type": "additive_gaussian", "sigma_range": [5, 50]},
    "dataset": {"type": "sample_images", "color_mode": "grayscale", "batch_size": 2, "input_shape": [16, 16, 1]},
    "loss": {"type": "mse"},
    "train": {"total_steps": 4, "checkpoint_every": 2, "checkpoints_to_keep": 2, "validation_crop": 24,
              "validation_sigmas": [25], "log_every": 1, "tensorboard": False, "progress": False,
              "visualization_number": 0, "prefetch": 2,
              "optimizer": {"type": "adam", "learning_rate": 0.01}},
}


def tiny(**train):
    config = copy.deepcopy(TINY)
    config["train"].update(train)
    return config


def env():
    """Environment for subprocesses: this worktree's package first, one thread, no network checks."""
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1", "BFCNN_DISABLE_PLUGIN_AUTOLOAD": "1"}


PYTHON = sys.executable


class one_thread:
    def __enter__(self):
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)
