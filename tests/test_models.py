"""Contract tests of every registered model (built-ins and plugins), plus the building blocks of bfcnn.layers.

Small variants (few layers, few filters, tiny images) keep the whole file fast on a 2-core CPU.
"""

from __future__ import annotations

import copy
import io
from contextlib import redirect_stdout

import pytest
import torch
from torch.func import jacfwd, jacrev, jvp, vjp

import bfcnn
from bfcnn import hookimpl
from bfcnn.errors import BfcnnError
from bfcnn.layers import (
    BiasFreeBatchNorm,
    ScaleFreeGate,
    ScaleFreeShrink,
    flops_per_pixel,
    laplacian_pyramid,
    reconstruct_pyramid,
)
from bfcnn.registry import default_registries

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # torch's jvp

MODELS = bfcnn.names("model")
SCALES = (0.1, 3.0, 17.0)
# small values for whichever of these keys a model's schema has
TINY = {"filters": 4, "depth": 4, "no_layers": 2, "downsamplings": 2}
SEED_EXAMPLE = {  # the original project's README model example, as it is
    "levels": 6, "filters": 16, "no_layers": 5, "min_value": 0, "max_value": 255, "kernel_size": 3,
    "type": "resnet", "batchnorm": True, "stop_grads": False, "activation": "relu", "local_normalization": -1,
    "output_multiplier": 1.0, "kernel_regularizer": "l1", "final_activation": "tanh",
    "input_shape": ["?", "?", 1], "kernel_initializer": "glorot_normal",
}
NON_HOMOGENEOUS = [
    {"bias_free": False}, {"final_activation": "tanh"}, {"clip_values": True}, {"local_normalization": 0},
    {"local_normalization": 3}, {"activation": "elu"},
]


def properties(name):
    return default_registries()["model"].get(name).schema.get("properties", {})


def tiny_spec(name, **extra):
    props = properties(name)
    spec = {"type": name, **{k: v for k, v in TINY.items() if k in props}}
    spec.update({k: v for k, v in extra.items() if k in props})
    return spec


def variants(name):
    """The tiny model, and for models with `levels` its multiscale forms (per-level, shared, stop_grads)."""
    out = [tiny_spec(name)]
    if "levels" in properties(name):
        out += [tiny_spec(name, levels=3), tiny_spec(name, levels=3, shared_weights=True, stop_grads=True)]
    return out


CASES = [pytest.param(spec, id="-".join(f"{k}={v}" for k, v in spec.items() if k not in TINY))
         for name in MODELS for spec in variants(name)]


def channels_of(model):
    return getattr(model, "channels", 3)


def warmed_up(spec, seed=0, dtype=torch.float32):
    """The model with every weight moved off its initial value and non-trivial batch-norm statistics (a few
    train-mode passes), in eval mode. Residual branches start at zero and gates nearly constant: unperturbed,
    whatever a block adds would take no part in the tests."""
    torch.manual_seed(seed)
    model = bfcnn.build("model", spec).to(dtype)
    c = channels_of(model)
    model.train()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
        for _ in range(3):
            model(torch.rand(2, c, 16, 16, dtype=dtype))
    return model.eval()


def relative_error(a, b):
    return float(((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).detach())


def max_homogeneity_error(model, x, scales=SCALES):
    with torch.no_grad():
        fx = model(x)
        return max(relative_error(model(a * x), a * fx) for a in scales)


BUILT_IN = ("dncnn", "resnet", "sparse_resnet", "gatenet", "unet")


@pytest.mark.parametrize("name", MODELS)
def test_every_model_has_bias_free_and_default_build_is_bias_free(name):
    model = bfcnn.build("model", tiny_spec(name))
    assert isinstance(model.bias_free, bool)
    if name in BUILT_IN:
        assert model.bias_free


def skip_unless_bias_free(model, spec):
    """Plugin models may be ordinary; the built-ins' default and multiscale forms must all be bias-free."""
    assert model.bias_free or spec["type"] not in BUILT_IN, f"{spec} reports bias_free false"
    if not model.bias_free:
        pytest.skip(f"{spec['type']} is not bias-free")


@pytest.mark.parametrize("spec", CASES)
def test_homogeneous(spec):
    model = warmed_up(spec)
    skip_unless_bias_free(model, spec)
    x = torch.rand(2, channels_of(model), 24, 20, generator=torch.Generator().manual_seed(1))
    assert max_homogeneity_error(model, x) <= 1e-5


@pytest.mark.parametrize("spec", CASES)
def test_locally_linear_jvp_and_jacobian(spec):
    """f(x) = J(x) x: in float32 through jvp; in float64 through jvp and the full Jacobian (jacrev = vmap of vjp;
    jacfwd agrees)."""
    model32 = warmed_up(spec)
    skip_unless_bias_free(model32, spec)
    x32 = torch.rand(1, channels_of(model32), 8, 8, generator=torch.Generator().manual_seed(2))
    fx32, jx32 = jvp(model32, (x32,), (x32,))
    assert relative_error(jx32, fx32) <= 1e-5
    model = warmed_up(spec, dtype=torch.float64)
    c = channels_of(model)
    x = torch.rand(1, c, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    fx, jx = jvp(model, (x,), (x,))
    assert fx.dtype == torch.float64
    assert relative_error(jx, fx) <= 1e-5
    small = x[..., :5, :6].contiguous()
    jacobian = jacrev(model)(small).reshape(small.numel(), small.numel())
    forward_jacobian = jacfwd(model)(small).reshape(small.numel(), small.numel())  # vmap over jvp
    assert (forward_jacobian - jacobian).abs().max() <= 1e-9 * jacobian.abs().max()
    assert relative_error((jacobian @ small.reshape(-1)).reshape(small.shape), model(small)) <= 1e-5
    _, pullback = vjp(model, x)  # the explain tool's other primitive
    (grad,) = pullback(torch.ones_like(fx))
    assert grad.shape == x.shape and torch.isfinite(grad).all()


@pytest.mark.parametrize("spec", CASES)
def test_odd_sizes_keep_their_shape(spec):
    model = bfcnn.build("model", spec).eval()
    x = torch.rand(1, channels_of(model), 37, 53)
    with torch.no_grad():
        assert model(x).shape == x.shape


@pytest.mark.parametrize("spec", CASES)
def test_first_convolution_takes_the_image_channels(spec):
    """Tools that infer a model's channels (bfcnn.layers.model_channels: the `channels` attribute, else the first
    Conv2d) get the right answer; a model whose first convolution sees other channels (a pixel-unshuffled input)
    must say its channels in the attribute."""
    from bfcnn.layers import model_channels

    wanted = 2 if "channels" in properties(spec["type"]) else None
    model = bfcnn.build("model", {**spec, "channels": 2} if wanted else spec)
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    if first.in_channels != channels_of(model):
        assert getattr(model, "channels", None) == wanted
    assert model_channels(model) == (wanted or first.in_channels)


@pytest.mark.parametrize("name", MODELS)
def test_a_few_training_steps_without_nan(name):
    for spec in variants(name):
        torch.manual_seed(0)
        model = bfcnn.build("model", {**spec, **({"kernel_regularizer": "l1"} if "kernel_regularizer"
                                                 in properties(name) else {})})
        before = copy.deepcopy(model.state_dict())
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        clean = torch.rand(4, channels_of(model), 16, 16)
        losses = []
        model.train()
        for _ in range(3):
            noisy = clean + 0.1 * torch.randn_like(clean)
            loss = torch.mean((model(noisy) - clean) ** 2)
            if hasattr(model, "regularization_loss"):
                loss = loss + 1e-4 * model.regularization_loss()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert all(torch.isfinite(torch.tensor(losses))), (spec, losses)
        assert all(torch.isfinite(p).all() for p in model.parameters())
        changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
        assert changed, spec


@pytest.mark.parametrize("name", [n for n in MODELS if "bias_free" in properties(n)])
def test_bias_free_false_reports_and_breaks_homogeneity_for_every_model(name):
    check_not_homogeneous(tiny_spec(name, bias_free=False))


@pytest.mark.parametrize("option", NON_HOMOGENEOUS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("name", ["resnet", "sparse_resnet", "gatenet", "unet"])
def test_non_homogeneous_options_report_and_break_homogeneity(name, option):
    check_not_homogeneous(tiny_spec(name, **option))


def check_not_homogeneous(spec):
    model = warmed_up(spec)
    assert model.bias_free is False
    torch.manual_seed(3)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("bias"):
                p.uniform_(-0.2, 0.2)
        for module in model.modules():  # unit scales: a core that barely changes its input would be the identity,
            if isinstance(module, (BiasFreeBatchNorm, torch.nn.BatchNorm2d)):  # homogeneous whatever the options
                module.weight.fill_(1.0)
    x = torch.rand(2, channels_of(model), 24, 20, generator=torch.Generator().manual_seed(1))
    # 0.01 as well: normalization's variance floor (1e-4) matters most on faint images
    assert max_homogeneity_error(model, x, (0.01,) + SCALES) > 1e-3


def test_seed_example_model_config_builds_as_it_is():
    model = bfcnn.build("model", SEED_EXAMPLE)
    assert model.channels == 1 and model.levels == 6
    assert model.bias_free is False  # tanh final activation
    penalty = model.regularization_loss()
    assert penalty.ndim == 0 and penalty.item() > 0
    penalty.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(1, 1, 37, 53)).shape == (1, 1, 37, 53)
    homogeneous = bfcnn.build("model", {**SEED_EXAMPLE, "final_activation": "linear"})
    assert homogeneous.bias_free is True


def test_quickstart_dncnn_keeps_its_params_and_weights_layout():
    model = bfcnn.build("model", {"type": "dncnn", "channels": 3, "depth": 6, "filters": 16})
    assert model.bias_free and model.channels == 3
    keys = set(model.state_dict())
    assert {"body.0.weight", "body.3.weight", "body.3.running_var", "body.14.weight"} <= keys
    assert not any(k.endswith("bias") for k in keys)
    ablation = bfcnn.build("model", {"type": "dncnn", "depth": 4, "filters": 4, "bias_free": False})
    assert ablation.bias_free is False and any(k.endswith("bias") for k in ablation.state_dict())


def test_regularizers_follow_keras():
    spec = tiny_spec("resnet")
    model = bfcnn.build("model", {**spec, "kernel_regularizer": "l1"})
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    l1 = 0.01 * sum(w.abs().sum() for w in convs)
    assert torch.allclose(model.regularization_loss(), l1)
    model.kernel_regularizer = "l2"
    assert torch.allclose(model.regularization_loss(), 0.01 * sum(w.pow(2).sum() for w in convs))
    model.kernel_regularizer = "l1_l2"
    assert torch.allclose(model.regularization_loss(), l1 + 0.01 * sum(w.pow(2).sum() for w in convs))
    assert float(bfcnn.build("model", spec).regularization_loss()) == 0.0


@pytest.mark.parametrize("spec, message", [
    ({"type": "resnet", "channels": 3, "input_shape": ["?", "?", 1]}, "disagrees"),
    ({"type": "resnet", "min_value": 255, "max_value": 0}, "min_value"),
    ({"type": "resnet", "kernel_size": 4}, "odd"),
    ({"type": "dncnn", "kernel_size": 4}, "odd"),
    ({"type": "unet", "batchnorm": "mean"}, "batchnorm"),
    ({"type": "resnet", "activation": "swish"}, "activation"),
    ({"type": "gatenet", "levels": 0}, "levels"),
    ({"type": "unet", "final_activation": "softmax"}, "final_activation"),
])
def test_bad_model_params_are_config_errors(spec, message):
    with pytest.raises(BfcnnError, match=message):
        bfcnn.build("model", spec)


def test_multiscale_with_silent_cores_is_exactly_the_identity():
    """Zero heads: every core predicts no noise, so the pyramid must give the input back (to 1e-6)."""
    for name in ("resnet", "unet"):
        for shared in (False, True):
            model = bfcnn.build("model", tiny_spec(name, levels=4, shared_weights=shared)).eval()
            with torch.no_grad():
                for module_name, module in model.named_modules():
                    if module_name.endswith("head"):
                        module.weight.zero_()
                x = torch.rand(2, 3, 37, 53)
                assert (model(x) - x).abs().max() <= 1e-6


def test_multiscale_weights_per_level_or_shared():
    per_level = bfcnn.build("model", tiny_spec("resnet", levels=3))
    shared = bfcnn.build("model", tiny_spec("resnet", levels=3, shared_weights=True))
    single = bfcnn.build("model", tiny_spec("resnet"))
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(shared) > n(single)  # the coarser estimate comes in through its own stem conv
    assert n(per_level) == 2 * n(shared) + n(single)  # the coarsest level has no coarser estimate
    assert len(set(shared.state_dict())) == len(shared.state_dict())  # no aliased tensors (safetensors)


def test_stop_grads_cuts_the_coarse_path_in_training_only():
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    grads, outputs = {}, {}
    for stop in (False, True):
        torch.manual_seed(0)
        model = bfcnn.build("model", tiny_spec("resnet", levels=2, stop_grads=stop, batchnorm=False)).train()
        y = model(x)
        (y ** 2).sum().backward()
        grads[stop] = torch.cat([p.grad.flatten() for p in model.cores[1].parameters()])
        outputs[stop] = y.detach()
    assert torch.equal(outputs[False], outputs[True])  # same function, only the gradients differ
    assert not torch.allclose(grads[False], grads[True])
    assert grads[True].abs().sum() > 0  # the coarse core still learns through the reconstruction
    model = model.double().eval()
    fx, jx = jvp(model, (x.double(),), (x.double(),))
    assert relative_error(jx, fx) <= 1e-5  # eval: nothing detached, the Jacobian is exact


@pytest.mark.parametrize("levels", [1, 2, 3, 6])
def test_laplacian_pyramid_reconstructs_exactly(levels):
    x = torch.rand(2, 3, 37, 53, generator=torch.Generator().manual_seed(0))
    bands = laplacian_pyramid(x, levels)
    assert len(bands) == levels
    assert bands[0].shape == x.shape
    sizes = [b.shape[-2:] for b in bands]
    for finer, coarser in zip(sizes, sizes[1:]):
        assert tuple(coarser) == ((finer[0] + 1) // 2, (finer[1] + 1) // 2)
    assert (reconstruct_pyramid(bands) - x).abs().max() <= 1e-6
    if levels > 1:  # the band-pass levels of a constant image are empty: the low-pass keeps it all
        flat = laplacian_pyramid(torch.full((1, 1, 37, 53), 0.7), levels)
        assert all(b.abs().max() < 1e-6 for b in flat[:-1])


def test_bias_free_batch_norm():
    bn = BiasFreeBatchNorm(3, momentum=0.5)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
    x = torch.randn(4, 3, 8, 8) * torch.tensor([1.0, 5.0, 0.1]).view(1, 3, 1, 1) + 2.0
    y = bn.train()(x)
    std = x.std(dim=(0, 2, 3), unbiased=False)
    expected = x * (bn.weight.detach() / (std * std + bn.eps).sqrt()).view(1, 3, 1, 1)
    assert torch.allclose(y, expected, rtol=1e-5, atol=1e-6)  # divided by the std; the mean not subtracted
    assert torch.allclose(y.sign(), x.sign())
    expected_var = 0.5 * 1 + 0.5 * x.var(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(bn.running_var, expected_var, rtol=1e-5)
    rms = BiasFreeBatchNorm(3, statistic="rms").train()
    assert rms.weight.abs().max() <= 0.025  # the paper's small initial scales
    with torch.no_grad():
        rms.weight.fill_(1.0)
    assert torch.allclose(rms(x).pow(2).mean(dim=(0, 2, 3)).sqrt(), torch.ones(3), rtol=1e-4)  # divided by the RMS
    bn.eval()
    z = bn(3 * x)
    assert torch.allclose(z, 3 * bn(x), rtol=1e-6)
    assert torch.allclose(z, 3 * x * (bn.weight / (bn.running_var + bn.eps).sqrt()).view(1, 3, 1, 1))
    # other dtypes and memory formats
    assert bn.double()(x.double()).dtype == torch.float64
    bf = BiasFreeBatchNorm(3).train()(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))
    assert bf.dtype == torch.bfloat16 and torch.isfinite(bf.float()).all()


def test_bias_free_batch_norm_std_is_accurate_in_bf16_with_a_large_mean():
    """The centre is rounded to bf16 before it is subtracted; the statistic corrects for that offset."""
    x = (torch.randn(8, 4, 32, 32, dtype=torch.float64) * 4 + 100.3).to(torch.bfloat16)  # mean between bf16 steps
    bn = BiasFreeBatchNorm(4, momentum=1.0).train()
    bn(x)
    exact = x.double().var(dim=(0, 2, 3), unbiased=False)
    assert ((bn.running_var.double() - exact).abs() / exact).max() < 1e-3


def test_scale_free_gate_and_shrink():
    h = torch.randn(2, 6, 5, 7)
    gate, shrink = ScaleFreeGate(6), ScaleFreeShrink(6, threshold=0.5)
    with torch.no_grad():
        g = gate(h)
        assert g.shape == (2, 1, 5, 7) and ((g > 0) & (g < 1)).all()
        assert torch.allclose(gate(17 * h), g, atol=1e-6) and torch.allclose(gate(0.1 * h), g, atol=1e-6)
        s = shrink(h)
        assert torch.allclose(shrink(3 * h), 3 * s, rtol=1e-5, atol=1e-6)
        assert (s == 0).float().mean() > 0.2  # sparse
        assert ((s.abs() <= h.abs() + 1e-7) & ((s == 0) | (s.sign() == h.sign()))).all()  # soft threshold


def test_flops_per_pixel_counts_convolutions():
    model = bfcnn.build("model", {"type": "dncnn", "depth": 3, "filters": 8, "channels": 1, "batchnorm": False})
    # three 3x3 convs: 1->8, 8->8, 8->1, two FLOPs per multiply-add
    assert flops_per_pixel(model, 1, size=16) == 2 * 9 * (8 + 64 + 8)


class BrokenModelPlugin:
    @hookimpl
    def register_models(self, register):
        def broken(**params):
            raise RuntimeError("cannot build this one")
        register("broken_model", broken, None, "a model that fails to build")


def test_list_model_shows_bias_free_parameters_and_flops(monkeypatch):
    from bfcnn import cli, registry

    registries = registry.load_registries(extra_plugins=[BrokenModelPlugin()], autoload=False)
    monkeypatch.setattr(registry, "default_registries", lambda: registries)
    out = io.StringIO()
    with redirect_stdout(out):
        code = cli.main(["list", "model"])
    text = out.getvalue()
    assert code == 0
    lines = {line.split()[0]: line for line in text.splitlines()[1:] if line.strip()}
    assert "bias-free: yes" in lines["dncnn"] and "668,160 params" in lines["dncnn"]
    assert "MFLOP/px" in lines["resnet"]
    assert "cannot build this one" in lines["broken_model"]


def test_pyramid_deeper_than_the_image_and_checkpoint_round_trip(tmp_path):
    from bfcnn.checkpoint import load_model, save_model

    spec = tiny_spec("gatenet", levels=6, shared_weights=True)
    model = warmed_up(spec)
    x = torch.rand(1, 3, 8, 5)  # 8 x 5 -> 4 x 3 -> 2 x 2 -> 1 x 1 -> 1 x 1 -> 1 x 1
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    save_model(tmp_path / "model.safetensors", model, spec)
    loaded = load_model(tmp_path / "model.safetensors")
    with torch.no_grad():
        assert torch.equal(loaded(x), y)


def test_flops_fall_back_to_the_cpu_for_ops_without_meta_kernels():
    class NeedsValues(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 1, bias=False)

        def forward(self, x):
            return self.conv(x) * (1.0 if x.sum().item() >= 0 else -1.0)  # .item() has no meta form

    assert flops_per_pixel(NeedsValues(), 1, size=8) == 2 * 2


@pytest.mark.parametrize("name", ["dncnn", "resnet", "sparse_resnet", "gatenet", "unet"])
def test_built_in_models_trace_into_one_graph_for_torch_compile(name):
    """No graph breaks (dynamo tracing only, nothing is compiled), so torch.compile can fuse the bias-free
    batch norm with its neighbours."""
    import torch._dynamo as dynamo

    spec = tiny_spec(name, levels=2, stop_grads=True)
    model = bfcnn.build("model", spec).train()
    explanation = dynamo.explain(model)(torch.rand(2, channels_of(model), 17, 15))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.parametrize("name", ["resnet", "sparse_resnet", "gatenet"])
@pytest.mark.parametrize("batchnorm", [True, False])
def test_residual_blocks_start_as_the_identity_so_depth_and_levels_keep_the_start_quiet(name, batchnorm):
    from bfcnn.plugins.models import ResidualBlock

    torch.manual_seed(0)
    model = bfcnn.build("model", {"type": name, "channels": 3, "filters": 8, "no_layers": 3, "batchnorm": batchnorm})
    blocks = [m for m in model.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == 3
    h = torch.rand(2, 8, 12, 12)  # non-negative, as after the stem's relu
    for block in blocks:
        block.shrink = None  # the sparse constraint shrinks on purpose; the branch is what starts at zero
        torch.testing.assert_close(block.train()(h), h)
    # the whole multiscale model's first noise estimate is of the order of the input, not tens of times it
    deep = bfcnn.build("model", {"type": name, "channels": 3, "filters": 32, "no_layers": 8, "levels": 3,
                                 "batchnorm": batchnorm}).train()
    x = torch.rand(4, 3, 40, 40)
    assert float((x - deep(x)).std()) < 2.0


@pytest.mark.parametrize("name", ["resnet", "unet"])
@pytest.mark.parametrize("shared", [True, False])
def test_eval_mode_matches_training_mode_on_the_batch_the_statistics_came_from(name, shared):
    """With momentum 1 the running statistics are the last batch's, so eval must reproduce the training-mode
    output on that batch. A core shared by the pyramid's levels needs one set of statistics per level for this."""
    from bfcnn.layers import BiasFreeBatchNorm

    torch.manual_seed(0)
    model = bfcnn.build("model", {"type": name, "channels": 3, "filters": 8, "no_layers": 2, "levels": 3,
                                  "shared_weights": shared, "batchnorm": True})
    norms = [m for m in model.modules() if isinstance(m, BiasFreeBatchNorm)]
    assert norms
    for norm in norms:
        norm.momentum = 1.0
        with torch.no_grad():
            norm.weight.uniform_(0.5, 1.5)  # not the zero start, so every branch takes part
    x = torch.rand(2, 3, 48, 40) * 2
    with torch.no_grad():
        trained = model.train()(x)
        evaluated = model.eval()(x)
    torch.testing.assert_close(evaluated, trained, rtol=1e-4, atol=1e-5)


def test_ordinary_twin_with_a_shared_core_keeps_running_statistics_per_level():
    """The same for torch's batch norm (its running variance is the unbiased one, so no exact equality):
    every level writes its own row of statistics."""
    from bfcnn.layers import SlottedBatchNorm2d

    model = bfcnn.build("model", {"type": "resnet", "channels": 3, "filters": 8, "no_layers": 2, "levels": 3,
                                  "shared_weights": True, "batchnorm": True, "bias_free": False})
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(isinstance(m, SlottedBatchNorm2d) for m in norms)
    with torch.no_grad():
        model.train()(torch.rand(2, 3, 48, 40) * 2)
    for norm in norms:
        assert norm.running_var.shape[0] == 3
        assert not torch.allclose(norm.running_var[0], norm.running_var[2])  # a fine band and the coarse one
