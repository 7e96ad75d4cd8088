"""The training engine: outputs, resume equality, seed command, early config errors, NaN stop, Ctrl-C."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

import bfcnn
from bfcnn.checkpoint import find_weights, latest_checkpoint, read_model_spec
from bfcnn.errors import BfcnnError, ConfigError, RunError
from bfcnn.registry import hookimpl, load_registries
from bfcnn.plugins import datasets
from bfcnn.train import Trainer, data_seed, step_batches, train

from _train_common import PYTHON, env, one_thread, tiny


@pytest.fixture(autouse=True)
def single_thread():
    with one_thread():
        yield


def run_train(config, out, registries=None):
    return train(bfcnn.load_config(config, registries=registries), out, registries)


def weights(path):
    return load_file(str(find_weights(path)))


@pytest.mark.parametrize("batchnorm", [True, "rms", False])
def test_a_short_run_learns_to_denoise(tmp_path, batchnorm):
    """A 6-layer colour DnCNN, 200 steps on the sample photos: the held-out photo at sigma 25 must come out
    clearly better than its noisy input. (With unit batch-norm scales, dividing by the std without subtracting
    the mean, the net never left the identity: the quick start then trained a model that did not denoise.)"""
    config = {"seed": 0, "device": "cpu",
              "model": {"type": "dncnn", "channels": 3, "depth": 6, "filters": 16, "batchnorm": batchnorm},
              "noise": {"type": "additive_gaussian", "sigma_range": [0, 55]},
              "dataset": {"type": "sample_images", "batch_size": 8, "input_shape": [40, 40, 3]},
              "loss": {"type": "mse"},
              "train": {"total_steps": 200, "checkpoint_every": 200, "validation_sigmas": [25], "validation_crop": 128,
                        "tensorboard": False, "progress": False, "visualization_number": 0,
                        "optimizer": {"type": "adam", "learning_rate": 0.002}}}
    summary = run_train(config, tmp_path / "run")
    noisy_psnr = 10 * math.log10(255 ** 2 / 25 ** 2)  # 20.2 dB
    assert summary["best"]["value"] > noisy_psnr + 4, summary["best"]


def test_run_folder_has_everything(tmp_path):
    config = tiny(total_steps=4, iterations_choice=[1, 2], visualization_number=2, visualization_every=2,
                  random_batch_iterations=3, random_batch_size=[16, 16], tensorboard=True)
    summary = bfcnn.run(config, tmp_path)
    assert summary["train"]["steps"] == 4 and summary["train"]["bad_steps"] == 0
    assert math.isfinite(summary["train"]["final_loss"])
    # the final weights rebuild the model from the file alone
    assert read_model_spec(tmp_path / "model.safetensors") == config["model"]
    model = bfcnn.load_model(tmp_path)
    assert model.bias_free and model(torch.rand(1, 1, 8, 8)).shape == (1, 1, 8, 8)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["model"] == config["model"]
    # the last N step checkpoints, and the best one apart from them
    steps = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert steps == ["best", "step-00000002", "step-00000004"]
    best = json.loads((tmp_path / "checkpoints" / "best" / "state.json").read_text())
    assert best["metric"] == "psnr" and math.isfinite(best["value"])
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in records if "loss" in r]
    assert [r["step"] for r in train_lines] == [1, 2, 3, 4]
    assert all(r["lr"] == pytest.approx(0.01) and r["patches_per_s"] > 0 for r in train_lines)
    validations = [r for r in records if "validation" in r]
    assert [r["step"] for r in validations] == [2, 4] and "psnr_sigma25" in validations[0]["validation"]
    # TensorBoard: scalars and images in an event file
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert {"train/loss", "train/lr", "validation/psnr_sigma25"} <= set(events.Tags()["scalars"])
    assert {"train/noisy_denoised_clean", "train/random_batch"} <= set(events.Tags()["images"])


def test_two_n_steps_equal_n_then_resume_n(tmp_path):
    config = tiny(total_steps=6, checkpoint_every=3, iterations_choice=[1, 2],
                  schedule={"type": "exponential_decay", "decay_rate": 0.5, "decay_steps": 2})
    config["train"]["optimizer"]["type"] = "adamw"
    run_train(config, tmp_path / "once")
    half = tiny(**{**config["train"], "total_steps": 3})
    first = run_train(half, tmp_path / "twice")
    assert first["steps"] == 3 and first["resumed_from"] == 0
    second = run_train(config, tmp_path / "twice")
    assert second["resumed_from"] == 3 and second["steps"] == 6
    once, twice = weights(tmp_path / "once"), weights(tmp_path / "twice")
    assert once.keys() == twice.keys()
    for key in once:
        torch.testing.assert_close(twice[key], once[key], rtol=1e-5, atol=1e-6)
    # and training did move the weights (the comparison is not between two untouched models)
    fresh = Trainer(bfcnn.load_config(config), tmp_path / "unused").model.state_dict()
    assert any(not torch.allclose(fresh[k], once[k]) for k in once)
    # metrics.jsonl of the resumed run reads like the one of the uninterrupted run
    steps = [json.loads(line)["step"] for line in (tmp_path / "twice" / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_rerunning_a_finished_run_changes_nothing(tmp_path):
    run_train(tiny(total_steps=2), tmp_path)
    before = weights(tmp_path)
    summary = run_train(tiny(total_steps=2), tmp_path)
    assert summary["resumed_from"] == 2
    after = weights(tmp_path)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_cosine_schedule_spans_the_run_and_lr_follows_it(tmp_path):
    config = tiny(total_steps=4, schedule={"type": "cosine"}, validate_every=100)
    run_train(config, tmp_path)
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
           if "lr" in json.loads(line)]
    expected = [0.01 * 0.5 * (1 + math.cos(math.pi * s / 4)) for s in range(4)]
    assert lrs == pytest.approx(expected)


def test_epochs_set_the_number_of_steps(tmp_path):
    # sample_images: 4 training photos, batch 2 -> 2 steps per epoch
    summary = run_train(tiny(total_steps=-1, epochs=2, validate_every=100), tmp_path)
    assert summary["steps"] == 4


def test_seed_command_trains(tmp_path):
    config = tiny(total_steps=2)
    config.pop("loss")
    config["loss"] = {"hinge": 2.5, "mae_multiplier": 1.0, "regularization": 0.01}  # the seed's loss keys
    config["train"]["optimizer"] = {"learning_rate": 0.001, "decay_rate": 0.9, "decay_steps": 10,
                                    "gradient_clipping_by_norm": 1.0}  # the seed's optimizer keys
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(config))
    done = subprocess.run([PYTHON, "-m", "bfcnn.train", "--model-directory", str(tmp_path / "run"),
                           "--pipeline-config", str(path)], env=env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "run" / "model.safetensors").is_file()
    resolved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert resolved["loss"]["type"] == "hinged_mae"
    assert resolved["train"]["schedule"] == {"type": "exponential_decay", "decay_rate": 0.9, "decay_steps": 10}
    assert resolved["train"]["gradient_clipping_by_norm"] == 1.0


class SpyDataset:
    """A plugin whose dataset records that it was built: building it is reading data."""

    built = []

    @hookimpl
    def register_datasets(self, register):
        def factory(**params):
            SpyDataset.built.append(params)
            raise AssertionError("the dataset was built: data would have been read")
        register("spy", factory, {"type": "object", "additionalProperties": True}, "records its construction")


@pytest.mark.parametrize("change, message", [
    ({"train": {"total_steps": 3, "optimizer": {"type": "adam", "learning_rate": -1}}}, "train.optimizer.learning_rate"),
    ({"train": {"optimizer": {"type": "adamm"}}}, "did you mean 'adam'"),
    ({"train": {"max_bad_steps": 0}}, "train.max_bad_steps"),
    ({"train": {"precision": "fp8"}}, "train.precision"),
    ({"train": {"schedule": {"type": "step", "milestones": []}}}, "train.schedule"),
    ({"train": {"random_batch_size": [16, 16, 3]}}, "random_batch_size"),
    ({"loss": {"type": "ssim", "win_size": 1}}, "loss.win_size"),
    ({"device": "cuda:7"} if not torch.cuda.is_available() else {"device": "nonsense"}, "device"),
])
def test_bad_values_fail_before_any_data_is_read(tmp_path, change, message):
    registries = load_registries(extra_plugins=[SpyDataset()], autoload=False)
    config = tiny()
    config["dataset"] = {"type": "spy"}
    for key, value in change.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) and key == "train" else value
    SpyDataset.built.clear()
    with pytest.raises(BfcnnError) as error:
        run_train(config, tmp_path / "run", registries)
    assert message in str(error.value)
    assert SpyDataset.built == []
    assert not (tmp_path / "run").exists()


def test_all_config_problems_reported_at_once():
    config = tiny(max_bad_steps=0, checkpoint_every=0)
    with pytest.raises(ConfigError) as error:
        bfcnn.load_config(config)
    assert len(error.value.problems) >= 2


def test_nan_steps_are_skipped_then_stop_with_good_checkpoint(tmp_path):
    # a learning rate this large sends the weights to ~1e28 after the first step: every later loss is inf/NaN
    config = tiny(total_steps=50, checkpoint_every=1, max_bad_steps=3, validate_every=100,
                  optimizer={"type": "sgd", "learning_rate": 1e30, "momentum": 0.0})
    config["model"]["batchnorm"] = False
    with pytest.raises(RunError) as error:
        run_train(config, tmp_path)
    assert "3 steps in a row" in str(error.value) and "non-finite" in str(error.value)
    last = latest_checkpoint(tmp_path)
    assert last is not None and str(last) in str(error.value)
    saved = load_file(str(last / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in saved.values())
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["stopped"] == "bad steps" and records[-1]["bad_steps_total"] == 3
    assert not (tmp_path / "model.safetensors").exists()


def test_isolated_bad_step_is_skipped_and_training_goes_on(tmp_path, monkeypatch):
    config = bfcnn.load_config(tiny(total_steps=4, validate_every=100, max_bad_steps=2))
    trainer = Trainer(config, tmp_path)
    real = trainer.loss_fn
    calls = []

    def flaky(prediction, target):  # the second step's loss is NaN
        calls.append(1)
        value = real(prediction, target)
        return value * float("nan") if len(calls) == 2 else value
    trainer.loss_fn = flaky
    summary = trainer.run()
    assert summary["bad_steps"] == 1 and summary["steps"] == 4
    assert all(torch.isfinite(t).all() for t in weights(tmp_path).values())


def nan_on_call(noise, which):
    """The noise model, but the noisy input of its `which`-th call is NaN (what the forward then sees)."""
    calls = []

    def noisy(clean, generator):
        calls.append(1)
        out = noise(clean, generator)
        return out * float("nan") if len(calls) == which else out
    return noisy


@pytest.mark.parametrize("bias_free", [True, False])  # BiasFreeBatchNorm, and torch's BatchNorm2d
def test_bad_step_leaves_batch_norm_statistics_as_they_were(tmp_path, bias_free):
    config = tiny(total_steps=4, checkpoint_every=2, validate_every=100, max_bad_steps=2)
    config["model"].update(batchnorm=True, bias_free=bias_free)
    trainer = Trainer(bfcnn.load_config(config), tmp_path)
    assert any("running_var" in name for name, _ in trainer.model.named_buffers())
    trainer.noise = nan_on_call(trainer.noise, 2)  # step 2: NaN goes into the forward
    summary = trainer.run()
    assert summary["bad_steps"] == 1 and summary["steps"] == 4
    # the checkpoint right after the bad step, and the final one, hold finite statistics
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith("step-")) == \
        ["step-00000002", "step-00000004"]
    for path in [tmp_path / "checkpoints" / "step-00000002", tmp_path / "checkpoints" / "step-00000004", tmp_path]:
        saved = weights(path) if path == tmp_path else load_file(str(path / "model.safetensors"))
        assert any("running_var" in key for key in saved)
        assert all(torch.isfinite(t).all() for t in saved.values()), path
    model = bfcnn.load_model(tmp_path).eval()
    assert torch.isfinite(model(torch.rand(1, 1, 16, 16))).all()


def test_bad_step_restores_the_buffers_exactly(tmp_path):
    config = tiny(validate_every=100)
    config["model"].update(batchnorm=True, bias_free=False)  # running mean, var and the batch count
    trainer = Trainer(bfcnn.load_config(config), tmp_path)
    trainer.setup()
    batches = trainer.dataset.batches(0)
    trainer.step(next(batches))
    before = {k: v.clone() for k, v in trainer.model.named_buffers()}
    trainer.noise = nan_on_call(trainer.noise, 1)
    _, bad, *_ = trainer.step(next(batches))
    assert bad
    assert all(torch.equal(before[k], v) for k, v in trainer.model.named_buffers())
    trainer.step(next(batches))  # while a good step does update them
    assert all(not torch.equal(before[k], v) for k, v in trainer.model.named_buffers())


def test_no_checkpoint_with_non_finite_batch_norm_statistics(tmp_path, caplog):
    trainer = Trainer(bfcnn.load_config(tiny()), tmp_path)
    trainer.setup()
    next(v for k, v in trainer.model.named_buffers() if k.endswith("running_var")).fill_(float("nan"))
    with caplog.at_level("WARNING", logger="bfcnn"):
        trainer.checkpoint(1)
    assert latest_checkpoint(tmp_path) is None and "not finite" in caplog.text


class Numbered:
    """A dataset whose batch b of stream `seed` is (seed, b), recorded when computed. With `takes_start`,
    batches() has the built-in datasets' `start`; without, only what the plugin contract asks."""

    def __init__(self, takes_start):
        self.computed = []
        if takes_start:
            self.batches = lambda seed, rank=0, world_size=1, start=0: self.stream(seed, start)
        else:
            self.batches = lambda seed, rank=0, world_size=1: self.stream(seed, 0)

    def stream(self, seed, b):
        while True:
            self.computed.append((seed, b))
            yield seed, b
            b += 1


@pytest.mark.parametrize("takes_start", [True, False])
def test_step_batches_resumes_inside_a_segment(takes_start):
    dataset = Numbered(takes_start)
    every, seed = 3, 7
    stream = step_batches(dataset, seed, start=4, every=every)
    got = [next(stream) for _ in range(4)]  # steps 4, 5 | 6, 7: batches 1, 2 of segment 1, then 0, 1 of segment 2
    s1, s2 = data_seed(seed, 1), data_seed(seed, 2)
    assert got == [(s1, 1), (s1, 2), (s2, 0), (s2, 1)]
    skipped = (s1, 0)
    assert (skipped in dataset.computed) == (not takes_start)  # free where the dataset can start at batch n


def test_resume_inside_a_segment_computes_no_skipped_batch_and_matches(tmp_path, monkeypatch):
    computed = []
    real = datasets.CropStream.batch

    def batch(self, b):
        computed.append((self.seed, b))
        return real(self, b)
    monkeypatch.setattr(datasets.CropStream, "batch", batch)
    config = tiny(total_steps=6, checkpoint_every=3, iterations_choice=[1, 2], validate_every=100)
    config["model"]["batchnorm"] = True
    run_train(config, tmp_path / "once")
    first = run_train(tiny(**{**config["train"], "total_steps": 4}), tmp_path / "twice")
    assert first["steps"] == 4 and latest_checkpoint(tmp_path / "twice").name == "step-00000004"
    computed.clear()
    second = run_train(config, tmp_path / "twice")
    assert second["resumed_from"] == 4
    segment = data_seed(config["seed"], 1)  # steps 3, 4, 5: step 4 is batch 1 of that stream
    assert (segment, 1) in computed and (segment, 0) not in computed, computed
    once, twice = weights(tmp_path / "once"), weights(tmp_path / "twice")
    for key in once:
        torch.testing.assert_close(twice[key], once[key], rtol=0, atol=1e-6)


def test_random_batch_is_logged_without_the_image_grid(tmp_path):
    run_train(tiny(total_steps=2, visualization_number=0, visualization_every=1, random_batch_iterations=2,
                   random_batch_size=[16, 16], tensorboard=True, validate_every=100), tmp_path)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert "train/noisy_denoised_clean" not in events.Tags()["images"]
    assert [e.step for e in events.Images("train/random_batch")] == [1, 2]


def test_summary_counts_skipped_image_files(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (24, 24), dtype=np.uint8)
    for i in range(2):
        Image.fromarray(pixels).save(folder / f"good{i}.png")
    (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    config = tiny(total_steps=2, validate_every=100)
    config["dataset"] = {"type": "image_folder", "directory": str(folder), "color_mode": "grayscale",
                         "batch_size": 2, "input_shape": [16, 16, 1], "num_workers": 0}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    from bfcnn.cli import main
    assert main(["run", str(path), "-o", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())["train"]
    assert summary["steps"] == 2
    assert summary["dataset"]["skipped_files"] == 1 and "bad.png" in summary["dataset"]["skipped"][0]


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    config = tiny(total_steps=100000, checkpoint_every=50, validate_every=10**6, log_every=10)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    process = subprocess.Popen([PYTHON, "-m", "bfcnn", "run", str(path), "-o", str(run)], env=env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while latest_checkpoint(run) is None and time.time() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert latest_checkpoint(run) is not None, "no checkpoint came"
        time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "Traceback" not in err and "interrupted at step" in err
    step = int(err.split("interrupted at step ")[1].split(":")[0])
    assert latest_checkpoint(run).name == f"step-{step:08d}"
    # the same command resumes from there
    done = subprocess.run([PYTHON, "-m", "bfcnn", "run", str(path), "-o", str(run), "--set",
                           f"train.total_steps={step + 2}"], env=env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["train"]["resumed_from"] == step and summary["train"]["steps"] == step + 2
    # the checkpoint held the weights, optimizer and generators of that very step: the interrupted and
    # resumed run ends where an uninterrupted one does
    run_train(tiny(**{**config["train"], "total_steps": step + 2}), tmp_path / "once")
    once, twice = weights(tmp_path / "once"), weights(run)
    for key in once:
        torch.testing.assert_close(twice[key], once[key], rtol=0, atol=1e-6)


def test_resume_with_another_optimizer_starts_it_afresh(tmp_path, caplog):
    run_train(tiny(total_steps=2, validate_every=100), tmp_path)
    config = tiny(total_steps=3, validate_every=100, optimizer={"type": "sgd", "learning_rate": 0.01})
    with caplog.at_level("WARNING", logger="bfcnn"):
        summary = run_train(config, tmp_path)
    assert summary["resumed_from"] == 2 and summary["steps"] == 3
    assert "starts afresh" in caplog.text


def test_training_learns_to_denoise(tmp_path):
    # a few dozen steps of a tiny model already beat the noisy input's PSNR on the held-out photo
    config = tiny(total_steps=40, checkpoint_every=40, validation_crop=64, validation_sigmas=[25],
                  optimizer={"type": "adam", "learning_rate": 0.01})
    config["model"]["filters"] = 8
    config["dataset"].update(batch_size=4, input_shape=[24, 24, 1])
    summary = run_train(config, tmp_path)
    noisy_psnr = 20 * math.log10(255 / 25)  # unclipped Gaussian noise at sigma 25
    assert summary["best"]["value"] > noisy_psnr + 1.0


def test_bf16_autocast_and_channels_last_path_trains(tmp_path):
    # the CUDA defaults, forced on the CPU: the same code path, and the weights load into a plain model
    summary = run_train(tiny(total_steps=2, precision="bf16", channels_last=True, iterations_choice=[2]), tmp_path)
    assert math.isfinite(summary["final_loss"]) and summary["best"] is not None
    model = bfcnn.load_model(tmp_path)
    assert all(p.is_contiguous() and torch.isfinite(p).all() for p in model.parameters())


def test_compiled_training_matches_eager_and_resumes(tmp_path):
    """train.compile: true (the CUDA default) runs through torch.compile on CPU too: the same weights as the
    eager run within float tolerance, checkpoints without torch.compile's key prefixes, and a resume."""
    trainer = Trainer(bfcnn.load_config(tiny(compile=True)), tmp_path / "probe")
    trainer.setup()
    assert isinstance(trainer.net, type(torch.compile(torch.nn.Identity())))  # the compiled wrapper is in use
    eager = run_train(tiny(total_steps=4, compile=False), tmp_path / "eager")
    compiled = run_train(tiny(total_steps=2, compile=True), tmp_path / "compiled")
    assert compiled["steps"] == 2
    resumed = run_train(tiny(total_steps=4, compile=True), tmp_path / "compiled")
    assert resumed["resumed_from"] == 2
    a, b = weights(tmp_path / "eager"), weights(tmp_path / "compiled")
    assert a.keys() == b.keys() and not any("_orig_mod" in key for key in b)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)
    assert math.isclose(resumed["final_loss"], eager["final_loss"], rel_tol=1e-3)


def test_rerunning_a_finished_run_trains_nothing_and_says_so(tmp_path, capsys, caplog):
    first = run_train(tiny(total_steps=2, progress=True), tmp_path)
    assert "train:" in capsys.readouterr().err  # the progress bar of the real run
    before = weights(tmp_path)
    with caplog.at_level("INFO", logger="bfcnn"):
        again = run_train(tiny(total_steps=2, progress=True), tmp_path)
    assert again["resumed_from"] == 2 and first["steps"] == again["steps"] == 2
    assert "train:" not in capsys.readouterr().err  # no bar for zero steps
    assert "nothing to train" in caplog.text
    after = weights(tmp_path)
    assert all(torch.equal(before[key], after[key]) for key in before)
