"""Discovery of a really pip-installed plugin (plugins_contrib/bfcnn-extra-noises; CI installs it)."""

import importlib.util
import os
import subprocess
import sys

import pytest

import bfcnn
from conftest import REPO

installed = importlib.util.find_spec("bfcnn_extra_noises") is not None
pytestmark = pytest.mark.skipif(not installed and not os.environ.get("CI"),
                                reason="pip install plugins_contrib/bfcnn-extra-noises to run these")


def test_entry_point_plugin_is_discovered():
    from bfcnn.registry import default_registries

    assert default_registries()["noise"].get("poisson_gaussian").plugin == "extra_noises"


def test_a_config_using_the_plugin_runs(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bfcnn", "run", "configs/extra_noises.yaml", "-o", str(tmp_path / "run"),
         "--set", "train.total_steps=2", "--set", "model.depth=3", "--set", "model.filters=4"],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_autoload_off_hides_the_plugin():
    code = "import bfcnn; print('poisson_gaussian' in bfcnn.names('noise'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "BFCNN_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert result.stdout.strip() == "False", result.stderr
    assert "poisson_gaussian" in bfcnn.names("noise")
