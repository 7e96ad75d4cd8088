"""Time-boxed training (train.time_limit, schedules over the time budget) and starting from weights
(train.init_from)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import bfcnn
from bfcnn import cli
from bfcnn import train as train_module
from bfcnn.checkpoint import find_weights, latest_checkpoint
from bfcnn.errors import BfcnnError, ConfigError
from bfcnn.train import parse_duration, train

from _train_common import one_thread, tiny


@pytest.fixture(autouse=True)
def single_thread():
    with one_thread():
        yield


class FakeClock:
    """time.time() that moves one second a call: the loop's step timing then counts steps as seconds."""

    def __init__(self):
        self.now = 1000.0

    def time(self):
        self.now += 1.0
        return self.now

    def __getattr__(self, name):  # sleep, perf_counter, ...: the real ones
        import time
        return getattr(time, name)


@pytest.fixture
def fake_clock(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(train_module, "time", clock)
    return clock


def run_train(config, out):
    return train(bfcnn.load_config(config), out)


def params(path):
    return load_file(str(find_weights(path)))


@pytest.mark.parametrize("text, seconds", [("8m", 480), ("2h30m", 9000), ("90s", 90), ("1.5h", 5400),
                                           ("1h 2m 3s", 3723), (45, 45.0), (0.5, 0.5)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["8x", "m", "", "8m junk", "-5m"])
def test_bad_durations(text):
    with pytest.raises(BfcnnError, match="not a duration"):
        parse_duration(text)


def test_a_bad_time_limit_is_a_config_error_with_its_path():
    with pytest.raises(ConfigError, match="train.time_limit"):
        bfcnn.load_config(tiny(time_limit="ten minutes"))
    with pytest.raises(ConfigError, match="train.time_limit"):
        bfcnn.load_config(tiny(time_limit=-3))


def test_the_time_limit_alone_ends_the_run_with_checkpoint_and_weights(tmp_path, fake_clock):
    config = tiny(time_limit="10s", validate_every=1000, checkpoint_every=1000)
    del config["train"]["total_steps"]
    summary = run_train(config, tmp_path)
    assert summary["stopped_by"] == "time limit"
    assert 10 <= summary["steps"] <= 12, summary  # a step a second, and the step that found the time up
    assert summary["training_seconds"] >= 10
    assert (tmp_path / "model.safetensors").is_file()
    latest = latest_checkpoint(tmp_path)
    assert latest is not None and latest.name.endswith(str(summary["steps"]))
    state = json.loads((latest / "state.json").read_text())
    assert state["elapsed_s"] >= 10


def test_steps_end_the_run_before_a_longer_time_limit(tmp_path, fake_clock):
    summary = run_train(tiny(total_steps=4, time_limit="1h"), tmp_path)
    assert summary["steps"] == 4 and summary["stopped_by"] == "steps"


def test_a_run_that_used_its_time_trains_nothing_more(tmp_path, fake_clock):
    config = tiny(time_limit="6s", validate_every=1000)
    del config["train"]["total_steps"]
    first = run_train(config, tmp_path)
    before = params(tmp_path)
    again = run_train(config, tmp_path)
    assert again["resumed_from"] == first["steps"] and again["steps"] == first["steps"]
    after = params(tmp_path)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_the_schedule_anneals_over_the_time_limit(tmp_path, fake_clock):
    config = tiny(time_limit="20s", schedule={"type": "cosine"}, validate_every=1000)
    del config["train"]["total_steps"]
    run_train(config, tmp_path)
    lrs = [r["lr"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines()) if "lr" in r]
    assert len(lrs) >= 19
    assert lrs[0] == pytest.approx(0.01, rel=0.01)  # the start of the cosine
    assert lrs[len(lrs) // 2] == pytest.approx(0.005, rel=0.2)  # half the time: half the rate
    assert lrs[-1] < 0.001  # annealed by the end of the budget
    assert lrs == sorted(lrs, reverse=True)


def test_schedule_over_steps_keeps_the_step_schedule(tmp_path, fake_clock):
    config = tiny(total_steps=4, time_limit="1h", schedule={"type": "cosine"}, schedule_over="steps",
                  validate_every=1000)
    run_train(config, tmp_path)
    lrs = [r["lr"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines()) if "lr" in r]
    assert lrs[-1] == pytest.approx(0.01 * 0.5 * (1 + torch.cos(torch.tensor(3.14159265 * 3 / 4)).item()), rel=1e-3)


def test_schedule_over_time_needs_a_time_limit(tmp_path):
    with pytest.raises(BfcnnError, match="needs train.time_limit"):
        run_train(tiny(schedule_over="time"), tmp_path)


def trained_params(folder):
    model = bfcnn.load_model(str(folder)).module
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_init_from_a_run_folder_starts_from_its_weights(tmp_path):
    run_train(tiny(total_steps=4), tmp_path / "a")
    source = trained_params(tmp_path / "a")
    # a learning rate of 1e-12: the new run's weights are the ones it started from (to 1e-9)
    config = tiny(total_steps=1, init_from=str(tmp_path / "a"), optimizer={"type": "adam", "learning_rate": 1e-12})
    summary = run_train(config, tmp_path / "b")
    assert summary["init_from"].endswith("model.safetensors")
    started = trained_params(tmp_path / "b")
    assert all(torch.allclose(source[k], started[k], atol=1e-9, rtol=0) for k in source)
    fresh = trained_params_of_fresh_run(tmp_path / "c")
    assert any(not torch.allclose(source[k], fresh[k], atol=1e-3) for k in source)  # the test can tell the difference


def trained_params_of_fresh_run(folder):
    config = tiny(total_steps=1, optimizer={"type": "adam", "learning_rate": 1e-12})
    run_train(config, folder)
    return trained_params(folder)


def test_init_from_a_file_and_a_shipped_name(tmp_path):
    run_train(tiny(total_steps=2), tmp_path / "a")
    config = tiny(total_steps=1, init_from=str(tmp_path / "a" / "model.safetensors"),
                  optimizer={"type": "adam", "learning_rate": 1e-12})
    run_train(config, tmp_path / "b")
    a, b = trained_params(tmp_path / "a"), trained_params(tmp_path / "b")
    assert all(torch.allclose(a[k], b[k], atol=1e-9, rtol=0) for k in a)
    shipped = bfcnn.load_model("bf_dncnn_small_cpu").module
    model = bfcnn.build("model", {"type": "dncnn", "channels": 3, "depth": 10, "filters": 32})
    from bfcnn.checkpoint import init_weights
    init_weights(model, "bf_dncnn_small_cpu")
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), shipped.parameters()))


def test_init_from_weights_that_do_not_fit_names_the_layers(tmp_path):
    run_train(tiny(total_steps=2), tmp_path / "a")
    config = tiny(total_steps=1, init_from=str(tmp_path / "a"))
    config["model"]["filters"] = 6
    with pytest.raises(BfcnnError, match=r"do not fit.*body\.0\.weight is \(4, 1, 3, 3\), the model wants \(6, 1, 3, 3\)"):
        run_train(config, tmp_path / "b")
    assert not (tmp_path / "b" / "model.safetensors").exists()


def test_init_from_nothing_there_is_a_clear_error(tmp_path):
    with pytest.raises(BfcnnError, match="no model at"):
        run_train(tiny(total_steps=1, init_from=str(tmp_path / "nowhere")), tmp_path / "b")
    (tmp_path / "junk.safetensors").write_bytes(b"not weights")
    with pytest.raises(BfcnnError, match="not a readable"):
        run_train(tiny(total_steps=1, init_from=str(tmp_path / "junk.safetensors")), tmp_path / "c")


def test_cli_time_limit(tmp_path, capsys):
    import yaml
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny(total_steps=2)))
    assert cli.main(["run", str(path), "-o", str(tmp_path / "run"), "--time-limit", "2x"]) == 2
    assert "not a duration" in capsys.readouterr().err
    assert cli.main(["run", str(path), "-o", str(tmp_path / "run"), "--time-limit", "5m"]) == 0
    resolved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert resolved["train"]["time_limit"] == "5m"
    no_train = tmp_path / "e.yaml"
    config = tiny()
    del config["train"]
    config["evaluate"] = {"data": [str(tmp_path)]}
    no_train.write_text(yaml.safe_dump(config))
    assert cli.main(["run", str(no_train), "--time-limit", "5m"]) == 2


def test_worker_processes_are_bounded():
    """A mistyped worker count once started about 900 processes and exhausted the machine's memory."""
    config = tiny(total_steps=1)
    config["dataset"]["num_workers"] = 900
    with pytest.raises(ConfigError, match="dataset.num_workers"):
        bfcnn.load_config(config)
    config["dataset"]["num_workers"] = 2
    assert bfcnn.load_config(config)["dataset"]["num_workers"] == 2
