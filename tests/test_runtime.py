"""The torch-free runtime: loading exported files, tiling, errors, and that it never imports torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import bfcnn
from bfcnn import runtime
from bfcnn.errors import BfcnnError, MissingDependencyError

ROOT = Path(__file__).resolve().parents[1]
FAST = {"check_sizes": [[16, 16]], "check_images": None}
BACKENDS = {"onnx": {"type": "onnx", **FAST}, "tflite": {"type": "tflite", "dynamic_signature": False, **FAST}}


def tiny_model(channels=3):
    torch.manual_seed(0)
    return bfcnn.build("model", {"type": "dncnn", "channels": channels, "depth": 4, "filters": 4}).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{(backend, io): file} for one tiny 3-channel model, and the model."""
    model, folder, files = tiny_model(), tmp_path_factory.mktemp("exported"), {}
    for backend, spec in BACKENDS.items():
        for io in ("float32", "uint8"):
            try:
                exporter = bfcnn.build("exporter", {**spec, "io": io, "filename": f"model_{io}.{backend}"})
            except MissingDependencyError:
                continue
            files[backend, io] = Path(exporter(model, folder, torch.rand(1, 3, 32, 32))["variants"]["float32"])
    return model, files


def need(exported, backend, io="float32"):
    model, files = exported
    if (backend, io) not in files or backend not in runtime.available_backends():
        pytest.skip(f"{backend} extra not installed")
    return model, files[backend, io]


def run_in_subprocess(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_importing_the_runtime_does_not_import_torch():
    out = run_in_subprocess("import sys, bfcnn.runtime; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    assert out.strip() == "[]"


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
def test_plain_module_runs_a_file_without_the_package_or_torch(backend, exported):
    _, path = need(exported, backend)
    code = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("bfcnn_runtime", {str(ROOT / 'bfcnn' / 'runtime.py')!r})
rt = importlib.util.module_from_spec(spec); spec.loader.exec_module(rt)
import numpy as np
y = rt.denoise_array(np.full((40, 50, 3), 0.5, np.float32), {str(path)!r}, tile=24, margin=8, blend=4)
assert y.shape == (40, 50, 3)
print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'bfcnn')))
"""
    assert run_in_subprocess(code).strip() == "[]"


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
def test_load_runs_any_size_and_matches_torch(backend, exported):
    model, path = need(exported, backend)
    loaded = runtime.load(path)  # backend from the suffix
    assert loaded.backend == backend and loaded.io == "float32" and loaded.channels == 3
    for shape in [(1, 3, 33, 47), (2, 3, 64, 20), (1, 3, 33, 47)]:
        x = np.random.default_rng(sum(shape)).random(shape, dtype=np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        got = loaded(x)
        assert got.shape == shape and got.dtype == np.float32
        assert np.abs(got - expected).max() <= 1e-4


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
def test_tiled_denoise_equals_the_whole_image(backend, exported):
    model, path = need(exported, backend)
    image = np.random.default_rng(3).random((70, 90, 3), dtype=np.float32)
    whole = runtime.denoise_array(image, path, tile=None)
    # receptive field of a depth-4 3x3 net: radius 4, well inside the margin
    tiled = runtime.denoise_file_array(image, path, backend=backend, tile=32, margin=8, blend=4)
    with torch.no_grad():
        expected = model(torch.from_numpy(image.transpose(2, 0, 1)[None])).numpy()[0].transpose(1, 2, 0)
    assert np.abs(whole - expected).max() <= 1e-4
    assert np.abs(tiled - expected).max() <= 1e-4


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
def test_uint8_files_run_through_the_float_interface(backend, exported):
    model, path = need(exported, backend, "uint8")
    loaded = runtime.load(path, backend)
    assert loaded.io == "uint8" and loaded.layout == "NHWC" and loaded.channels == 3
    x = np.random.default_rng(4).random((1, 3, 25, 31), dtype=np.float32)
    quantized = np.round(x * 255) / 255
    with torch.no_grad():
        expected = np.clip(model(torch.from_numpy(quantized.astype(np.float32))).numpy(), 0, 1)
    got = loaded(x)
    assert got.dtype == np.float32 and got.shape == x.shape
    assert np.abs(got - expected).max() <= 1 / 255 + 1e-6  # one grey level: the output is rounded to 8 bits


def test_bad_inputs_are_bfcnn_errors(exported, tmp_path):
    with pytest.raises(BfcnnError, match="suffix"):
        runtime.load(tmp_path / "model.pt")
    with pytest.raises(BfcnnError, match="bfcnn.load_model"):
        runtime.load(tmp_path / "model.onnx", backend="torch")
    with pytest.raises(BfcnnError, match="not found"):
        runtime.load(tmp_path / "missing.tflite")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    if "onnx" in runtime.available_backends():
        with pytest.raises(BfcnnError, match="onnxruntime"):
            runtime.load(broken)
    backend = next((b for b in ("onnx", "tflite") if (b, "float32") in exported[1]), None)
    if backend is None:
        pytest.skip("no exporter extra installed")
    _, path = need(exported, backend)
    with pytest.raises(BfcnnError, match="3-channel"):
        runtime.denoise_array(np.zeros((20, 20, 1), np.float32), path)
    with pytest.raises(BfcnnError, match="channel"):
        runtime.load(path)(np.zeros((1, 1, 20, 20), np.float32))


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
def test_denoise_opens_a_file_once_for_many_images(backend, exported, monkeypatch):
    _, path = need(exported, backend)
    runtime._CACHE.clear()
    opened = []
    original = runtime.load
    monkeypatch.setattr(runtime, "load", lambda *a, **k: opened.append(a) or original(*a, **k))
    image = np.random.default_rng(5).random((20, 24, 3), dtype=np.float32)
    first = runtime.denoise_file_array(image, str(path), backend, tile=512)  # the call `bfcnn denoise` makes
    second = runtime.denoise_file_array(image, str(path), backend, tile=512)
    assert len(opened) == 1 and np.array_equal(first, second)


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
def test_gray_image_through_a_color_file_matches_the_torch_path(backend, exported):
    from bfcnn.denoise import Denoiser, denoise_array_with_runtime

    model, path = need(exported, backend)
    gray = np.random.default_rng(5).integers(0, 256, (40, 52), dtype=np.uint8)
    through_file = denoise_array_with_runtime(gray, path, backend, tile=512)
    through_torch = Denoiser(model, device="cpu").denoise(gray)
    assert through_file.shape == gray.shape and through_file.dtype == np.uint8
    assert np.abs(through_file.astype(int) - through_torch.astype(int)).max() <= 1


def test_a_multiscale_file_tiles_exactly_with_the_context_its_report_states(tmp_path):
    """The exporter writes the model's receptive radius and sampling grid into the file's report and the runtime
    tiles with them: a 3-level pyramid (40 px of context, grid 4) tiled at 37 px is the whole image. Without
    the report the file gets DEFAULT_MARGIN from any pixel, and the tiles differ. ONNX only: litert-torch 0.10
    gives a pyramid a TFLite file that runs at its converted size alone (the export check says so)."""
    from test_denoise import MULTISCALE, photo, randomized

    model = randomized(MULTISCALE["resnet, 3 levels, shared"])
    try:
        exporter = bfcnn.build("exporter", {**BACKENDS["onnx"], "filename": "pyramid.onnx"})
    except MissingDependencyError:
        pytest.skip("onnx extra not installed")
    if "onnx" not in runtime.available_backends():
        pytest.skip("onnxruntime not installed")
    report = exporter(model, tmp_path, torch.rand(1, 3, 32, 32))
    assert report["tiling"] == {"margin": model.receptive_radius, "align": model.grid, "exact": True, "pad_to": 1}
    path = Path(report["variants"]["float32"])
    loaded = runtime.load(path)
    assert (loaded.margin, loaded.align) == (model.receptive_radius, model.grid) and loaded.margin > 32
    image = photo(75, 91).astype(np.float32) / 255
    whole = runtime.denoise_array(image, loaded, tile=None)
    np.testing.assert_allclose(runtime.denoise_array(image, loaded, tile=37, blend=8), whole, atol=1e-5)
    path.with_name(path.name + ".report.json").unlink()
    bare = runtime.load(path)
    assert (bare.margin, bare.align) == (runtime.DEFAULT_MARGIN, 1)
    assert np.abs(runtime.denoise_array(image, bare, tile=37, blend=8) - whole).max() > 1e-3


def test_a_variant_file_finds_its_export_report_and_bad_reports_are_passed_over(tmp_path):
    """A TFLite export writes one report for all its files (model.tflite.report.json lists model_int8.tflite)."""
    tiling = {"margin": 40, "align": 4, "exact": True}
    for name in ("model.tflite", "model_int8.tflite", "other.tflite", "odd.tflite"):
        (tmp_path / name).write_bytes(b"not read here")
    (tmp_path / "a-broken.report.json").write_text("{not json")
    (tmp_path / "b-list.report.json").write_text("[1, 2]")
    (tmp_path / "model.tflite.report.json").write_text(json.dumps(
        {"tiling": tiling, "variants": {"float32": str(tmp_path / "model.tflite"),
                                        "int8": "somewhere/else/model_int8.tflite"}}))
    (tmp_path / "odd.tflite.report.json").write_text(json.dumps({"tiling": {"margin": "wide", "align": 4}}))
    assert runtime.report_of(tmp_path / "model_int8.tflite")["tiling"] == tiling
    assert runtime.margin_and_align(runtime.tiling_in(tmp_path / "model_int8.tflite")) == (40, 4)
    assert runtime.report_of(tmp_path / "other.tflite") is None
    assert runtime.margin_and_align(runtime.tiling_in(tmp_path / "other.tflite")) == (runtime.DEFAULT_MARGIN, 1)
    assert runtime.margin_and_align(runtime.tiling_in(tmp_path / "odd.tflite")) == (runtime.DEFAULT_MARGIN, 1)


def test_quiet_native_logs_hides_native_info_lines_only(capfd):
    with runtime.quiet_native_logs():
        os.write(2, b"I0000 00:00:1795617977.089508   10572 port.cc:153] oneDNN custom operations are on.\n")
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"E0000 a native error stays\n")
        print("a Python warning stays", file=sys.stderr)
    err = capfd.readouterr().err
    assert sorted(err.splitlines()) == ["E0000 a native error stays", "a Python warning stays"]


def test_tflite_export_and_run_print_no_native_info_lines(tmp_path):
    from bfcnn.plugins.exporters import tflite_missing
    if "tflite" not in runtime.available_backends() or tflite_missing():
        pytest.skip("tflite extra not installed")
    code = (
        "import numpy as np, torch, bfcnn\n"
        "from bfcnn import runtime\n"
        "model = bfcnn.build('model', {'type': 'dncnn', 'channels': 3, 'depth': 3, 'filters': 4}).eval()\n"
        f"exporter = bfcnn.build('exporter', {{'type': 'tflite', 'check_sizes': [[16, 16]], 'check_images': None}})\n"
        f"path = exporter(model, {str(tmp_path)!r}, torch.rand(1, 3, 32, 32))['variants']['float32']\n"
        "print(runtime.load(path)(np.zeros((1, 3, 20, 20), np.float32)).shape)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(1, 3, 20, 20)"
    assert not any(runtime.NATIVE_INFO.match(line) for line in done.stderr.splitlines()), done.stderr
