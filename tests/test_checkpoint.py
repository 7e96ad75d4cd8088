"""Checkpoints: atomic writes, keep-last-N, recovery after a crash, and kill -9 at random moments."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

import bfcnn
from bfcnn.checkpoint import (check_fits, find_weights, latest_checkpoint, load_checkpoint, load_model, read_model_spec, recover,
                              save_checkpoint, save_model, step_checkpoints)
from bfcnn.errors import BfcnnError

from _train_common import PYTHON, env, tiny

SPEC = {"type": "dncnn", "channels": 1, "depth": 3, "filters": 4}


def model_and_optimizer():
    model = bfcnn.build("model", SPEC)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.rand(2, 1, 8, 8)).mean().backward()
    optimizer.step()
    return model, optimizer


def test_round_trip_with_optimizer_and_extra_tensors(tmp_path):
    model, optimizer = model_and_optimizer()
    generator = torch.Generator().manual_seed(5)
    folder = save_checkpoint(tmp_path, 7, model, SPEC, optimizer, state={"best": None}, keep=2,
                             tensors={"rng.noise.0": generator.get_state()})
    assert folder.name == "step-00000007" and latest_checkpoint(tmp_path) == folder
    # only safetensors and JSON: nothing a pickle loader would read
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "optimizer.safetensors",
                                                       "state.json", "state.safetensors"]
    other, other_optimizer = bfcnn.build("model", SPEC), None
    other_optimizer = torch.optim.Adam(other.parameters(), lr=0.5)
    info = load_checkpoint(folder, other, other_optimizer)
    assert info["step"] == 7 and info["best"] is None
    for key, value in model.state_dict().items():
        assert torch.equal(value, other.state_dict()[key])
    assert other_optimizer.param_groups[0]["lr"] == 0.01
    first = next(iter(optimizer.state.values()))
    assert torch.equal(first["exp_avg"], next(iter(other_optimizer.state.values()))["exp_avg"])
    restored = torch.Generator()
    restored.set_state(info["tensors"]["rng.noise.0"])
    assert torch.equal(torch.rand(3, generator=restored), torch.rand(3, generator=generator))


def test_keep_last_n_and_best_apart(tmp_path):
    model, optimizer = model_and_optimizer()
    for step in range(1, 6):
        save_checkpoint(tmp_path, step, model, SPEC, optimizer, keep=2)
    save_checkpoint(tmp_path, 3, model, SPEC, name="best")
    save_checkpoint(tmp_path, 4, model, SPEC, name="best")  # replaced in place
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["best", "step-00000004", "step-00000005"]
    assert json.loads((tmp_path / "checkpoints" / "best" / "state.json").read_text())["step"] == 4
    assert find_weights(tmp_path) == tmp_path / "checkpoints" / "best" / "model.safetensors"
    save_model(tmp_path / "model.safetensors", model, SPEC)
    assert find_weights(tmp_path) == tmp_path / "model.safetensors"
    assert read_model_spec(find_weights(tmp_path)) == SPEC
    assert load_model(tmp_path).bias_free


def test_incomplete_folders_are_never_read_and_recover_cleans_up(tmp_path):
    model, optimizer = model_and_optimizer()
    save_checkpoint(tmp_path, 2, model, SPEC, optimizer)
    save_checkpoint(tmp_path, 1, model, SPEC, name="best")
    folder = tmp_path / "checkpoints"
    # what a killed writer can leave: a temporary folder, a step folder whose files are missing,
    # and a best checkpoint moved aside whose replacement never arrived
    (folder / ".tmp-step-00000003-999").mkdir()
    (folder / ".tmp-step-00000003-999" / "model.safetensors").write_bytes(b"partial")
    half = folder / "step-00000004"
    half.mkdir()
    (half / "state.json").write_text(json.dumps({"step": 4, "files": ["model.safetensors", "optimizer.safetensors"]}))
    (half / "model.safetensors").write_bytes(b"\x00" * 10)
    os.replace(folder / "best", folder / ".old-best-999")
    assert latest_checkpoint(tmp_path).name == "step-00000002"
    done = recover(tmp_path)
    assert "restored best" in done
    assert not (folder / ".tmp-step-00000003-999").exists()
    assert (folder / "best" / "model.safetensors").is_file()
    assert latest_checkpoint(tmp_path).name == "step-00000002"


def test_weights_of_another_model_give_a_clear_error(tmp_path):
    model, optimizer = model_and_optimizer()
    folder = save_checkpoint(tmp_path, 1, model, SPEC, optimizer)
    other = bfcnn.build("model", {**SPEC, "filters": 5})
    with pytest.raises(BfcnnError, match=r"do not fit the configured model \(.* is \(\d+, \d+, 3, 3\), the model wants"):
        load_checkpoint(folder, other)
    deeper = bfcnn.build("model", {**SPEC, "depth": SPEC.get("depth", 3) + 2})
    with pytest.raises(BfcnnError, match=r"missing"):
        check_fits(folder, deeper)
    check_fits(folder, bfcnn.build("model", SPEC))  # the model it was saved from fits


def test_find_weights_errors(tmp_path):
    with pytest.raises(BfcnnError):
        find_weights(tmp_path)
    with pytest.raises(BfcnnError):
        find_weights("no-such-model-name")


@pytest.mark.parametrize("content", [b"hello, not weights\n", b""])
def test_a_file_that_is_not_safetensors_is_a_clear_error(tmp_path, content):
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(BfcnnError, match="not a readable .safetensors"):
        bfcnn.load_model(path)


def check_run_folder(run):
    """Every checkpoint that a reader can see is complete and loads; returns the latest step (or 0)."""
    for folder in step_checkpoints(run) + [p for p in [run / "checkpoints" / "best"] if p.exists()]:
        info = json.loads((folder / "state.json").read_text())
        for name in info["files"]:
            load_file(str(folder / name))  # raises on a truncated or partial file
        model = bfcnn.build("model", read_model_spec(folder / "model.safetensors"))
        load_checkpoint(folder, model)
    if (run / "model.safetensors").exists():
        load_file(str(run / "model.safetensors"))
    latest = latest_checkpoint(run)
    return 0 if latest is None else json.loads((latest / "state.json").read_text())["step"]


def latest_step(run):
    """While the writer runs (folders come and go): the newest step folder's number, from names only."""
    try:
        names = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step-")]
    except FileNotFoundError:
        return 0
    return max((int(n.split("-")[1]) for n in names), default=0)


def test_kill_9_at_random_moments_never_leaves_a_partial_checkpoint(tmp_path):
    rng = random.Random(1234)
    # a checkpoint every step, validation every 3 (a best checkpoint too): kills land in writes often
    config = tiny(total_steps=100000, checkpoint_every=1, checkpoints_to_keep=2, validate_every=3, log_every=1)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    resumed_at = []
    for trial in range(3):
        before = check_run_folder(run)
        newest = latest_checkpoint(run)  # the newest complete checkpoint on disk: where the next run must start
        process = subprocess.Popen([PYTHON, "-m", "bfcnn", "run", str(path), "-o", str(run)], env=env(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.time() + 120
            while latest_step(run) <= before and time.time() < deadline and process.poll() is None:
                time.sleep(0.02)
            assert process.poll() is None, process.stderr.read()
            time.sleep(rng.uniform(0.0, 0.4))
            process.send_signal(signal.SIGKILL)
            _, err = process.communicate(timeout=60)
        finally:
            process.kill()
        assert process.returncode == -signal.SIGKILL
        resumes = re.findall(r"resuming from (.+) at step (\d+)$", err, re.MULTILINE)
        if before:
            assert resumes == [(str(newest), str(before))], err
            resumed_at.append(before)
        else:
            assert newest is None and resumes == [], err
        after = check_run_folder(run)  # every visible checkpoint is whole
        assert after > before
    # a final run finishes from the last complete checkpoint
    last = check_run_folder(run)
    done = subprocess.run([PYTHON, "-m", "bfcnn", "run", str(path), "-o", str(run), "--set",
                           f"train.total_steps={last + 2}"], env=env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    summary = json.loads((run / "summary.json").read_text())["train"]
    assert summary["resumed_from"] == last and summary["steps"] == last + 2
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    assert len(resumed_at) == 2
