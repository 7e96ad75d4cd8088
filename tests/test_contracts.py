"""Contract tests, parametrized over every registered component of every kind (plugins included).

Each component must build from the first entry of its schema's `examples` (JSON Schema's own keyword), or
from no params when it has none. Dataset examples may name a folder `images/` of RGB photos in the current
directory: the test makes one.
"""

import jsonschema
import numpy as np
import pytest
import torch
from PIL import Image

import bfcnn
from bfcnn.registry import default_registries


def every(kind):
    return [pytest.param(name, id=f"{kind}:{name}") for name in bfcnn.names(kind)]


def example_spec(kind, name):
    component = default_registries()[kind].get(name)
    params = (component.schema.get("examples") or [{}])[0]
    return {"type": name, **params}


def build_example(kind, name):
    return bfcnn.build(kind, example_spec(kind, name))


@pytest.fixture
def in_folder_with_images(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("kind", bfcnn.KINDS)
def test_every_component_has_a_valid_schema_and_summary(kind, in_folder_with_images):
    for name in bfcnn.names(kind):
        component = default_registries()[kind].get(name)
        jsonschema.Draft202012Validator.check_schema(component.schema)
        assert component.schema.get("type", "object") == "object"
        assert component.summary.strip(), f"{kind} {name!r} has no summary"
        for example in component.schema.get("examples", []):
            bfcnn.build(kind, {"type": name, **example})  # every example is valid and builds


@pytest.mark.parametrize("name", every("noise"))
def test_noise_contract(name):
    noise = build_example("noise", name)
    x = torch.rand(3, 3, 24, 32)
    y1 = noise(x.clone(), torch.Generator().manual_seed(7))
    y2 = noise(x.clone(), torch.Generator().manual_seed(7))
    assert y1.shape == x.shape and y1.dtype == x.dtype and y1.device == x.device
    assert torch.equal(y1, y2), "same generator state, same output"
    assert torch.isfinite(y1).all()


@pytest.mark.parametrize("name", every("model"))
def test_model_contract(name):
    model = build_example("model", name).eval()
    assert isinstance(model, torch.nn.Module)
    assert isinstance(model.bias_free, bool)
    from bfcnn.layers import model_channels

    x = torch.rand(2, model_channels(model), 32, 32)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize("name", every("model"))
def test_a_model_that_says_it_pads_to_its_grid_does(name):
    """`pads_to_grid` (bfcnn.receptive.pad_to) lets engines and exporters run `core` on an outside zero pad: the
    statement must hold, forward(x) == crop(core(zero-pad(x))) at off-grid sizes; a model without it is not
    padded for."""
    from bfcnn.layers import model_channels
    from bfcnn.receptive import pad_to

    torch.manual_seed(0)
    model = build_example("model", name).eval()
    m = pad_to(model)
    if m == 1:
        assert not (getattr(model, "pads_to_grid", False) is True and int(getattr(model, "grid", 1) or 1) > 1)
        return
    for h, w in ((m * 3 + 1, m * 5 - 1), (m * 4, m * 2 + 3)):
        x = torch.rand(1, model_channels(model), h, w)
        padded = torch.nn.functional.pad(x, (0, -w % m, 0, -h % m))
        with torch.no_grad():
            assert torch.allclose(model(x), model.core(padded)[..., :h, :w], atol=1e-5)


@pytest.mark.parametrize("name", every("loss"))
def test_loss_contract(name):
    loss = build_example("loss", name)
    target = torch.rand(2, 3, 32, 32)
    prediction = (target + 0.1 * torch.randn_like(target)).requires_grad_()
    value = loss(prediction, target)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert prediction.grad is not None and prediction.grad.abs().sum() > 0
    assert loss(target, target) <= value


@pytest.mark.parametrize("name", every("optimizer"))
def test_optimizer_contract(name):
    make = build_example("optimizer", name)
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = make([weight])
    assert isinstance(optimizer, torch.optim.Optimizer)
    (weight**2).sum().backward()
    optimizer.step()
    assert not torch.equal(weight.detach(), torch.ones(3))


@pytest.mark.parametrize("name", every("schedule"))
def test_schedule_contract(name):
    schedule = build_example("schedule", name)
    values = [schedule(step) for step in (0, 1, 10, 1000, 100000)]
    assert all(isinstance(v, float) and 0 <= v <= 1.0 + 1e-9 for v in values)


@pytest.mark.parametrize("name", every("metric"))
def test_metric_contract(name):
    metric = build_example("metric", name)
    target = torch.rand(3, 3, 32, 32)
    noisy = (target + 0.1 * torch.randn_like(target)).clamp(0, 1)
    better = (target + 0.02 * torch.randn_like(target)).clamp(0, 1)
    worse_scores, better_scores = metric(noisy, target), metric(better, target)
    assert worse_scores.shape == (3,) and torch.isfinite(worse_scores).all()
    assert (better_scores > worse_scores).all(), "a metric ranks the cleaner image higher"


@pytest.mark.parametrize("name", every("dataset"))
def test_dataset_contract(name, in_folder_with_images):
    dataset = build_example("dataset", name)
    batch = next(iter(dataset.batches(seed=0)))
    again = next(iter(dataset.batches(seed=0)))
    assert batch.dim() == 4 and batch.shape[0] == dataset.batch_size and batch.shape[1] == dataset.channels
    assert batch.dtype == torch.float32 and 0 <= batch.min() and batch.max() <= 1
    assert torch.equal(batch, again), "same seed, same batches"
    assert len(dataset) >= 1
    assert isinstance(dataset.summary(), dict)
    for image in dataset.validation_images():
        assert image.dim() == 4 and image.shape[:2] == (1, dataset.channels)


@pytest.mark.parametrize("name", every("exporter"))
def test_exporter_contract(name, tmp_path):
    try:
        exporter = build_example("exporter", name)
    except bfcnn.errors.MissingDependencyError as error:
        assert "pip install" in str(error)
        pytest.skip(f"exporter {name} needs an extra: {error}")
    model = bfcnn.build("model", {"type": "dncnn", "channels": 3, "depth": 3, "filters": 4}).eval()
    report = exporter(model, tmp_path, torch.rand(1, 3, 32, 32))
    assert isinstance(report, dict) and report["files"]
    for path in report["files"]:
        assert (tmp_path / path).exists() or __import__("pathlib").Path(path).exists()
