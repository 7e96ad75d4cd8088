"""The `bfcnn` command: exit codes 0 / 2 (bad input, no traceback) / 1 (failure in a run), and each command."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from bfcnn import cli
from bfcnn.errors import RunError
from conftest import REPO


def write(tmp_path, config, name="config.yaml"):
    path = tmp_path / name
    path.write_text(json.dumps(config) if name.endswith(".json") else yaml.safe_dump(config))
    return path


def bfcnn_cli(*args, cwd=None):
    """The real command line, in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "bfcnn", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or REPO, env={**__import__("os").environ, "NO_ALBUMENTATIONS_UPDATE": "1"})


def test_run_trains_and_writes_a_safetensors_checkpoint(tmp_path, tiny_config):
    out = tmp_path / "run"
    result = bfcnn_cli("run", write(tmp_path, tiny_config), "-o", out, "--set", "train.total_steps=2")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["train"]["steps"] == 2
    assert (out / "model.safetensors").is_file()
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["total_steps"] == 2  # resolved config


def test_bad_config_exits_2_with_every_problem_and_no_traceback(tmp_path, tiny_config):
    tiny_config["model"]["filters"] = -3
    tiny_config["noise"]["type"] = "gausian"
    result = bfcnn_cli("run", write(tmp_path, tiny_config), "-o", tmp_path / "run")
    assert result.returncode == 2
    assert "model.filters: -3 is less than the minimum of 1" in result.stderr
    assert "did you mean 'additive_gaussian'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists(), "nothing is written before the config is valid"


@pytest.mark.parametrize("args", [
    ["run", "no/such/config.yaml"],
    ["validate", "no/such/config.yaml"],
    ["list", "modles"],
    ["validate", str(REPO / "bfcnn/pretrained/bf_dncnn_small_cpu.safetensors")],  # not a text file
    ["validate", str(REPO / "configs")],  # a folder
    ["no-such-command"],
    ["run"],
])
def test_bad_input_exits_2(args, capsys):
    assert cli.main(args) == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("command", ["run", "train", "evaluate", "export"])
@pytest.mark.parametrize("where", ["FILE", "FILE/sub"])
def test_an_output_folder_that_is_a_file_exits_2(tmp_path, tiny_config, capsys, command, where):
    from bfcnn import export, train

    config = write(tmp_path, tiny_config)
    (tmp_path / "notes.txt").write_text("a file where the output folder should go")
    out = where.replace("FILE", str(tmp_path / "notes.txt"))
    code = {"run": lambda: cli.main(["run", str(config), "-o", out]),
            "train": lambda: train.main(["--model-directory", out, "--pipeline-config", str(config)]),
            "evaluate": lambda: cli.main(["evaluate", "bf_dncnn_small_cpu", "-o", out]),
            "export": lambda: export.main(["--checkpoint-directory", "bf_dncnn_small_cpu", "--pipeline-config",
                                           str(config), "--output-directory", out])}[command]()
    error = capsys.readouterr().err
    assert code == 2, error
    assert "cannot create the output folder" in error and "Traceback" not in error


@pytest.mark.parametrize("evaluate", [{"directories": ["no/such/test_set"]},
                                      {"sample_photos": ["astronaut"], "models": [{"path": "runs/not_trained_yet"}]}])
def test_a_missing_test_folder_or_model_is_reported_before_training(tmp_path, tiny_config, capsys, evaluate):
    tiny_config["evaluate"] = evaluate
    out = tmp_path / "run"
    assert cli.main(["run", str(write(tmp_path, tiny_config)), "-o", str(out)]) == 2
    error = capsys.readouterr().err
    assert "not found" in error or "no model at" in error, error
    assert not out.exists(), "it stops before training"


def test_a_missing_export_extra_is_reported_before_training(tmp_path, tiny_config, capsys, monkeypatch):
    from bfcnn.plugins import exporters

    monkeypatch.setattr(exporters, "tflite_missing", lambda: ["litert_torch"])
    tiny_config["export"] = [{"type": "tflite"}]
    out = tmp_path / "run"
    assert cli.main(["run", str(write(tmp_path, tiny_config)), "-o", str(out)]) == 2
    assert "bfcnn[tflite]" in capsys.readouterr().err
    assert not out.exists(), "it stops before training"


def test_a_run_folder_of_another_model_is_refused_and_keeps_its_config(tmp_path, tiny_config, capsys):
    out = tmp_path / "run"
    assert cli.main(["run", str(write(tmp_path, tiny_config)), "-o", str(out), "--set", "train.total_steps=2"]) == 0
    before = (out / "config.yaml").read_text()
    tiny_config["model"]["filters"] = tiny_config["model"].get("filters", 4) + 3
    assert cli.main(["run", str(write(tmp_path, tiny_config, "other.yaml")), "-o", str(out)]) == 2
    assert "do not fit the configured model" in capsys.readouterr().err
    assert (out / "config.yaml").read_text() == before, "the run folder still describes its own weights"


def test_a_config_without_any_stage_is_an_error(tmp_path, tiny_config, capsys):
    config = {"model": tiny_config["model"]}
    assert cli.main(["run", str(write(tmp_path, config)), "-o", str(tmp_path / "run")]) == 2
    assert "nothing to run" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_device_the_machine_lacks_fails_before_the_run_folder_is_made(tmp_path, tiny_config, capsys):
    out = tmp_path / "run"
    assert cli.main(["run", str(write(tmp_path, tiny_config)), "-o", str(out), "--set", "device=cuda:99"]) == 2
    assert "cuda:99" in capsys.readouterr().err
    assert not out.exists()


def test_validate_ok_and_with_override(tmp_path, tiny_config, capsys):
    path = write(tmp_path, tiny_config)
    assert cli.main(["validate", str(path)]) == 0
    assert "valid" in capsys.readouterr().out
    assert cli.main(["validate", str(path), "--set", "model.depth=0"]) == 2
    assert "model.depth" in capsys.readouterr().err


def test_failure_inside_a_run_exits_1(tmp_path, tiny_config, monkeypatch, capsys):
    def failing_run(*args, **kwargs):
        raise RunError("the export check failed")

    monkeypatch.setattr("bfcnn.pipeline.run", failing_run)
    assert cli.main(["run", str(write(tmp_path, tiny_config)), "-o", str(tmp_path / "run")]) == 1
    assert "the export check failed" in capsys.readouterr().err


def test_a_closed_pipe_is_no_traceback():
    """`bfcnn schema | head -1`: the reader closes the pipe early; bfcnn stops quietly."""
    process = subprocess.Popen([sys.executable, "-m", "bfcnn", "schema"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, cwd=REPO, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
    process.stdout.readline()
    process.stdout.close()  # before bfcnn has written its whole output (it is bigger than a pipe's buffer)
    error = process.stderr.read().decode()
    assert process.wait() == 141, error
    assert "Traceback" not in error and "Error" not in error, error


def test_schema_prints_the_json_schema(capsys):
    assert cli.main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert set(schema["$defs"]) == {"noise", "model", "loss", "optimizer", "schedule", "dataset", "metric", "exporter",
                                    "pretrained", "measurement"}


def test_list_and_plugins(capsys):
    assert cli.main(["list", "noise"]) == 0
    out = capsys.readouterr().out
    assert "additive_gaussian" in out and "bfcnn.plugins.noises" in out
    assert cli.main(["list", "--pattern", "*gauss*"]) == 0
    out = capsys.readouterr().out
    assert "additive_gaussian" in out and "dncnn" not in out
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "bfcnn.plugins.models" in out and "model:dncnn" in out
    assert "stage:train" in out and "command:denoise" in out and "bfcnn.plugins.seed_format: config_format:seed" in out


def test_seed_train_command_keeps_working(tmp_path, tiny_config):
    result = subprocess.run(
        [sys.executable, "-m", "bfcnn.train", "--model-directory", str(tmp_path / "run"),
         "--pipeline-config", str(write(tmp_path, tiny_config, "pipeline.json"))],
        capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "model.safetensors").is_file()
    bad = subprocess.run([sys.executable, "-m", "bfcnn.train", "--model-directory", str(tmp_path / "x"),
                          "--pipeline-config", str(tmp_path / "missing.json")], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
