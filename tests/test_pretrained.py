"""The shipped models: each loads from its name alone, is what its card says, and really denoises."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import bfcnn
from bfcnn.denoise import DEFAULT_MODEL

PRETRAINED = Path(bfcnn.__file__).parent / "pretrained"
SHIPPED = sorted(p.stem for p in PRETRAINED.glob("*.safetensors"))


def test_the_default_model_is_shipped():
    assert DEFAULT_MODEL in SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_has_config_card_and_is_bias_free(name):
    assert (PRETRAINED / f"{name}.md").is_file(), "every shipped model has a model card"
    config = yaml.safe_load((PRETRAINED / f"{name}.yaml").read_text())
    model = bfcnn.load_model(name)
    assert model.module.bias_free is True
    spec = {k: v for k, v in config["model"].items()}
    from bfcnn.checkpoint import find_weights, read_model_spec

    assert read_model_spec(find_weights(name)) == spec, "the weights were trained with the shipped config"
    x = torch.rand(1, 3, 40, 40)
    with torch.no_grad():
        assert torch.allclose(model.module(5 * x), 5 * model.module(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_denoises_a_photo_it_never_saw(name):
    from skimage import data

    clean = data.astronaut()[100:228, 180:308].astype(np.float32) / 255  # the face: not a training image
    rng = np.random.default_rng(0)
    noisy = (clean + rng.normal(0, 25 / 255, clean.shape)).astype(np.float32)
    denoised = bfcnn.load_model(name).denoise(noisy)

    def psnr(a):
        return 10 * np.log10(1 / np.mean((np.clip(a, 0, 1) - clean) ** 2))

    assert psnr(denoised) > psnr(noisy) + 5


DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "test"


def card_figure(name, test_set, sigma):
    """The PSNR the model card states for `name` on `test_set` at `sigma` (its own bold row)."""
    lines = (PRETRAINED / f"{name}.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| test set | model |"))
    sigmas = [cell.strip().lstrip("σ ").strip() for cell in header.strip("|").split("|")[2:]]
    row = next(line for line in lines if line.startswith(f"| {test_set} | **{name}** |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")[2:]]
    return float(cells[sigmas.index(str(sigma))].split("/")[0])


@pytest.mark.skipif(not (DATA / "CBSD68").is_dir(), reason="../shared/data is not here")
def test_the_default_models_card_states_what_it_measures(tmp_path):
    """CBSD68 at sigma 25 through the evaluate protocol reproduces the card's figure (the card is not stale)."""
    from bfcnn.evaluate import evaluate_models

    model = bfcnn.load_model(DEFAULT_MODEL, device="cpu").module
    report = evaluate_models([(DEFAULT_MODEL, model, DEFAULT_MODEL)],
                             {"directories": [str(DATA / "CBSD68")], "sigmas": [25], "metrics": ["psnr"]},
                             tmp_path)
    measured = report["results"][0]["psnr"]
    assert measured == pytest.approx(card_figure(DEFAULT_MODEL, "CBSD68", 25), abs=0.006)


def test_list_pretrained_shows_every_shipped_model_with_its_figures(capsys):
    from bfcnn.cli import main

    assert bfcnn.names("pretrained") == SHIPPED
    assert main(["list", "pretrained"]) == 0
    out = capsys.readouterr().out
    for name in SHIPPED:
        line = next(line for line in out.splitlines() if line.strip().startswith(name))
        count = sum(p.numel() for p in bfcnn.load_model(name).module.parameters())
        assert f"{count:,} params" in line and "CBSD68" in line and "bias-free: yes" in line
        figures = line.split("CBSD68 sigma 15/25/50/75/100: ")[1].split(" dB")[0].split(" / ")
        for sigma, figure in zip((15, 25, 50, 75, 100), figures):  # the listing says what the card says
            assert float(figure) == card_figure(name, "CBSD68", sigma), (name, sigma)
    assert "(default)" in next(line for line in out.splitlines() if line.strip().startswith(DEFAULT_MODEL))


def test_a_plugin_ships_weights_by_name(tmp_path, monkeypatch):
    from bfcnn import hookimpl
    from bfcnn.checkpoint import save_model
    from bfcnn.registry import load_registries

    spec = {"type": "dncnn", "channels": 3, "depth": 3, "filters": 4}
    model = bfcnn.build("model", spec)
    save_model(tmp_path / "w.safetensors", model, spec)

    class Plugin:
        @hookimpl
        def register_pretrained(self, register):
            register("plugin_weights", lambda: tmp_path / "w.safetensors", summary="tiny")

    registries = load_registries(extra_plugins=[Plugin()], autoload=False)
    monkeypatch.setattr("bfcnn.registry.default_registries", lambda: registries)
    loaded = bfcnn.load_model("plugin_weights").module
    assert all(torch.equal(a, b) for a, b in zip(loaded.parameters(), model.parameters()))
    with pytest.raises(bfcnn.BfcnnError, match="plugin_weights"):
        bfcnn.load_model("no_such_weights")
