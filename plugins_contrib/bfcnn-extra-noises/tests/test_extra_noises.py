import pytest
import torch

import bfcnn


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def test_registered_by_this_plugin():
    from bfcnn.registry import default_registries

    for name in ("poisson_gaussian", "salt_and_pepper"):
        assert name in bfcnn.names("noise")
        assert default_registries()["noise"].get(name).plugin == "extra_noises"


def test_poisson_gaussian_variance_follows_the_signal():
    noise = bfcnn.build("noise", {"type": "poisson_gaussian", "gain": 0.02, "read_noise": 5})
    for level in (0.1, 0.8):
        x = torch.full((4, 3, 128, 128), level)
        residual = noise(x, generator()) - x
        expected = (0.02 * level + (5 / 255) ** 2) ** 0.5
        assert residual.std().item() == pytest.approx(expected, rel=0.02)
        assert abs(residual.mean().item()) < 0.01 * expected


def test_salt_and_pepper_fraction_and_values():
    noise = bfcnn.build("noise", {"type": "salt_and_pepper", "amount": 0.1})
    x = torch.full((2, 3, 200, 200), 0.5)
    y = noise(x, generator())
    changed = (y != x).float().mean().item()
    assert changed == pytest.approx(0.1, rel=0.05)
    assert set(torch.unique(y).tolist()) == {0.0, 0.5, 1.0}


def test_bad_params_are_rejected_by_the_schema():
    with pytest.raises(bfcnn.ConfigError, match="amount"):
        bfcnn.build("noise", {"type": "salt_and_pepper", "amount": 2})
