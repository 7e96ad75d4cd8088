"""bfcnn explain: adaptive filters, spread map, net bias and effective dimensionality, checked on models whose
Jacobian is known (a fixed blur, registered through a plugin) and on small DnCNNs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bfcnn
from bfcnn import explain as ex
from bfcnn.checkpoint import save_model
from bfcnn.cli import main
from bfcnn.errors import BfcnnError
from bfcnn.images import write_image
from bfcnn.registry import hookimpl, load_registries

RADIUS = 2


def blur_kernel():
    """A fixed, deliberately asymmetric 5 x 5 kernel (so a flipped or shifted filter cannot pass) summing to 1."""
    yy, xx = np.mgrid[-RADIUS:RADIUS + 1, -RADIUS:RADIUS + 1].astype(np.float64)
    kernel = np.exp(-((xx - 0.4) ** 2 / 2.0 + (yy + 0.3) ** 2 / 1.2))
    kernel[0, 4] += 0.3
    return kernel / kernel.sum()


class Blur(nn.Module):
    """A linear (so bias-free) model: the same blur on every channel, zero padding."""

    bias_free = True

    def __init__(self, channels=3):
        super().__init__()
        self.channels = channels
        self.register_buffer("kernel", torch.tensor(blur_kernel(), dtype=torch.float32))

    def forward(self, x):
        weight = self.kernel.to(x.dtype).expand(self.channels, 1, *self.kernel.shape)
        return F.conv2d(x, weight, padding=RADIUS, groups=self.channels)


class BlurPlugin:
    @hookimpl
    def register_models(self, register):
        register("test_blur", Blur, {"type": "object", "additionalProperties": False,
                                     "properties": {"channels": {"type": "integer", "minimum": 1}}},
                 "a fixed blur (tests)")


def exact_blur_dimensionality(channels, h, w):
    """||J||_F^2 of the zero-padded blur, counted offset by offset: C sum_d k_d^2 (H - |dy|)(W - |dx|)."""
    kernel = blur_kernel()
    total = 0.0
    for i in range(kernel.shape[0]):
        for j in range(kernel.shape[1]):
            total += kernel[i, j] ** 2 * (h - abs(i - RADIUS)) * (w - abs(j - RADIUS))
    return channels * total


def small_dncnn(bias_free=True, channels=3, seed=0):
    torch.manual_seed(seed)
    model = bfcnn.build("model", {"type": "dncnn", "channels": channels, "depth": 4, "filters": 8,
                                  "bias_free": bias_free})
    return model.eval()


def image(channels=3, h=16, w=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, channels, h, w, generator=generator)


def test_filters_of_a_blur_are_its_kernel():
    y = image(3, 20, 20)
    pixels = [(8, 9), (11, 6), (2, 2)]
    rows = ex.adaptive_filters(Blur(3), y, pixels)
    assert rows.shape == (3, 3, 20, 20)
    kernel = blur_kernel()
    for (px, py), row in zip(pixels, rows):
        expected = np.zeros((20, 20))
        expected[py - RADIUS:py + RADIUS + 1, px - RADIUS:px + RADIUS + 1] = kernel  # out[p] = sum_d k[d] in[p+d]
        np.testing.assert_allclose(row.sum(0).numpy(), expected, atol=1e-6)
        for plane in row:  # the channel-mean output: each input channel carries a third of the kernel
            np.testing.assert_allclose(plane.numpy(), expected / 3, atol=1e-6)


def test_spread_map_of_a_blur_is_the_kernel_centre_and_spread():
    h, w = 18, 22
    result = ex.spread_map(Blur(3), image(3, h, w))
    kernel = blur_kernel()
    dy, dx = np.mgrid[-RADIUS:RADIUS + 1, -RADIUS:RADIUS + 1]
    mean_x, mean_y = (kernel * dx).sum(), (kernel * dy).sum()
    spread = np.sqrt((kernel * ((dx - mean_x) ** 2 + (dy - mean_y) ** 2)).sum())
    inner = (slice(RADIUS, h - RADIUS), slice(RADIUS, w - RADIUS))
    rows, cols = np.mgrid[0:h, 0:w]
    np.testing.assert_allclose(result["weight_sum"].numpy()[inner], 1.0, atol=1e-5)
    np.testing.assert_allclose(result["centre_x"].numpy()[inner], (cols + mean_x)[inner], atol=1e-3)
    np.testing.assert_allclose(result["centre_y"].numpy()[inner], (rows + mean_y)[inner], atol=1e-3)
    np.testing.assert_allclose(result["spread"].numpy()[inner], spread, atol=1e-3)
    assert result["net_bias"] < 1e-6
    # the per-pixel statistics of a drawn filter use the same definition
    stats = ex.filter_stats(ex.adaptive_filters(Blur(3), image(3, h, w), [(10, 9)])[0].sum(0), 10, 9)
    assert stats["spread"] == pytest.approx(spread, abs=1e-4)
    assert stats["centre"] == pytest.approx([10 + mean_x, 9 + mean_y], abs=1e-4)


class Sharpen(Blur):
    """2 x identity - blur: weights sum to 1, negative lobes around a positive centre (negative second moment)."""

    def forward(self, x):
        return 2 * x - super().forward(x)


class HighPass(Blur):
    """identity - blur: weights sum to 0, so no centre or spread."""

    def forward(self, x):
        return x - super().forward(x)


def test_spread_is_undefined_for_sharpening_and_zero_sum_filters():
    h, w = 12, 12
    inner = (slice(RADIUS, h - RADIUS), slice(RADIUS, w - RADIUS))
    sharp = ex.spread_map(Sharpen(3), image(3, h, w))
    np.testing.assert_allclose(sharp["weight_sum"].numpy()[inner], 1.0, atol=1e-5)
    assert sharp["sharpening"][inner].all() and torch.isnan(sharp["spread"][inner]).all()
    high = ex.spread_map(HighPass(3), image(3, h, w))
    assert high["low_sum"][inner].all() and torch.isnan(high["spread"][inner]).all()
    assert not ex.spread_map(Blur(3), image(3, h, w))["sharpening"].any()


def test_dimensionality_of_a_blur_is_exact():
    channels, h, w = 3, 12, 10
    result = ex.effective_dimensionality(Blur(channels), image(channels, h, w))
    assert result["method"] == "exact"
    assert result["frobenius"] == pytest.approx(exact_blur_dimensionality(channels, h, w), rel=1e-5)
    assert result["trace"] == pytest.approx(channels * h * w * blur_kernel()[RADIUS, RADIUS], rel=1e-5)


@pytest.mark.parametrize("which", ["blur", "dncnn"])
def test_probe_estimate_agrees_with_exact(which):
    model = Blur(3) if which == "blur" else small_dncnn()
    if which == "dncnn":  # a random DnCNN is close to the identity (an easy case): make the residual branch count
        with torch.no_grad():
            [conv for conv in model.modules() if isinstance(conv, nn.Conv2d)][-1].weight.mul_(30)
            for norm in model.modules():  # unit scales, not the small ones a fresh model starts with
                if hasattr(norm, "running_var"):
                    norm.weight.fill_(1.0)
    y = image(3, 12, 12, seed=3)
    exact = ex.effective_dimensionality(model, y)
    estimate = ex.effective_dimensionality(model, y, probes=64, seed=1)
    if which == "dncnn":
        assert abs(exact["frobenius"] - y.numel()) > 0.2 * y.numel()  # far from the identity's value
    assert estimate["method"] == "hutchinson"
    assert estimate["frobenius"] == pytest.approx(exact["frobenius"], rel=0.05)
    assert estimate["trace"] == pytest.approx(exact["trace"], rel=0.05)
    assert estimate["frobenius_stderr"] < 0.05 * exact["frobenius"]


def test_full_jacobian_matches_plain_autograd():
    model = small_dncnn(channels=3)
    y = image(3, 6, 5, seed=4)
    ours = ex.jacobian(model, y, chunk_size=16)
    reference = torch.autograd.functional.jacobian(model, y).reshape(y.numel(), y.numel())
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-4)


class PlainRelu(torch.autograd.Function):
    """An old-style autograd.Function (a stand-in for a plugin's custom op): torch.func cannot transform it and
    it has no forward-mode formula, so explain must fall back to plain autograd."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x > 0).to(grad.dtype)


class TwoLayer(nn.Module):
    bias_free = True

    def __init__(self, custom):
        super().__init__()
        torch.manual_seed(7)
        self.first = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.second = nn.Conv2d(8, 3, 3, padding=1, bias=False)
        self.custom = custom

    def forward(self, x):
        hidden = self.first(x)
        return self.second(PlainRelu.apply(hidden) if self.custom else torch.relu(hidden))


def test_models_torch_func_cannot_transform_fall_back_to_autograd():
    y = image(3, 10, 9, seed=8) - 0.5
    custom, plain = TwoLayer(custom=True), TwoLayer(custom=False)
    with pytest.raises(Exception):
        torch.func.jvp(custom, (y,), (y,))
    pixels = [(3, 4), (7, 2)]
    torch.testing.assert_close(ex.adaptive_filters(custom, y, pixels), ex.adaptive_filters(plain, y, pixels))
    ours, reference = ex.spread_map(custom, y), ex.spread_map(plain, y)
    torch.testing.assert_close(ours["weight_sum"], reference["weight_sum"])
    assert ours["net_bias"] < 1e-5
    estimate = ex.effective_dimensionality(custom, y, probes=4)
    assert estimate["frobenius"] == pytest.approx(ex.effective_dimensionality(plain, y, probes=4)["frobenius"])
    torch.testing.assert_close(ex.jacobian(custom, y), ex.jacobian(plain, y))


def test_net_bias_is_rounding_for_bias_free_and_large_otherwise():
    y = image(3, 24, 24, seed=5) * 0.8 + 0.1
    bias_free = ex.net_bias(small_dncnn(bias_free=True), y)
    assert bias_free < 1e-5
    # the ordinary twin, with biases and batch-norm statistics of the size training gives them
    biased = small_dncnn(bias_free=False)
    generator = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for module in biased.modules():
            if isinstance(module, nn.Conv2d) and module.bias is not None:
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(0.2 * torch.randn(module.running_mean.shape, generator=generator))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
    assert biased.bias_free is False
    value = ex.net_bias(biased, y)
    assert value > 1e-2
    assert value > 1e3 * bias_free


def test_pixels_are_picked_on_edges_texture_and_flat_areas():
    h, w = 48, 48
    picture = np.full((h, w, 3), 0.5, np.float32)
    picture[:, :12] = 0.2
    picture[:, 12:24] = 0.8  # vertical edges at x = 12 and x = 24
    rows, cols = np.mgrid[0:h, 0:w]
    texture = (np.sin(rows * 1.3) * np.sin(cols * 1.7) * 0.4 + 0.5)[..., None]
    picture[:24, 24:] = texture[:24, 24:]  # texture top right, flat bottom right
    picked = ex.pick_pixels(picture, per_kind=1, margin=4)
    kinds = {kind: (x, y) for x, y, kind in picked}
    assert set(kinds) == {"edge", "texture", "flat"}
    x, y = kinds["edge"]
    assert min(abs(x - 12), abs(x - 24)) <= 2 and (x < 22 or y >= 27)
    x, y = kinds["texture"]
    assert x >= 27 and y < 21
    x, y = kinds["flat"]
    assert np.ptp(picture[y - 4:y + 5, x - 4:x + 5]) == 0


def test_explain_report_through_a_plugin_model(tmp_path, monkeypatch):
    registries = load_registries(extra_plugins=[BlurPlugin()], autoload=False)
    monkeypatch.setattr("bfcnn.registry.loading.default_registries", lambda: registries)
    assert "test_blur" in registries["model"].names()
    weights = tmp_path / "blur.safetensors"
    save_model(weights, bfcnn.build("model", {"type": "test_blur", "channels": 3}), {"type": "test_blur",
                                                                                    "channels": 3})
    picture = tmp_path / "picture.png"
    write_image(picture, image(3, 14, 16).permute(0, 2, 3, 1)[0].numpy())
    out = tmp_path / "out"
    code = main(["explain", "--model", str(weights), str(picture), "--sigma", "20", "--pixels", "7,6", "9,8",
                 "--sigmas", "0", "30", "-o", str(out)])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    for name in ("filters.png", "spread.png", "dimensionality.png", "filters.npz"):
        assert (out / name).is_file() and name in report["files"]
    assert report["model"]["bias_free"] is True and report["net_bias"] < 1e-6
    assert [(f["x"], f["y"]) for f in report["filters"]] == [(7, 6), (9, 8)]
    for item in report["filters"]:
        assert item["weight_sum"] == pytest.approx(1.0, abs=1e-5)
        assert item["self_weight"] == pytest.approx(blur_kernel()[RADIUS, RADIUS], abs=1e-6)
    levels = report["dimensionality"]["levels"]
    assert report["dimensionality"]["method"] == "exact" and [lv["sigma"] for lv in levels] == [0, 30]
    for level in levels:  # a linear model: the same Jacobian at every noise level
        assert level["frobenius"] == pytest.approx(exact_blur_dimensionality(3, 14, 16), rel=1e-5)
    saved = np.load(out / "filters.npz")
    window, (x0, y0) = saved["filter_0"], saved["origin_0"]
    assert window.sum() == pytest.approx(1.0, abs=1e-5)
    assert window.sum(0)[6 - y0, 7 - x0] == pytest.approx(blur_kernel()[RADIUS, RADIUS], abs=1e-6)


def test_explain_api_takes_a_module_and_an_array(tmp_path):
    picture = image(1, 20, 20).permute(0, 2, 3, 1)[0].numpy()
    report = ex.explain(small_dncnn(channels=1), picture, sigma=30, sigmas=[10, 40], probes=4, exact=False,
                        output_dir=tmp_path, figures=False)
    assert report["dimensionality"]["method"] == "hutchinson"
    assert len(report["filters"]) == 6 and {f["kind"] for f in report["filters"]} == {"edge", "texture", "flat"}
    assert report["net_bias"] < 1e-5
    assert 0 <= report["spread_map"]["undefined_fraction"] <= 1
    assert json.loads((tmp_path / "report.json").read_text())["files"] == ["report.json", "filters.npz"]


def test_explain_api_takes_what_load_model_returns(tmp_path):
    """bfcnn.load_model gives a Denoiser: explain and its parts take it as they take its module."""
    weights = tmp_path / "model.safetensors"
    save_model(weights, small_dncnn(), {"type": "dncnn", "channels": 3, "depth": 4, "filters": 8})
    denoiser = bfcnn.load_model(weights)
    y = image(3, 12, 12)
    report = ex.explain(denoiser, y, sigma=25, pixels=[(6, 6)], sigmas=[25], probes=2, exact=False)
    assert report["net_bias"] < 1e-5
    assert torch.equal(ex.jacobian(denoiser, y), ex.jacobian(denoiser.module, y))


@pytest.mark.parametrize("name", bfcnn.names("model"))
def test_every_registered_model_can_be_explained(name):
    model = bfcnn.build("model", {"type": name}).eval()
    channels = ex.model_channels(model)
    report = ex.explain(model, image(channels, 32, 32), sigma=25, pixels=[(16, 16)], sigmas=[25], probes=2,
                        exact=False)
    assert np.isfinite(report["net_bias"])
    assert np.isfinite(report["dimensionality"]["levels"][0]["frobenius"])
    if getattr(model, "bias_free", False):
        assert report["net_bias"] < 1e-5  # rounding level in float32 on the CPU (about 1e-7 measured)


@pytest.mark.parametrize("argv", [
    ["--model", "MODEL", "missing.png"],
    ["--model", "no-such-model", "PICTURE"],
    ["--model", "JUNK", "PICTURE"],
    ["--model", "MODEL", "PICTURE", "--pixels", "3;4"],
    ["--model", "MODEL", "PICTURE", "--pixels", "40,4"],
    ["--model", "MODEL", "PICTURE", "--crop", "0,0,99,4"],
    ["--model", "MODEL", "PICTURE", "--device", "nonsense"],
])
def test_cli_bad_input_exits_2(tmp_path, capsys, argv):
    weights = tmp_path / "model.safetensors"
    save_model(weights, small_dncnn(), {"type": "dncnn", "channels": 3, "depth": 4, "filters": 8})
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    picture = tmp_path / "picture.png"
    write_image(picture, np.full((10, 12, 3), 0.5, np.float32))
    replace = {"MODEL": str(weights), "JUNK": str(junk), "PICTURE": str(picture),
               "missing.png": str(tmp_path / "missing.png")}
    code = main(["explain", *[replace.get(a, a) for a in argv], "-o", str(tmp_path / "out")])
    assert code == 2
    error = capsys.readouterr().err
    assert "bfcnn: error:" in error and "Traceback" not in error


def test_cli_output_that_is_a_file_exits_2_before_any_work(tmp_path, capsys):
    weights = tmp_path / "model.safetensors"
    save_model(weights, small_dncnn(), {"type": "dncnn", "channels": 3, "depth": 4, "filters": 8})
    picture = tmp_path / "picture.png"
    write_image(picture, np.full((10, 12, 3), 0.5, np.float32))
    code = main(["explain", "--model", str(weights), str(picture), "-o", str(picture)])
    assert code == 2
    error = capsys.readouterr().err
    assert "is a file, not a folder" in error and "Traceback" not in error


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cli_cuda_without_cuda_says_so(tmp_path, capsys):
    weights = tmp_path / "model.safetensors"
    save_model(weights, small_dncnn(), {"type": "dncnn", "channels": 3, "depth": 4, "filters": 8})
    picture = tmp_path / "picture.png"
    write_image(picture, np.full((10, 12, 3), 0.5, np.float32))
    assert main(["explain", "--model", str(weights), str(picture), "-o", str(tmp_path / "out"), "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def weights_and_picture(tmp_path, size=(10, 12), value=0.5):
    weights = tmp_path / "model.safetensors"
    save_model(weights, small_dncnn(), {"type": "dncnn", "channels": 3, "depth": 4, "filters": 8})
    picture = tmp_path / "picture.png"
    write_image(picture, np.full((*size, 3), value, np.float32))
    return weights, picture


def refuse_to_compute(*args, **kwargs):
    raise AssertionError("the computation started before the input was checked")


@pytest.mark.parametrize("argv, message", [
    (["--chunk-size", "0"], "chunk size: products per batch must be a positive integer"),
    (["--chunk-size", "-3"], "chunk size: products per batch must be a positive integer"),
    (["--sigma", "nan"], "finite and non-negative"),
    (["--sigma", "inf"], "finite and non-negative"),
    (["--sigmas", "nan"], "finite and non-negative"),
    (["--sigmas", "10", "inf"], "finite and non-negative"),
])
def test_cli_bad_settings_exit_2_before_any_work(tmp_path, capsys, monkeypatch, argv, message):
    weights, picture = weights_and_picture(tmp_path)
    monkeypatch.setattr(ex, "spread_map", refuse_to_compute)
    out = tmp_path / "out"
    assert main(["explain", "--model", str(weights), str(picture), "-o", str(out), *argv]) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
    assert not out.exists()


@pytest.mark.parametrize("settings", [{"sigma": float("nan")}, {"sigma": float("inf")}, {"sigma": -1},
                                      {"sigmas": [10, float("nan")]}, {"sigmas": [float("-inf")]},
                                      {"chunk_size": 0}, {"chunk_size": -3}, {"chunk_size": 2.5}])
def test_api_bad_settings_raise_before_any_work(monkeypatch, settings):
    monkeypatch.setattr(ex, "spread_map", refuse_to_compute)
    with pytest.raises(BfcnnError, match="noise levels must be finite|chunk size"):
        ex.explain(Blur(3), image(3, 8, 8), **{"pixels": [(4, 4)], "sigmas": [25], **settings})


def test_chunk_size_of_the_full_jacobian_must_be_positive():
    with pytest.raises(BfcnnError, match="chunk size"):
        ex.jacobian(Blur(3), image(3, 4, 4), chunk_size=0)


@pytest.mark.parametrize("where", ["below a file", "in /proc"])
def test_cli_output_that_cannot_be_a_folder_exits_2_before_any_work(tmp_path, capsys, monkeypatch, where):
    weights, picture = weights_and_picture(tmp_path)
    if where == "in /proc":
        if not Path("/proc/self").is_dir():
            pytest.skip("needs Linux's /proc, where no folder can be made")
        out = Path("/proc/bfcnn-explain-test")
    else:
        out = picture / "out"  # a path below an existing file
    monkeypatch.setattr(ex, "spread_map", refuse_to_compute)
    assert main(["explain", "--model", str(weights), str(picture), "-o", str(out)]) == 2
    error = capsys.readouterr().err
    assert f"cannot create the output folder {out}" in error and "Traceback" not in error


def test_output_folder_that_cannot_be_written_is_bad_input(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):  # what a read-only folder gives (root ignores permission bits, so simulated)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ex.tempfile, "TemporaryFile", refuse)
    monkeypatch.setattr(ex, "spread_map", refuse_to_compute)
    with pytest.raises(BfcnnError, match="cannot write in the output folder .*: Permission denied"):
        ex.explain(Blur(3), image(3, 8, 8), pixels=[(4, 4)], sigmas=[25], output_dir=tmp_path)


def test_output_folder_is_made_before_the_computation(tmp_path, monkeypatch):
    out = tmp_path / "new" / "folder"
    made = []
    monkeypatch.setattr(ex, "spread_map", lambda *a, **k: made.append(out.is_dir()) or refuse_to_compute())
    with pytest.raises(AssertionError, match="computation started"):
        ex.explain(Blur(3), image(3, 8, 8), pixels=[(4, 4)], sigmas=[25], output_dir=out)
    assert made == [True]


def test_one_pixel_image_says_the_minimum_size_for_picking_pixels(tmp_path, capsys, monkeypatch):
    weights, picture = weights_and_picture(tmp_path, size=(1, 1))
    with monkeypatch.context() as patch:
        patch.setattr(ex, "spread_map", refuse_to_compute)
        assert main(["explain", "--model", str(weights), str(picture), "-o", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "at least 2 x 2 pixels" in error and "--pixels" in error and "Traceback" not in error
    with pytest.raises(BfcnnError, match="at least 2 x 2"):
        ex.pick_pixels(np.zeros((1, 5, 3)))
    # with the pixel given, a 1 x 1 image is explained (its filter is a single weight)
    assert main(["explain", "--model", str(weights), str(picture), "--pixels", "0,0", "--sigmas", "25",
                 "-o", str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "report.json").read_text())["dimensionality"]["dimensions"] == 3


def strict_json(text):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_black_image_at_sigma_0_writes_strict_json_with_a_null_net_bias(tmp_path, capsys):
    weights, picture = weights_and_picture(tmp_path, size=(12, 12), value=0.0)
    out = tmp_path / "out"
    assert main(["explain", "--model", str(weights), str(picture), "--sigma", "0", "--sigmas", "0", "-o",
                 str(out)]) == 0
    printed = capsys.readouterr().out
    assert "net bias n/a;" in printed and "see the notes in report.json" in printed
    report = strict_json((out / "report.json").read_text())
    assert report["net_bias"] is None
    assert any(note.startswith("net_bias is null: the denoised image f(y) is zero") for note in report["notes"])
    assert "spread.png" in report["files"]


class NotANumber(Blur):
    """A broken model: every output NaN."""

    def forward(self, x):
        return super().forward(x) * float("nan")


def test_report_of_a_model_with_nan_output_is_strict_json(tmp_path):
    report = ex.explain(NotANumber(3), image(3, 10, 10), sigma=25, pixels=[(5, 5)], sigmas=[25], probes=2,
                        exact=False, output_dir=tmp_path)
    saved = strict_json((tmp_path / "report.json").read_text())
    assert saved["net_bias"] is None and report["net_bias"] is None
    assert "net_bias is null: the denoised image f(y) has NaN or infinite values" in saved["notes"]
    assert saved["dimensionality"]["levels"][0]["frobenius"] is None
    assert "dimensionality.levels[0].frobenius is null: it came out as nan (undefined)" in saved["notes"]


def test_explain_leaves_the_callers_model_as_it_was(tmp_path):
    model = small_dncnn().train()
    before = {name: (tensor.dtype, tensor.device, tensor.clone()) for name, tensor in model.state_dict().items()}
    report = ex.explain(model, image(3, 12, 12), sigma=25, pixels=[(6, 6)], sigmas=[25], probes=2, exact=False,
                        dtype=torch.float64)
    assert report["dtype"] == "float64" and report["net_bias"] < 1e-12
    assert model.training and all(module.training for module in model.modules())
    for name, tensor in model.state_dict().items():
        dtype, device, values = before[name]
        assert tensor.dtype == dtype and tensor.device == device and torch.equal(tensor, values), name
    # what bfcnn.load_model returns is left alone too
    weights = tmp_path / "model.safetensors"
    save_model(weights, small_dncnn(), {"type": "dncnn", "channels": 3, "depth": 4, "filters": 8})
    denoiser = bfcnn.load_model(weights)
    ex.explain(denoiser, image(3, 12, 12), sigma=25, pixels=[(6, 6)], sigmas=[25], probes=2, exact=False,
               dtype=torch.float64)
    assert all(p.dtype == torch.float32 for p in denoiser.module.parameters())


def test_explain_uses_the_shipped_default_model_like_denoise(tmp_path):
    from bfcnn.denoise import DEFAULT_MODEL

    picture = tmp_path / "picture.png"
    write_image(picture, image(3, 12, 12).permute(0, 2, 3, 1)[0].numpy())
    reports = []
    for model in ([], ["--model", DEFAULT_MODEL]):
        out = tmp_path / f"out{len(reports)}"
        code = main(["explain", str(picture), "--sigma", "10", "--pixels", "5,5", "--sigmas", "10", "--probes", "2",
                     "-o", str(out), *model])
        assert code == 0
        reports.append(json.loads((out / "report.json").read_text()))
    assert reports[0]["model"]["bias_free"] is True
    assert reports[0]["model"] == reports[1]["model"] and reports[0]["filters"] == reports[1]["filters"]
