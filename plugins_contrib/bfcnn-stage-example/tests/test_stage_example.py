import os
import subprocess
import sys

import pytest

import bfcnn
from bfcnn.registry import load_registries

import bfcnn_stage_example

TINY = {
    "seed": 0, "device": "cpu",
    "model": {"type": "dncnn", "channels": 3, "depth": 2, "filters": 4},
    "dataset": {"type": "sample_images", "batch_size": 2, "input_shape": [16, 16, 3]},
    "train": {"total_steps": 2, "checkpoint_every": 2, "tensorboard": False, "progress": False},
}


def registries():
    return load_registries(extra_plugins=[bfcnn_stage_example], autoload=False)


def test_the_stage_and_the_command_are_registered():
    found = registries()
    assert found.stages["card"].plugin == "bfcnn_stage_example"
    assert list(found.stages)[-1] == "card"  # after the built-in stages
    assert found.commands["card"].help.startswith("write a markdown model card")


def test_the_config_schema_has_the_section_and_its_check():
    from bfcnn.config import config_schema

    found = registries()
    assert "card" in config_schema(found)["properties"]
    with pytest.raises(bfcnn.ConfigError, match="card.filename: 3 is not of type 'string'"):
        bfcnn.load_config({**TINY, "card": {"filename": 3}}, registries=found)
    with pytest.raises(bfcnn.ConfigError, match="card: a card needs a model section"):
        bfcnn.load_config({"card": {}}, registries=found)


def test_the_pipeline_runs_the_stage_after_training(tmp_path):
    from bfcnn.pipeline import run

    summary = run({**TINY, "card": {"title": "tiny"}}, tmp_path, registries=registries())
    assert list(summary) == ["train", "card"]
    card = (tmp_path / "CARD.md").read_text()
    assert card.startswith("# tiny") and f"parameters: {summary['card']['parameters']:,}" in card


@pytest.mark.skipif(os.environ.get("BFCNN_DISABLE_PLUGIN_AUTOLOAD") not in (None, "", "0"),
                    reason="needs the installed plugin's entry point")
def test_installed_command_and_help(tmp_path):
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    help_text = subprocess.run([sys.executable, "-m", "bfcnn", "--help"], capture_output=True, text=True, env=env)
    assert "card" in help_text.stdout, help_text.stderr
    bfcnn.run(TINY, tmp_path)
    result = subprocess.run([sys.executable, "-m", "bfcnn", "card", str(tmp_path), "--filename", "X.md"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "X.md").read_text().startswith(f"# {tmp_path.name}")
    missing = subprocess.run([sys.executable, "-m", "bfcnn", "card", str(tmp_path / "nothing")],
                             capture_output=True, text=True, env=env)
    assert missing.returncode == 2 and "not a run folder" in missing.stderr and "Traceback" not in missing.stderr
