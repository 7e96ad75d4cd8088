"""bfcnn.engines: every CPU engine gives eager float32's result within 1e-4, auto falls back cleanly, bad names
are bad input."""

import subprocess
import sys

import numpy as np
import pytest
import torch

import bfcnn
from bfcnn import engines
from bfcnn.denoise import Denoiser
from bfcnn.engines import AutoEngine, make_engine
from bfcnn.errors import BfcnnError

CPU_ENGINES = ["eager", "channels_last", "jit", "onnxruntime"]  # compile: tens of seconds to compile on 2 cores


def small_model(spec=None):
    torch.manual_seed(0)
    model = bfcnn.build("model", spec or {"type": "dncnn", "channels": 3, "depth": 4, "filters": 8})
    for module in model.modules():  # trained-like batch-norm scales, so the check sees a non-trivial net
        if hasattr(module, "running_var"):
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    return model.eval()


def needs(name):
    if name == "onnxruntime":
        pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("name", CPU_ENGINES)
def test_each_engine_equals_eager_on_odd_sizes(name):
    needs(name)
    model = small_model()
    engine = make_engine(model, name)
    assert engine.name == name
    rng = np.random.default_rng(0)
    with torch.inference_mode():
        for height, width in ((17, 31), (64, 45), (101, 9)):
            x = torch.from_numpy(rng.random((1, 3, height, width), dtype=np.float32))
            expected = model(x)
            got = engine(x)
            assert got.shape == expected.shape
            assert float((got - expected).abs().max()) <= 1e-4
    # and through the Denoiser, tiled, against the eager whole image
    image = rng.random((77, 93, 3), dtype=np.float32)
    whole = Denoiser(model, engine="eager").denoise(image, tile=0)
    tiled = Denoiser(model, engine=name).denoise(image, tile=40)
    np.testing.assert_allclose(tiled, whole, atol=1e-4, rtol=0)


def test_engines_keep_the_model_bias_free():
    """f(a x) = a f(x) through the fastest engine too."""
    model = small_model()
    engine = make_engine(model, "jit")
    x = torch.rand(1, 3, 33, 29, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        np.testing.assert_allclose(engine(3 * x).numpy(), 3 * engine(x).numpy(), rtol=1e-4, atol=1e-5)


def test_a_multiscale_model_gets_an_exact_engine():
    """The Laplacian-pyramid resnet's pads depend on the size: whatever auto picks equals eager at odd sizes."""
    model = small_model({"type": "resnet", "channels": 3, "levels": 2, "filters": 8, "no_layers": 1})
    auto = AutoEngine(model, after_pixels=0)
    x = torch.rand(1, 3, 45, 71, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        got, expected = auto(x), model(x)
    assert auto.name in ("onnxruntime", "jit", "eager")
    assert float((got - expected).abs().max()) <= 1e-4


@pytest.mark.parametrize("spec", [{"type": "drunet", "channels": 3, "filters": 4, "blocks": 1, "scales": 3},
                                  {"type": "dncnn_shuffle", "channels": 3, "depth": 3, "filters": 8, "factor": 2}])
def test_a_model_that_pads_to_its_grid_gets_the_fast_engines_at_every_size(spec):
    """A UNet zero-pads to its grid inside, a step a trace would freeze at the example's size: the traced engines
    pad outside instead, so they hold at off-grid sizes, and auto takes onnxruntime for it."""
    pytest.importorskip("onnxruntime")
    model = small_model(spec)
    auto = AutoEngine(model, after_pixels=0)
    rng = np.random.default_rng(3)
    with torch.inference_mode():
        for height, width in ((37, 53), (64, 40), (9, 101)):
            x = torch.from_numpy(rng.random((1, 3, height, width), dtype=np.float32))
            expected = model(x)
            for engine in (auto, make_engine(model, "jit")):
                got = engine(x)
                assert got.shape == expected.shape
                assert float((got - expected).abs().max()) <= 1e-4
    assert auto.name == "onnxruntime"


def test_auto_starts_eager_and_sets_up_a_faster_engine_after_enough_pixels(monkeypatch):
    model = small_model()
    built = []
    real_build = engines.build
    monkeypatch.setattr(engines, "build", lambda name, m: built.append(name) or real_build(name, m))
    auto = AutoEngine(model, after_pixels=3000)
    x = torch.rand(1, 3, 40, 40)
    with torch.inference_mode():
        auto(x)
        assert auto.name == "eager" and not built  # 1,600 pixels: not worth a set-up yet
        auto(x)
    assert built and auto.name == built[-1] == next(
        n for n in engines.AUTO_ORDER if n != "onnxruntime" or has_onnxruntime())


def has_onnxruntime():
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def test_auto_falls_back_when_onnxruntime_cannot_be_imported(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    model = small_model()
    auto = AutoEngine(model, after_pixels=0)
    with torch.inference_mode():
        auto(torch.rand(1, 3, 20, 20))
    assert auto.name == "jit"
    with pytest.raises(BfcnnError, match=r"pip install 'bfcnn\[onnx\]'"):
        make_engine(model, "onnxruntime")


def test_auto_skips_an_engine_that_differs_and_a_forced_one_is_refused(monkeypatch):
    """An engine off by 1e-3 is never auto's pick, and forcing it is a clear error, not a wrong image."""
    model = small_model()
    real_build = engines.build

    def off(name, m):
        engine = real_build(name, m)
        return engines.Engine(name, lambda x: engine(x) + 1e-3) if name != "eager" else engine
    monkeypatch.setattr(engines, "build", off)
    monkeypatch.setattr(engines, "AUTO_ORDER", ("jit",))
    auto = AutoEngine(model, after_pixels=0)
    with torch.inference_mode():
        auto(torch.rand(1, 3, 20, 20))
    assert auto.name == "eager"
    with pytest.raises(BfcnnError, match="differs from eager"):
        make_engine(model, "jit")


def test_unknown_engine_is_bad_input(tmp_path):
    with pytest.raises(BfcnnError, match="engine must be one of auto, eager"):
        Denoiser(small_model(), engine="fast")
    done = subprocess.run([sys.executable, "-m", "bfcnn", "denoise", str(tmp_path), "-o", str(tmp_path / "o"),
                           "--engine", "fast"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "invalid choice: 'fast'" in done.stderr and "onnxruntime" in done.stderr


def test_cpu_only_engines_are_refused_on_a_gpu_or_in_bf16():
    with pytest.raises(BfcnnError, match="CPU in fp32 only"):
        make_engine(small_model(), "jit", precision="bf16")
    assert make_engine(small_model(), "auto", precision="bf16").name == "eager"


def test_denoise_cli_runs_with_a_forced_engine(tmp_path):
    from PIL import Image

    image = (np.random.default_rng(3).random((40, 52, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    outputs = {}
    for name in ("eager", "jit"):
        done = subprocess.run([sys.executable, "-m", "bfcnn", "denoise", str(tmp_path / "a.png"), "-o",
                               str(tmp_path / name), "--engine", name, "-q"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        outputs[name] = np.asarray(Image.open(tmp_path / name / "a.png")).astype(int)
    assert np.abs(outputs["eager"] - outputs["jit"]).max() <= 1  # 1e-4 apart before rounding to 8 bits


def test_trainer_auto_uses_channels_last_on_cpu_with_the_same_losses(tmp_path):
    """train.channels_last: auto is channels-last on a CPU too (faster there, BENCHMARKS.md); the losses of
    its steps are NCHW's within float tolerance."""
    from bfcnn.train import Trainer

    losses = {}
    for setting in ("auto", False):
        config = bfcnn.load_config({
            "seed": 1, "device": "cpu",
            "model": {"type": "dncnn", "channels": 3, "depth": 4, "filters": 8},
            "noise": {"type": "additive_gaussian", "sigma_range": [5, 50]},
            "dataset": {"type": "sample_images", "batch_size": 2, "input_shape": [24, 24, 3]},
            "loss": {"type": "mse"},
            "train": {"total_steps": 4, "progress": False, "tensorboard": False, "channels_last": setting,
                      "optimizer": {"type": "adam", "learning_rate": 0.01}}})
        trainer = Trainer(config, tmp_path / str(setting))
        trainer.setup()
        assert trainer.channels_last == (setting == "auto")
        batches = trainer.dataset.batches(0)
        losses[setting] = [trainer.step(next(batches))[0] for _ in range(4)]
    np.testing.assert_allclose(losses["auto"], losses[False], rtol=1e-4)
    assert len(set(losses[False])) == 4  # the weights moved: the comparison covers updated steps


def test_evaluate_runs_the_engine_it_is_given(tmp_path, monkeypatch):
    """evaluate's `engine` (and --engine): the figures equal eager's; an unknown name is a config error."""
    from PIL import Image

    from bfcnn.config import validate
    from bfcnn.errors import ConfigError
    from bfcnn.evaluate import evaluate_models

    folder = tmp_path / "set"
    folder.mkdir()
    for i in range(2):
        Image.fromarray((np.random.default_rng(i).random((40, 56, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    used = []
    real_make = engines.make_engine

    def spy(module, name="auto", *args, **kwargs):
        engine = real_make(module, name, *args, **kwargs)
        used.append(engine.name)
        return engine
    monkeypatch.setattr("bfcnn.evaluate.make_engine", spy)
    cfg = {"directories": [str(folder)], "sigmas": [25], "metrics": [{"type": "psnr"}]}
    psnr = {name: evaluate_models([("m", small_model(), "m")], {**cfg, "engine": name}, tmp_path / name)
            ["results"][0]["psnr"] for name in ("eager", "jit")}
    assert used == ["eager", "jit"]
    assert psnr["jit"] == pytest.approx(psnr["eager"], abs=1e-3)
    validate({"evaluate": {"engine": "jit"}})
    with pytest.raises(ConfigError, match="engine"):
        validate({"evaluate": {"engine": "fast"}})
