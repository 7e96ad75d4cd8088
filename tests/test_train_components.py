"""Contract tests over every registered loss, metric, optimizer and schedule (plugins included), then the
built-ins' own values: the seed's hinged MAE, PSNR, SSIM, the seed's exponential decay."""

from __future__ import annotations

import math
import tempfile

import pytest
import torch

import bfcnn
from bfcnn.checkpoint import load_checkpoint, save_checkpoint
from bfcnn.registry import default_registries, hookimpl, load_registries
from bfcnn.train import Trainer

from _train_common import tiny


def example(schema):
    """A valid value for a JSON schema: its default, else the smallest thing its type allows."""
    if "default" in schema:
        return schema["default"]
    if "enum" in schema:
        return schema["enum"][0]
    if "oneOf" in schema:
        return example(schema["oneOf"][0])
    kind = schema.get("type")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "integer":
        return max(1, schema.get("minimum", 1))
    if kind == "number":
        return schema.get("minimum", 0.5) or 0.5
    if kind == "array":
        return [example(schema.get("items", {}))] * max(1, schema.get("minItems", 1))
    if kind == "boolean":
        return False
    if kind == "object":
        return {k: example(schema["properties"][k]) for k in schema.get("required", [])}
    return "x"


def built(kind, name, **params):
    schema = default_registries()[kind].get(name).schema
    spec = {"type": name, **example({**schema, "properties": schema.get("properties", {})}), **params}
    return bfcnn.build(kind, spec)


def images(seed=0, n=3, c=3, size=32):
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand((n, c, size, size), generator=g)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=g)
    return noisy, clean


@pytest.mark.parametrize("name", bfcnn.names("loss"))
@pytest.mark.parametrize("channels", [1, 3])
def test_loss_contract(name, channels):
    loss = built("loss", name)
    noisy, clean = images(c=channels)
    prediction = noisy.clone().requires_grad_(True)
    value = loss(prediction, clean)
    assert value.dim() == 0 and value.dtype == torch.float32 and torch.isfinite(value)
    value.backward()
    assert prediction.grad is not None and torch.isfinite(prediction.grad).all() and prediction.grad.abs().sum() > 0
    assert float(loss(clean, clean)) <= float(value.detach()) + 1e-7  # a perfect prediction is never worse
    assert float(getattr(loss, "regularization", 0) or 0) >= 0


@pytest.mark.parametrize("name", bfcnn.names("metric"))
def test_metric_contract(name):
    metric = built("metric", name)
    noisy, clean = images()
    values = metric(noisy, clean)
    assert values.shape == (3,) and torch.isfinite(values).all()
    alone = torch.stack([metric(noisy[i:i + 1], clean[i:i + 1])[0] for i in range(3)])
    torch.testing.assert_close(values, alone, rtol=1e-4, atol=1e-5)  # per image, not per batch
    # higher is better: the trainer keeps the checkpoint with the highest value of the first metric
    assert (metric(clean, clean) >= values).all()


@pytest.mark.parametrize("name", bfcnn.names("optimizer"))
def test_optimizer_contract_and_checkpoint_round_trip(name, tmp_path):
    spec = {"type": "dncnn", "channels": 1, "depth": 3, "filters": 4}

    def fresh():
        torch.manual_seed(0)
        model = bfcnn.build("model", spec)
        return model, built("optimizer", name, learning_rate=0.001)(model.parameters())
    noisy, clean = images(c=1)

    def step(model, optimizer):
        loss = torch.mean((model(noisy) - clean) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return float(loss.detach())
    model, optimizer = fresh()
    assert isinstance(optimizer, torch.optim.Optimizer)
    losses = [step(model, optimizer) for _ in range(4)]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    # its state survives a safetensors checkpoint: 2 steps, save, load, 2 steps == 4 steps
    a, a_opt = fresh()
    step(a, a_opt), step(a, a_opt)
    folder = save_checkpoint(tmp_path, 2, a, spec, a_opt)
    b, b_opt = fresh()
    load_checkpoint(folder, b, b_opt)
    step(b, b_opt), step(b, b_opt)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(b.state_dict()[key], value)


@pytest.mark.parametrize("name", bfcnn.names("schedule"))
def test_schedule_contract(name):
    schedule = built("schedule", name, **({"total_steps": 100} if name == "cosine" else {}))
    values = [schedule(s) for s in range(0, 200, 7)]
    assert all(isinstance(v, float) or isinstance(v, int) for v in values)
    assert all(math.isfinite(v) and v >= 0 for v in values) and schedule(0) > 0


def test_hinged_mae_is_the_seeds_loss():
    loss = bfcnn.build("loss", {"type": "hinged_mae", "hinge": 2.5, "mae_multiplier": 2.0})
    clean = torch.full((1, 1, 4, 4), 0.5)
    assert float(loss(clean + 2.0 / 255, clean)) == 0.0  # under the hinge: free
    expected = 2.0 * (10.0 - 2.5) / 255
    assert float(loss(clean + 10.0 / 255, clean)) == pytest.approx(expected, rel=1e-4)
    assert bfcnn.build("loss", {"type": "hinged_mae", "regularization": 0.01}).regularization == 0.01


def test_mse_mae_ssim_values():
    clean = torch.full((2, 1, 16, 16), 0.5)
    off = clean + 0.1
    assert float(bfcnn.build("loss", "mse")(off, clean)) == pytest.approx(0.01, rel=1e-4)
    assert float(bfcnn.build("loss", "mae")(off, clean)) == pytest.approx(0.1, rel=1e-4)
    noisy, clean = images()
    ssim_loss = bfcnn.build("loss", "ssim")
    assert float(ssim_loss(clean, clean)) == pytest.approx(0.0, abs=1e-5)
    assert 0 < float(ssim_loss(noisy, clean)) < 1
    with pytest.raises(ValueError, match="smaller than its window"):
        ssim_loss(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))


def test_psnr_and_ssim_values():
    clean = torch.full((2, 1, 16, 16), 0.5)
    psnr = bfcnn.build("metric", "psnr")(clean + 0.1, clean)
    torch.testing.assert_close(psnr, torch.tensor([20.0, 20.0]), rtol=1e-4, atol=1e-4)
    noisy, clean = images()
    ssim = bfcnn.build("metric", "ssim")
    torch.testing.assert_close(ssim(clean, clean), torch.ones(3), rtol=1e-5, atol=1e-5)
    assert (ssim(noisy, clean) < 0.99).all()


def test_schedules_values():
    decay = bfcnn.build("schedule", {"type": "exponential_decay", "decay_rate": 0.5, "decay_steps": 10})
    assert decay(0) == 1 and decay(10) == pytest.approx(0.5) and decay(5) == pytest.approx(0.5 ** 0.5)
    stair = bfcnn.build("schedule", {"type": "exponential_decay", "decay_rate": 0.5, "decay_steps": 10,
                                     "staircase": True})
    assert stair(9) == 1 and stair(10) == 0.5
    cosine = bfcnn.build("schedule", {"type": "cosine", "total_steps": 10, "warmup_steps": 2, "min_factor": 0.1})
    assert cosine(0) == pytest.approx(0.5) and cosine(2) == pytest.approx(1.0) and cosine(10) == pytest.approx(0.1)
    step = bfcnn.build("schedule", {"type": "step", "milestones": [3, 6], "gamma": 0.5})
    assert [step(s) for s in (0, 3, 6)] == [1, 0.5, 0.25]
    with pytest.raises(bfcnn.ConfigError, match="total_steps"):
        bfcnn.build("schedule", {"type": "cosine"})


class RegularizedPlugin:
    @hookimpl
    def register_models(self, register):
        from bfcnn.plugins.models import DnCNN

        class Regularized(DnCNN):
            def regularization_loss(self):
                return sum(p.pow(2).sum() for p in self.parameters())
        register("regularized_dncnn", Regularized, {"type": "object"}, "DnCNN with an L2 term")


def test_loss_regularization_uses_the_models_term():
    registries = load_registries(extra_plugins=[RegularizedPlugin()], autoload=False)
    config = tiny()
    config["model"]["type"] = "regularized_dncnn"
    config["loss"] = {"type": "mae", "regularization": 0.5}
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(bfcnn.load_config(config, registries=registries), tmp, registries)
    noisy, clean = images(c=1)
    with torch.no_grad():
        loss, _ = trainer.forward_loss(noisy, clean, 1)
        plain = torch.mean(torch.abs(trainer.model(noisy) - clean))
        assert float(loss) == pytest.approx(float(plain + 0.5 * trainer.model.regularization_loss()), rel=1e-5)
    assert float(loss) > float(plain) + 1e-3
