"""Exporters: every registered one exports a tiny model and checks itself; ONNX and TFLite specifics; errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import bfcnn
from bfcnn.denoise import receptive_radius
from bfcnn.errors import BfcnnError, MissingDependencyError, RunError
from bfcnn.plugins import exporters

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
HAVE_KODAK = (DATA / "test" / "Kodak24").is_dir()
FAST = {"check_sizes": [[16, 16], [23, 37]], "check_images": None}


def tiny_model(channels=3, seed=0):
    torch.manual_seed(seed)
    model = bfcnn.build("model", {"type": "dncnn", "channels": channels, "depth": 3, "filters": 4})
    with torch.no_grad():  # a trained-looking running variance, so the bias-free batch norm is not the identity
        for module in model.modules():
            if hasattr(module, "running_var"):
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def available(name) -> bool:
    try:
        bfcnn.build("exporter", {"type": name})
        return True
    except MissingDependencyError:
        return False


def example(channels=3):
    return torch.rand(1, channels, 32, 32)


@pytest.mark.parametrize("name", bfcnn.names("exporter"))
def test_every_exporter_writes_checked_files_and_a_report(name, tmp_path):
    if not available(name):
        pytest.skip(f"exporter {name} needs an extra that is not installed")
    model = tiny_model()
    report = bfcnn.build("exporter", {"type": name})(model, tmp_path, example())
    assert report["files"], "an exporter names the files it wrote"
    for path in map(Path, report["files"]):
        assert path.is_file() and path.stat().st_size > 0
        assert path.parent == tmp_path
    if "check" not in report:
        return  # a plugin exporter: the contract ends here
    assert report["check"]["float32"]["max_abs_difference"] <= report["check"]["tolerance"]
    first = Path(report["variants"]["float32"])
    saved = json.loads(first.with_name(first.name + ".report.json").read_text())
    assert saved["files"] == report["files"]
    # what the runtime tiles the files with: a depth-3 conv stack needs 3 pixels of context, on any grid
    assert saved["tiling"] == {"margin": receptive_radius(model), "align": 1, "exact": True, "pad_to": 1}
    # the check ran on random inputs and real images at several sizes
    labels = [row["input"] for row in report["check"]["float32"]["inputs"]]
    assert any(label.startswith("random 2x") for label in labels)
    assert sum(not label.startswith("random") for label in labels) >= 2


def test_onnx_is_dynamic_in_batch_height_and_width(tmp_path):
    pytest.importorskip("onnxruntime")
    from bfcnn.runtime import load

    model = tiny_model(channels=1)
    report = bfcnn.build("exporter", {"type": "onnx", **FAST})(model, tmp_path, example(1))
    runner = load(report["variants"]["float32"])
    assert runner.backend == "onnx" and runner.io == "float32" and runner.channels == 1
    for shape in [(3, 1, 19, 45), (1, 1, 70, 9)]:
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        assert np.abs(runner(x) - expected).max() <= 1e-4


@pytest.mark.parametrize("name", ["onnx", "tflite"])
def test_uint8_signature_rounds_and_clips_inside_the_graph(name, tmp_path):
    if not available(name):
        pytest.skip(f"{name} extra not installed")
    from bfcnn.runtime import load

    model = tiny_model()
    spec = {"type": name, "io": "uint8", **FAST}
    if name == "tflite":
        spec["dynamic_signature"] = False
    report = bfcnn.build("exporter", spec)(model, tmp_path, example())
    runner = load(report["variants"]["float32"])
    assert runner.io == "uint8"
    image = np.random.default_rng(1).integers(0, 256, (2, 21, 30, 3), dtype=np.uint8)
    out = runner.raw(image)
    assert out.dtype == np.uint8 and out.shape == image.shape
    with torch.no_grad():  # the same thing done by hand in torch
        y = model(torch.from_numpy(image).permute(0, 3, 1, 2).float() / 255).permute(0, 2, 3, 1).numpy()
    expected = np.clip(np.round(y * 255), 0, 255)
    assert np.abs(out.astype(np.float64) - expected).max() <= 1
    assert (out != expected).mean() < 0.01


def test_tflite_variants_are_smaller_and_report_their_psnr_loss(tmp_path):
    if not available("tflite"):
        pytest.skip("tflite extra not installed")
    model = bfcnn.build("model", {"type": "dncnn", "channels": 3, "depth": 3, "filters": 16}).eval()
    spec = {"type": "tflite", "variants": ["float16", "int8"], "dynamic_signature": False, "quality_max_images": 1,
            **FAST}
    report = bfcnn.build("exporter", spec)(model, tmp_path, example())
    sizes = report["file_bytes"]
    assert set(sizes) == {"float32", "float16", "int8"}
    assert sizes["int8"] < sizes["float16"] < sizes["float32"]
    quality = report["quality"]
    assert set(quality["psnr_loss_db"]) == {"float32", "float16", "int8"}
    assert abs(quality["psnr_loss_db"]["float32"]) < 1e-3  # float32 matches torch
    assert report["check"]["int8"]["max_abs_difference"] > report["check"]["float32"]["max_abs_difference"]


@pytest.mark.skipif(not HAVE_KODAK, reason="needs ../shared/data (Kodak24)")
def test_tflite_variant_loss_is_measured_on_kodak24(tmp_path):
    if not available("tflite"):
        pytest.skip("tflite extra not installed")
    spec = {"type": "tflite", "variants": ["int8"], "dynamic_signature": False, "quality_max_images": 2,
            "check_sizes": [[16, 16]]}
    report = bfcnn.build("exporter", spec)(tiny_model(), tmp_path, example())
    assert "Kodak24" in report["quality"]["images"] and report["quality"]["count"] == 2
    assert any("kodim" in row["input"] for row in report["check"]["float32"]["inputs"])


def test_a_failed_check_is_a_run_error(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from bfcnn import runtime

    original = runtime.ExportedModel.raw
    monkeypatch.setattr(runtime.ExportedModel, "raw", lambda self, x: original(self, x) + 1e-3)
    with pytest.raises(RunError, match="check failed"):
        bfcnn.build("exporter", {"type": "onnx", **FAST})(tiny_model(), tmp_path, example())
    report = json.loads((tmp_path / "model.onnx.report.json").read_text())  # the report says what went wrong
    assert report["check"]["float32"]["max_abs_difference"] > 1e-4


def test_a_tflite_file_that_cannot_resize_fails_its_check_and_points_to_onnx(tmp_path):
    """litert-torch 0.10 converts a pyramid at a fixed size and keeps that size in its resize and pad ops: the
    check at other sizes fails, and says what to do (the README says so too; when litert-torch learns to
    resize these graphs, this test fails and both go)."""
    if not available("tflite"):
        pytest.skip("tflite extra not installed")
    torch.manual_seed(0)
    model = bfcnn.build("model", {"type": "resnet", "levels": 2, "filters": 4, "no_layers": 1}).eval()
    with pytest.raises(RunError, match="export those to ONNX"):
        bfcnn.build("exporter", {"type": "tflite", **FAST})(model, tmp_path, example())


GRID_MODELS = {"drunet": ({"type": "drunet", "channels": 3, "filters": 4, "blocks": 1, "scales": 3}, 4),
               "dncnn_shuffle": ({"type": "dncnn_shuffle", "channels": 3, "depth": 3, "filters": 4, "factor": 2}, 2)}


@pytest.mark.parametrize("kind", sorted(GRID_MODELS))
@pytest.mark.parametrize("name", ["onnx", "tflite"])
def test_a_model_that_pads_to_its_grid_exports_for_every_size(name, kind, tmp_path):
    """The DRUNet and the pixel-shuffle DnCNN zero-pad to multiples of their grid inside: the ONNX graph keeps that
    pad's arithmetic, the TFLite file holds the on-grid core (a fixed-size conversion keeps no size in it: the
    shuffles are convolutions, not reshapes) and the runtime pads the input; both match torch at off-grid sizes and
    a batch of two, read back with the report beside the file."""
    if not available(name):
        pytest.skip(f"exporter {name} needs an extra that is not installed")
    from bfcnn.runtime import load

    torch.manual_seed(0)
    spec, grid = GRID_MODELS[kind]
    model = bfcnn.build("model", spec).eval()
    with torch.no_grad():  # zero- or tiny-started layers get weights too, or the model would hand its input back
        for weight in model.parameters():
            if weight.abs().max() < 0.01:
                weight.normal_(0, 0.1)
    report = bfcnn.build("exporter", {"type": name, **FAST})(model, tmp_path, example())
    assert report["tiling"]["pad_to"] == model.grid == grid
    runner = load(report["variants"]["float32"])
    assert runner.pad_to == grid
    for shape in [(1, 3, 23, 37), (2, 3, 9, 70)]:
        x = np.random.default_rng(1).random(shape, dtype=np.float32)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        got = runner(x)
        assert np.abs(expected - x).max() > 0.02  # the model changes its input (tolerance 1e-4)
        assert got.shape == expected.shape and np.abs(got - expected).max() <= 1e-4


def test_a_gated_model_gives_a_tflite_file_that_resizes(tmp_path):
    """The gate's channel sum is a 1x1 convolution, not a keepdim reduction (which litert-torch 0.10 fixes at
    the converted size): the file passes the check at other sizes and a batch of two."""
    if not available("tflite"):
        pytest.skip("tflite extra not installed")
    from test_denoise import randomized

    model = randomized({"type": "gatenet", "filters": 4, "no_layers": 1}).eval()
    report = bfcnn.build("exporter", {"type": "tflite", **FAST})(model, tmp_path, example())
    assert report["check"]["float32"]["max_abs_difference"] <= report["check"]["tolerance"]
    shapes = {row["input"] for row in report["check"]["float32"]["inputs"]}
    assert {"random 2x3x16x16", "random 1x3x23x37"} <= shapes  # a batch of two, and a size besides 32x32


def test_missing_extra_is_listed_and_building_fails_with_the_install_hint(monkeypatch):
    monkeypatch.setattr(exporters, "missing", lambda modules: list(modules))
    summaries = {}
    exporters.register_exporters(register=lambda name, factory, schema, summary: summaries.update({name: summary}))
    assert "unavailable" in summaries["tflite"] and "pip install 'bfcnn[tflite]'" in summaries["tflite"]
    assert "unavailable" in summaries["onnx"] and "pip install 'bfcnn[onnx]'" in summaries["onnx"]
    for name in ("tflite", "onnx"):
        with pytest.raises(MissingDependencyError, match=rf"bfcnn\[{name}\]"):
            bfcnn.build("exporter", {"type": name})
    assert issubclass(MissingDependencyError, BfcnnError)  # exit code 2 through the CLI


def write_run(tmp_path, channels=3, export=None):
    from bfcnn.checkpoint import save_model

    spec = {"type": "dncnn", "channels": channels, "depth": 3, "filters": 4}
    run_dir = tmp_path / "run"
    save_model(run_dir / "model.safetensors", tiny_model(channels), spec)
    config = {"model": spec}
    if export is not None:
        config["export"] = export
    config_path = tmp_path / "pipeline.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return run_dir, config_path


def test_seed_export_command(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from bfcnn.export import main

    run_dir, config_path = write_run(tmp_path, export=[{"type": "onnx", **FAST}])
    out = tmp_path / "out"
    code = main(["--checkpoint-directory", str(run_dir), "--pipeline-config", str(config_path),
                 "--output-directory", str(out)])
    assert code == 0
    assert (out / "model.onnx").is_file() and (out / "export_report.json").is_file()
    assert "onnx float32" in capsys.readouterr().out


def test_seed_export_command_without_the_tflite_extra_exits_2(tmp_path, monkeypatch, capsys):
    from bfcnn.export import main

    monkeypatch.setattr(exporters, "tflite_missing", lambda: ["litert_torch"])
    run_dir, config_path = write_run(tmp_path)
    code = main(["--checkpoint-directory", str(run_dir), "--pipeline-config", str(config_path),
                 "--output-directory", str(tmp_path / "out"), "--to-tflite"])
    assert code == 2
    assert "bfcnn[tflite]" in capsys.readouterr().err


def test_export_stage_of_a_config(tmp_path):
    pytest.importorskip("onnxruntime")
    run_dir, _ = write_run(tmp_path)
    config = {"model": {"type": "dncnn", "channels": 3, "depth": 3, "filters": 4},
              "export": [{"type": "onnx", **FAST}, {"type": "onnx", "io": "uint8", "filename": "model_uint8.onnx",
                                                    **FAST}]}
    summary = bfcnn.run(config, run_dir)
    reports = summary["export"]
    assert set(reports) == {"onnx", "onnx-2"}
    assert (run_dir / "export" / "model.onnx").is_file() and (run_dir / "export" / "model_uint8.onnx").is_file()
    assert json.loads((run_dir / "export" / "export_report.json").read_text())["onnx-2"]["io"] == "uint8"


def test_bad_exporter_spec_is_a_config_error():
    with pytest.raises(BfcnnError, match="io"):
        bfcnn.build("exporter", {"type": "onnx", "io": "int16"})
    with pytest.raises(BfcnnError):
        bfcnn.build("exporter", {"type": "tflite", "variants": ["int4"]})


def test_a_broken_variant_is_a_run_error(tmp_path, monkeypatch):
    if not available("tflite"):
        pytest.skip("tflite extra not installed")
    from bfcnn import runtime

    original = runtime.ExportedModel.raw
    monkeypatch.setattr(runtime.ExportedModel, "raw",
                        lambda self, x: original(self, x) * (0 if "_int8" in self.path.name else 1))
    spec = {"type": "tflite", "variants": ["int8"], "dynamic_signature": False, "quality_images": None, **FAST}
    with pytest.raises(RunError, match="int8 variant is broken"):
        bfcnn.build("exporter", spec)(tiny_model(), tmp_path, example())


def test_nan_from_the_exported_file_fails_the_check(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from bfcnn import runtime

    original = runtime.ExportedModel.raw
    monkeypatch.setattr(runtime.ExportedModel, "raw", lambda self, x: original(self, x) * np.float32("nan"))
    with pytest.raises(RunError, match="check failed"):
        bfcnn.build("exporter", {"type": "onnx", **FAST})(tiny_model(), tmp_path, example())
