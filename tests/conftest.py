import os
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
needs_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent")


@pytest.fixture(autouse=True)
def _few_threads():
    import torch

    torch.set_num_threads(1)  # tests use tiny tensors: one thread avoids contention overhead


@pytest.fixture
def tiny_config():
    """A complete, valid config that trains a tiny model for a few steps on the bundled sample photos."""
    return {
        "seed": 0,
        "device": "cpu",
        "model": {"type": "dncnn", "channels": 3, "depth": 3, "filters": 4},
        "noise": {"type": "additive_gaussian", "sigma_range": [0, 50]},
        "dataset": {"type": "sample_images", "batch_size": 2, "input_shape": [16, 16, 3]},
        "loss": {"type": "mse"},
        "train": {"total_steps": 3, "checkpoint_every": 2, "optimizer": {"type": "adam", "learning_rate": 0.001}},
    }
