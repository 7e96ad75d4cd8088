"""bfcnn.evaluate: the field's Gaussian protocol, the reports (CSV, JSON, markdown, plot), the stage and the CLI."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bfcnn
from bfcnn.checkpoint import save_model
from bfcnn.cli import main
from bfcnn.errors import BfcnnError
from bfcnn.evaluate import evaluate, evaluate_models, gaussian_noisy

SPEC = {"type": "dncnn", "channels": 3, "depth": 4, "filters": 8}
DATA = Path(__file__).resolve().parents[1].joinpath("../shared/data/test")


def tiny_model(spec=SPEC, identity=False, seed=0):
    torch.manual_seed(seed)
    model = bfcnn.build("model", spec)
    if identity:  # the last conv predicts no noise: the model returns its input
        with torch.no_grad():
            last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
            last.weight.zero_()
    return model.eval()


def psnr(a, b):
    return float(10 * torch.log10(1 / torch.mean((a.double() - b.double()) ** 2)))


@pytest.fixture()
def test_folder(tmp_path):
    from skimage import data

    folder = tmp_path / "tiny_set"
    folder.mkdir()
    Image.fromarray(data.astronaut()[60:108, 200:264]).save(folder / "a.png")
    Image.fromarray(data.coffee()[100:140, 100:172]).save(folder / "b.png")
    return folder


def test_gaussian_protocol_is_unclipped_unquantized_seeded_and_scaled():
    clean = torch.full((1, 3, 64, 64), 0.02)
    noisy = gaussian_noisy(clean, 25, seed=7)
    assert noisy.dtype == torch.float32 and noisy.min() < 0  # not clipped
    assert not torch.allclose(noisy * 255, torch.round(noisy * 255))  # not quantized
    assert abs(float((noisy - clean).std()) - 25 / 255) < 0.05 * 25 / 255
    torch.testing.assert_close(noisy, gaussian_noisy(clean, 25, seed=7))
    assert not torch.equal(noisy, gaussian_noisy(clean, 25, seed=8))
    torch.testing.assert_close(gaussian_noisy(clean, 50, seed=7) - clean, 2 * (noisy - clean))


def test_identity_model_scores_equal_the_noisy_input(tmp_path, test_folder):
    cfg = {"directories": [str(test_folder)], "sigmas": [10, 40], "seed": 3}
    report = evaluate_models([("identity", tiny_model(identity=True), "x")], cfg, tmp_path / "out")
    rows = report["results"]
    assert [(r["test_set"], r["level"], r["images"]) for r in rows] == [("tiny_set", 10, 2), ("tiny_set", 40, 2)]
    for row in rows:
        assert row["psnr"] == pytest.approx(row["noisy_psnr"], abs=1e-4)
        assert row["ssim"] == pytest.approx(row["noisy_ssim"], abs=1e-4)
    # the noisy figures follow the protocol: image i gets seed + i, PSNR of the clamped noisy image
    clean = torch.from_numpy(np.asarray(Image.open(test_folder / "b.png"), np.float32).transpose(2, 0, 1) / 255)[None]
    expected = psnr(gaussian_noisy(clean, 40, seed=3 + 1).clamp(0, 1), clean)
    per_image = json.loads((tmp_path / "out" / "results.json").read_text())["per_image"]
    found = [r for r in per_image if r["image"] == "b" and r["level"] == 40][0]
    assert found["noisy_psnr"] == pytest.approx(expected, abs=1e-3)
    assert rows[0]["noisy_psnr"] > rows[1]["noisy_psnr"] + 10


def test_an_unreadable_test_image_is_left_out_and_named(tmp_path, test_folder, caplog):
    """A truncated file among the test images: the others are evaluated (with their own seeds) and the report
    names what was left out; before, the traceback lost every result."""
    cfg = {"directories": [str(test_folder)], "sigmas": [25], "seed": 3}
    whole = evaluate_models([("m", tiny_model(), "x")], cfg, tmp_path / "whole")["results"]
    (test_folder / "a.png").write_bytes((test_folder / "a.png").read_bytes()[:200])  # truncated
    with caplog.at_level("WARNING", logger="bfcnn"):
        report = evaluate_models([("m", tiny_model(), "x")], cfg, tmp_path / "out")
    assert "skipping tiny_set/a" in caplog.text
    assert report["results"][0]["images"] == 1 and "left out as unreadable: tiny_set/a" in report["protocol"]
    per_image = json.loads((tmp_path / "out" / "results.json").read_text())["per_image"]
    before = json.loads((tmp_path / "whole" / "results.json").read_text())["per_image"]
    assert [r["psnr"] for r in per_image] == [r["psnr"] for r in before if r["image"] == "b"]
    assert "left out as unreadable" in (tmp_path / "out" / "results.md").read_text()
    assert whole[0]["images"] == 2
    (test_folder / "b.png").write_bytes(b"")
    with pytest.raises(BfcnnError, match="no readable test image"):
        evaluate_models([("m", tiny_model(), "x")], cfg, tmp_path / "none")


def test_reports_overlay_several_models(tmp_path, test_folder):
    models = [("bias_free", tiny_model(), "a"), ("twin", tiny_model({**SPEC, "bias_free": False}, seed=1), "b")]
    cfg = {"directories": [str(test_folder)], "sigmas": [5, 25, 60], "save_images": 1,
           "corruptions": [{"name": "speckle", "noise": {"type": "multiplicative_gaussian"}, "levels": [0.1]}]}
    report = evaluate_models(models, cfg, tmp_path / "out", training_range=[0, 55])
    out = tmp_path / "out"
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * (3 + 1)
    assert {r["model"] for r in rows} == {"bias_free", "twin"}
    assert {r["corruption"] for r in rows} == {"gaussian", "speckle"}
    assert all(float(r["psnr"]) > 0 and 0 < float(r["ssim"]) <= 1 for r in rows)
    with open(out / "per_image.csv") as f:
        assert len(list(csv.DictReader(f))) == 2 * 2 * 4
    table = (out / "results.md").read_text()
    for text in ("| tiny_set | noisy input |", "| tiny_set | bias_free |", "| tiny_set | twin |", "σ 60", "Protocol"):
        assert text in table
    with Image.open(report["files"]["plot"]) as plot:
        assert plot.format == "PNG" and plot.size[0] > 300
    saved = sorted(p.relative_to(out / "images").as_posix() for p in (out / "images").rglob("*.png"))
    assert "tiny_set/a_clean.png" in saved and "tiny_set/gaussian-25/a_noisy.png" in saved
    assert "tiny_set/gaussian-25/a_twin.png" in saved and "tiny_set/speckle-0.1/a_bias_free.png" in saved
    assert not any("/b_" in p for p in saved)


def test_tiled_evaluation_matches_whole_images(tmp_path, test_folder):
    cfg = {"directories": [str(test_folder)], "sigmas": [30], "metrics": [{"type": "psnr"}]}
    whole = evaluate_models([("m", tiny_model(), "m")], cfg, tmp_path / "whole")["results"][0]
    tiled = evaluate_models([("m", tiny_model(), "m")], {**cfg, "tile": 16}, tmp_path / "tiled")["results"][0]
    assert tiled["psnr"] == pytest.approx(whole["psnr"], abs=0.01)


def test_gray_model_reads_color_folders_as_gray(tmp_path, test_folder):
    report = evaluate_models([("gray", tiny_model({**SPEC, "channels": 1}), "g")],
                             {"directories": [str(test_folder)], "sigmas": [25], "metrics": [{"type": "psnr"}]},
                             tmp_path / "out")
    assert report["results"][0]["images"] == 2 and "ssim" not in report["results"][0]


def test_stage_in_the_quick_start_denoises_the_held_out_photo(tmp_path):
    """The quick start's evaluate section, on a model trained for 2 steps: no download, images written."""
    config = bfcnn.load_config(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml",
                               ["train.total_steps=2", "train.checkpoint_every=2", "evaluate.sigmas=[25]"])
    assert config["dataset"]["type"] == "sample_images" and config["evaluate"]["validation_images"]
    summary = bfcnn.run(config, tmp_path / "run")
    evaluation = tmp_path / "run" / "evaluation"
    held_out = "images/sample_images_validation"
    for name in ("results.csv", "results.json", "results.md", "psnr_vs_sigma.png", f"{held_out}/0_clean.png",
                 f"{held_out}/gaussian-25/0_noisy.png", f"{held_out}/gaussian-25/0_quickstart.png"):
        assert (evaluation / name).is_file(), name
    row = summary["evaluate"]["results"][0]
    assert row["test_set"] == "sample_images_validation" and row["model"] == "quickstart" and row["images"] == 1
    assert 19 < row["noisy_psnr"] < 22  # sigma 25
    held = bfcnn.build("dataset", config["dataset"]).validation_images()[0][0].numpy().transpose(1, 2, 0)
    saved = np.asarray(Image.open(evaluation / held_out / "0_clean.png"), np.float32) / 255
    assert saved.shape == held.shape and np.abs(saved - held).max() <= 0.5 / 255 + 1e-6


def test_sample_photos_are_the_default_test_set(tmp_path):
    rows = evaluate_models([("m", tiny_model(), "m")], {"sigmas": [50], "metrics": [{"type": "psnr"}]},
                           tmp_path)["results"]
    assert [(r["test_set"], r["images"]) for r in rows] == [("sample_photos", 1)]
    gray = evaluate_models([("g", tiny_model({**SPEC, "channels": 1}), "g")],
                           {"sample_photos": ["camera", "coffee"], "sigmas": [50], "metrics": [{"type": "psnr"}]},
                           tmp_path / "gray")["results"]
    assert gray[0]["images"] == 2
    with pytest.raises(bfcnn.BfcnnError, match="no dataset"):
        evaluate_models([("m", tiny_model(), "m")], {"validation_images": True}, tmp_path / "x")


def test_stage_compares_with_other_models(tmp_path, test_folder):
    twin = tmp_path / "twin.safetensors"
    save_model(twin, tiny_model({**SPEC, "bias_free": False}), {**SPEC, "bias_free": False})
    config = bfcnn.load_config({"name": "bf", "model": SPEC, "dataset": {"type": "sample_images"},
                                "evaluate": {"directories": [str(test_folder)], "sigmas": [25],
                                             "models": [{"path": str(twin)}], "output": "eval"}})
    summary = evaluate(config, tmp_path / "run", model=tiny_model())
    assert {r["model"] for r in summary["results"]} == {"bf", "twin"}
    assert (tmp_path / "run" / "eval" / "results.md").is_file()


def test_config_section_is_validated():
    with pytest.raises(bfcnn.ConfigError, match="sigmass"):
        bfcnn.load_config({"evaluate": {"sigmass": [25]}})
    with pytest.raises(bfcnn.ConfigError, match="sample_photos"):
        bfcnn.load_config({"evaluate": {"sample_photos": ["not_a_photo"]}})


def test_cli(tmp_path, test_folder, capsys):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_model(a, tiny_model(), SPEC)
    save_model(b, tiny_model(seed=2), SPEC)
    out = tmp_path / "out"
    assert main(["evaluate", str(a), str(b), "--data", str(test_folder), "--sigmas", "15", "50",
                 "--metrics", "psnr", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| tiny_set | a |" in printed and "| tiny_set | b |" in printed and "σ 50" in printed
    assert (out / "psnr_vs_sigma.png").is_file()
    assert main(["evaluate", str(a), "--data", str(tmp_path / "missing"), "-o", str(out)]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["evaluate", str(a), str(a), "--data", str(test_folder), "-o", str(out)]) == 2
    assert main(["evaluate", str(tmp_path / "nope.safetensors"), "--data", str(test_folder), "-o", str(out)]) == 2


@pytest.mark.skipif(not DATA.joinpath("CBSD68").is_dir(), reason="../shared/data is not here")
def test_on_a_real_test_set(tmp_path):
    report = evaluate_models([("identity", tiny_model(identity=True), "x")],
                             {"directories": [str(DATA / "CBSD68")], "sigmas": [25], "max_images": 1,
                              "metrics": [{"type": "psnr"}]}, tmp_path)
    row = report["results"][0]
    assert row["test_set"] == "CBSD68" and row["images"] == 1
    assert 20.1 < row["noisy_psnr"] < 20.8  # 20 log10(255 / 25) = 20.17 dB before clamping


def test_training_range_comes_from_a_noise_in_pixel_units_whatever_its_name():
    from bfcnn.evaluate import training_range_of

    def noise(spec):
        return {"noise": spec}

    assert training_range_of(noise({"type": "additive_gaussian", "sigma_range": [0, 55]}), {}) == [0, 55]
    assert training_range_of(noise({"type": "additive_gaussian", "sigma_range": [0, 0.2], "value_range": 1.0}),
                             {}) == pytest.approx([0, 51])
    assert training_range_of(noise({"type": "multiplicative_gaussian", "sigma_range": [0, 0.2]}), {}) is None
    assert training_range_of(noise({"type": "additive_gaussian", "sigma_range": [0, 55]}),
                             {"training_range": [5, 9]}) == [5, 9]
