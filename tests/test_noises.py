"""Noises: the contract for every registered noise, statistics on large samples, reproducibility."""

import pytest
import torch

import bfcnn
from bfcnn.errors import ConfigError

# specs for the built-ins that need parameters; other noises are built from their schema's defaults
SPECS = {
    "choice": {"type": "choice", "choices": [{"type": "additive_gaussian", "sigma": 10}, {"type": "subsample"}]},
    "sequence": {"type": "sequence", "steps": [{"type": "multiplicative_gaussian"}, {"type": "additive_gaussian"}]},
}


def spec_of(name):
    if name in SPECS:
        return SPECS[name]
    from bfcnn.registry import default_registries
    schema = default_registries()["noise"].get(name).schema
    if schema.get("required"):
        pytest.skip(f"noise {name!r} needs parameters {schema['required']} this test does not know")
    return {"type": name}


def images(n=4, c=3, h=32, w=40, seed=0):
    return torch.rand((n, c, h, w), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", bfcnn.names("noise"))
def test_contract(name):
    noise = bfcnn.build("noise", spec_of(name))
    x = images()
    first = noise(x, torch.Generator().manual_seed(7))
    again = noise(x, torch.Generator().manual_seed(7))
    assert first.shape == x.shape and first.dtype == x.dtype and first.device == x.device
    assert torch.isfinite(first).all()
    assert torch.equal(first, again), "the same generator state must give the same output"
    assert torch.equal(x, images()), "a noise must not change its input in place"


@pytest.mark.parametrize("name", bfcnn.names("noise"))
def test_contract_float64_and_single_image(name):
    noise = bfcnn.build("noise", spec_of(name))
    x = images(n=1, c=1, h=17, w=9).double()
    y = noise(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.dtype == torch.float64


def constant(value=0.5, n=64, c=3, h=64, w=64):
    return torch.full((n, c, h, w), value)


def test_additive_std_within_2_percent_of_sigma():
    x = constant()
    y = bfcnn.build("noise", {"type": "additive_gaussian", "sigma": 25})(x, torch.Generator().manual_seed(0))
    residual = (y - x) * 255
    assert abs(residual.std().item() - 25) < 0.02 * 25
    assert abs(residual.mean().item()) < 0.05  # zero mean: 786k samples, standard error 0.03
    near_white = bfcnn.build("noise", {"type": "additive_gaussian", "sigma": 25})(constant(0.95, n=2), None)
    assert (near_white > 1).any()  # unclipped by default


def test_additive_value_range_scales_sigma():
    x = constant(n=16)
    y = bfcnn.build("noise", {"type": "additive_gaussian", "sigma": 0.1, "value_range": 1})(
        x, torch.Generator().manual_seed(0))
    assert abs((y - x).std().item() - 0.1) < 0.002


def test_additive_list_picks_one_sigma_per_image():
    x = constant(n=200, c=1, h=32, w=32)
    y = bfcnn.build("noise", {"type": "additive_gaussian", "sigma": [5, 10, 20]})(x, torch.Generator().manual_seed(0))
    stds = ((y - x) * 255).flatten(1).std(dim=1)
    nearest = torch.tensor([5.0, 10.0, 20.0])[(stds[:, None] - torch.tensor([5.0, 10.0, 20.0])).abs().argmin(1)]
    assert ((stds - nearest).abs() < 0.1 * nearest).all()  # 1024 samples per image: std within 10%
    counts = torch.bincount((stds[:, None] - torch.tensor([5.0, 10.0, 20.0])).abs().argmin(1), minlength=3)
    assert (counts > 40).all()  # each of the three about 200/3 times


def test_additive_range_draws_sigma_uniformly():
    x = constant(n=400, c=1, h=32, w=32)
    noise = bfcnn.build("noise", {"type": "additive_gaussian", "sigma_range": [10, 50]})
    y = noise(x, torch.Generator().manual_seed(0))
    stds = ((y - x) * 255).flatten(1).std(dim=1)
    assert stds.min() > 10 * 0.9 and stds.max() < 50 * 1.1
    assert abs(stds.mean().item() - 30) < 2  # mean of U(10, 50); standard error of the mean 0.6
    assert (stds < 20).sum() > 50 and (stds > 40).sum() > 50


def test_additive_shared_across_channels():
    x = constant(n=2)
    y = bfcnn.build("noise", {"type": "additive_gaussian", "sigma": 20, "per_channel": False})(
        x, torch.Generator().manual_seed(0))
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])
    z = bfcnn.build("noise", {"type": "additive_gaussian", "sigma": 20})(x, torch.Generator().manual_seed(0))
    assert not torch.equal(z[:, 0], z[:, 1])


def test_additive_clip_and_quantize():
    x = images(n=8)
    y = bfcnn.build("noise", {"type": "additive_gaussian", "sigma": 50, "clip": True, "quantize": True})(
        x, torch.Generator().manual_seed(0))
    assert y.min() >= 0 and y.max() <= 1 and (y == 0).any() and (y == 1).any()
    assert torch.allclose(y * 255, (y * 255).round(), atol=1e-3)


def test_multiplicative_field_mean_and_std():
    x = constant()
    y = bfcnn.build("noise", {"type": "multiplicative_gaussian", "sigma": 0.1})(x, torch.Generator().manual_seed(0))
    field = y / x
    assert abs(field.mean().item() - 1) < 0.005
    assert abs(field.std().item() - 0.1) < 0.02 * 0.1


def test_multiplicative_blur_keeps_statistics_and_correlates_neighbours():
    x = constant()
    generator = torch.Generator().manual_seed(0)
    field = bfcnn.build("noise", {"type": "multiplicative_gaussian", "sigma": 0.2, "blur": True, "blur_sigma": 1.5})(
        x, generator) / x
    assert abs(field.mean().item() - 1) < 0.005
    assert abs(field.std().item() - 0.2) < 0.02 * 0.2
    plain = bfcnn.build("noise", {"type": "multiplicative_gaussian", "sigma": 0.2})(x, generator) / x

    def neighbour_correlation(f):
        a, b = (f[..., :, :-1] - 1).flatten(), (f[..., :, 1:] - 1).flatten()
        return (a * b).mean().item() / (a.std() * b.std()).item()
    assert neighbour_correlation(field) > 0.5
    assert abs(neighbour_correlation(plain)) < 0.01


def test_multiplicative_list_and_clip():
    x = constant(n=100, c=1, h=32, w=32)
    y = bfcnn.build("noise", {"type": "multiplicative_gaussian", "sigma": [0.1, 0.15, 0.2]})(
        x, torch.Generator().manual_seed(3))
    stds = (y / x).flatten(1).std(dim=1)
    assert stds.min() > 0.085 and stds.max() < 0.23 and stds.max() - stds.min() > 0.07
    z = bfcnn.build("noise", {"type": "multiplicative_gaussian", "sigma": 3.0, "clip": True})(
        x, torch.Generator().manual_seed(3))
    assert z.min() >= 0 and z.max() <= 1


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_subsample_nearest_is_constant_on_each_block(factor):
    x = images(n=3, h=32, w=48)
    y = bfcnn.build("noise", {"type": "subsample", "factor": factor})(x, torch.Generator().manual_seed(0))
    blocks = y.unfold(2, factor, factor).unfold(3, factor, factor)  # N, C, H/f, W/f, f, f
    assert torch.equal(blocks, blocks[..., :1, :1].expand_as(blocks))
    means = x.unfold(2, factor, factor).unfold(3, factor, factor).mean(dim=(-1, -2))
    assert torch.allclose(blocks[..., 0, 0], means, atol=1e-6)  # the block mean (antialiased decimation)
    assert not torch.equal(y, x)


def test_subsample_sizes_not_multiples_of_factor_and_plain_decimation():
    x = images(n=2, h=13, w=10)
    y = bfcnn.build("noise", {"type": "subsample", "factor": 4, "antialias": False})(x, torch.Generator())
    assert y.shape == x.shape
    assert torch.equal(y[..., :4, :4], x[..., :1, :1].expand(-1, -1, 4, 4))
    assert torch.equal(y[..., 12:, 8:], x[..., 12:13, 8:9].expand(-1, -1, 1, 2))


def test_subsample_bilinear_is_smooth():
    x = images(n=2, h=32, w=32)
    y = bfcnn.build("noise", {"type": "subsample", "factor": 4, "mode": "bilinear"})(x, torch.Generator())
    blocks = y.unfold(2, 4, 4).unfold(3, 4, 4)
    assert not torch.equal(blocks, blocks[..., :1, :1].expand_as(blocks))
    assert (y - x).abs().mean() < (x - x.mean()).abs().mean()  # still a (blurred) copy of x


def test_subsample_factor_list_picks_per_image():
    x = images(n=32, c=1, h=16, w=16)
    y = bfcnn.build("noise", {"type": "subsample", "factor": [2, 8]})(x, torch.Generator().manual_seed(0))
    sizes = []
    for image in y:
        blocks = image.unfold(1, 8, 8).unfold(2, 8, 8)
        sizes.append(8 if torch.equal(blocks, blocks[..., :1, :1].expand_as(blocks)) else 2)
    assert 4 < sizes.count(8) < 28


def test_choice_probabilities():
    x = constant(n=400, c=1, h=16, w=16)
    noise = bfcnn.build("noise", {"type": "choice", "probabilities": [1, 3], "choices": [
        {"type": "additive_gaussian", "sigma": 5}, {"type": "additive_gaussian", "sigma": 50}]})
    y = noise(x, torch.Generator().manual_seed(0))
    big = (((y - x) * 255).flatten(1).std(dim=1) > 20).float().mean().item()
    assert abs(big - 0.75) < 0.07  # binomial std 0.022
    only_first = bfcnn.build("noise", {"type": "choice", "probabilities": [1, 0], "choices": [
        {"type": "additive_gaussian", "sigma": 5}, {"type": "subsample"}]})(x, torch.Generator())
    assert (((only_first - x) * 255).flatten(1).std(dim=1) < 6).all()


@pytest.mark.parametrize("whole_batch", [False, True])  # True is the path taken on accelerators
def test_per_image_choice_both_ways(whole_batch):
    from bfcnn.plugins.noises import apply_per_group
    x = images(n=6)
    pick = torch.tensor([2, 0, 1, 2, 2, 0])
    seen = []

    def fn(k, part):
        seen.append(part.shape[0])
        return part + 10 * (k + 1)
    out = apply_per_group(x, pick, 3, fn, whole_batch=whole_batch)
    assert torch.allclose(out - x, (10 * (pick + 1)).float().view(-1, 1, 1, 1).expand_as(x))
    assert seen == ([6, 6, 6] if whole_batch else [2, 1, 3])


def test_choice_probability_count_must_match():
    with pytest.raises(ConfigError, match="probabilities"):
        bfcnn.build("noise", {"type": "choice", "probabilities": [1], "choices": [{"type": "subsample"},
                                                                                   {"type": "additive_gaussian"}]})


def test_bad_range_is_config_error():
    with pytest.raises(ConfigError, match="sigma_range"):
        bfcnn.build("noise", {"type": "additive_gaussian", "sigma_range": [50, 10]})
    with pytest.raises(ConfigError):
        bfcnn.build("noise", {"type": "subsample", "factor": 3})


def test_sequence_applies_in_order():
    x = images(n=2, h=16, w=16)
    y = bfcnn.build("noise", {"type": "sequence", "steps": [
        {"type": "additive_gaussian", "sigma": 30}, {"type": "subsample", "factor": 4}]})(x, torch.Generator())
    blocks = y.unfold(2, 4, 4).unfold(3, 4, 4)
    assert torch.equal(blocks, blocks[..., :1, :1].expand_as(blocks))  # subsample came last


def test_generator_elsewhere_or_none():
    noise = bfcnn.build("noise", {"type": "additive_gaussian", "sigma": 10})
    assert noise(images(), None).shape == (4, 3, 32, 40)
    torch.manual_seed(5)
    a = noise(images(), None)
    torch.manual_seed(5)
    assert torch.equal(a, noise(images(), None))


def test_seed_dataset_keys_become_working_noises(tmp_path):
    config = bfcnn.load_config({"dataset": {
        "batch_size": 4, "min_value": 0, "max_value": 255, "clip_value": True, "random_blur": True,
        "color_mode": "rgb", "subsample_size": 4, "input_shape": [32, 32, 3], "directory": str(tmp_path),
        "additional_noise": [5, 10, 20], "multiplicative_noise": [0.1, 0.15, 0.2]}})
    noise = bfcnn.build("noise", config["noise"])
    x = images(n=64)
    y = noise(x, torch.Generator().manual_seed(0))
    assert y.min() >= 0 and y.max() <= 1 and not torch.equal(x, y)
    assert torch.equal(y, noise(x, torch.Generator().manual_seed(0)))


def seed_noise(tmp_path, **keys):
    """The `noise` spec that a seed-format dataset section with these noise keys becomes."""
    return bfcnn.load_config({"dataset": {"directory": str(tmp_path), "input_shape": [32, 32, 3], **keys}})["noise"]


def constant_on_blocks(y, size):
    blocks = y.unfold(2, size, size).unfold(3, size, size)
    return torch.equal(blocks, blocks[..., :1, :1].expand_as(blocks))


@pytest.mark.parametrize("factor", [2, 4])
def test_seed_subsample_size_is_the_subsample_factor(tmp_path, factor):
    spec = seed_noise(tmp_path, subsample_size=factor)
    assert spec == {"type": "subsample", "factor": factor}
    noise = bfcnn.build("noise", spec)
    assert noise.factors == [factor]
    y = noise(images(n=3, h=32, w=32), torch.Generator().manual_seed(0))
    assert constant_on_blocks(y, factor) and not constant_on_blocks(y, 2 * factor)  # blocks of factor, no larger
    mix = seed_noise(tmp_path, subsample_size=factor, additional_noise=[5, 10], multiplicative_noise=[0.1])
    assert [c["type"] for c in mix["choices"]] == ["additive_gaussian", "multiplicative_gaussian", "subsample"]
    assert mix["choices"][2]["factor"] == factor
    assert seed_noise(tmp_path, subsample_size=-1, additional_noise=[5]) == {
        "type": "additive_gaussian", "sigma": [5], "value_range": 255.0, "clip": False}  # -1: no subsampling


def test_seed_random_blur_blurs_the_multiplicative_field(tmp_path):
    def neighbour_correlation(field):
        a, b = (field[..., :, :-1] - 1).flatten(), (field[..., :, 1:] - 1).flatten()
        return ((a * b).mean() / (a.std() * b.std())).item()
    x = constant(n=8)
    fields = {}
    for blur in (True, False):
        spec = seed_noise(tmp_path, multiplicative_noise=[0.1, 0.2], random_blur=blur)
        assert spec["type"] == "multiplicative_gaussian" and spec["blur"] is blur
        noise = bfcnn.build("noise", spec)
        assert noise.blur is blur
        fields[blur] = noise(x, torch.Generator().manual_seed(0)) / x
    assert neighbour_correlation(fields[True]) > 0.5 > 0.05 > abs(neighbour_correlation(fields[False]))
    mix = seed_noise(tmp_path, multiplicative_noise=[0.1], additional_noise=[5], random_blur=True)
    assert mix["choices"][1]["blur"] is True
    assert seed_noise(tmp_path, multiplicative_noise=[0.1])["blur"] is False  # random_blur absent: no blur


def test_list_under_noise_is_a_choice():
    config = bfcnn.load_config({"noise": [{"type": "additive_gaussian", "sigma": 5}, {"type": "subsample"}]})
    assert config["noise"]["type"] == "choice"
    y = bfcnn.build("noise", config["noise"])(images(n=16), torch.Generator())
    assert y.shape == (16, 3, 32, 40)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", bfcnn.names("noise"))
def test_cuda_reproducible_and_on_device(name):
    noise = bfcnn.build("noise", spec_of(name))
    x = images(n=8).cuda()
    a = noise(x, torch.Generator(device="cuda").manual_seed(3))
    b = noise(x, torch.Generator(device="cuda").manual_seed(3))
    assert a.device == x.device and torch.equal(a, b)
    c = noise(x, torch.Generator().manual_seed(3))  # a CPU generator with a CUDA tensor works too
    assert c.device == x.device
