"""Every shipped config validates, and the Python API runs a pipeline end to end."""

import pytest

import bfcnn
from conftest import REPO

CONFIGS = sorted(p for p in (REPO / "configs").iterdir() if p.suffix in (".yaml", ".yml", ".json"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_validates(path):
    if path.name == "extra_noises.yaml" and "poisson_gaussian" not in bfcnn.names("noise"):
        pytest.skip("needs the example plugin installed")
    config = bfcnn.load_config(path)
    assert "model" in config


def test_python_api_runs_and_loads_the_model(tmp_path, tiny_config):
    import torch

    summary = bfcnn.run(tiny_config, tmp_path / "run")
    assert summary["train"]["steps"] == tiny_config["train"]["total_steps"]
    model = bfcnn.load_model(tmp_path / "run")
    module = getattr(model, "module", model)
    assert isinstance(module, torch.nn.Module) and module.bias_free is True
