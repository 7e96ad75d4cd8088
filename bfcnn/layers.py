"""Building blocks of bias-free denoisers: convolutions without bias, bias-free batch norm, homogeneous
activations, scale-free sparsity and gates, and a Laplacian pyramid with exact reconstruction.

Everything here is written with plain tensor ops (no in-place ops on tensors that carry gradients, no Python
branching on tensor values), so it works in float64, under torch.func (jvp, vjp, jacrev) and torch.compile.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# positively homogeneous activations: act(a x) = a act(x) for a > 0
HOMOGENEOUS_ACTIVATIONS = ("relu", "leaky_relu", "prelu", "linear")
OTHER_ACTIVATIONS = ("elu", "gelu", "silu", "tanh", "softplus")
ACTIVATIONS = HOMOGENEOUS_ACTIVATIONS + OTHER_ACTIVATIONS
LEAKY_SLOPE = 0.2


def activation(name: str, channels: int) -> nn.Module:
    """A fresh activation module by name (never in-place, so autograd and torch.func keep working)."""
    makers = {
        "relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(LEAKY_SLOPE), "prelu": lambda: nn.PReLU(channels),
        "linear": nn.Identity, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh,
        "softplus": nn.Softplus,
    }
    if name not in makers:
        raise ValueError(f"unknown activation {name!r} (known: {', '.join(ACTIVATIONS)})")
    return makers[name]()


def conv(in_channels, out_channels, kernel_size=3, bias=False, stride=1) -> nn.Conv2d:
    """A 'same' convolution; bias-free unless asked for."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=bias)


PAPER_SCALE, PAPER_CLAMP = 2.0 / 9.0 / 64.0, 0.025  # BF_batchNorm's initial gammas (Mohan et al.'s code)


class BiasFreeBatchNorm(nn.Module):
    """Batch norm without mean subtraction or shift: x * gamma / sqrt(var + eps), per channel.

    `statistic` "std" (the paper's): var is the batch's variance (its mean is taken out of the statistic,
    never out of x); "rms": the batch's mean square, E[x^2]. Both scale with the input, so the layer keeps the
    network homogeneous. Training accumulates in float32 whatever the input dtype and updates `running_var`;
    eval uses `running_var`, a fixed per-channel scale. Plain tensor ops only: torch.compile fuses it.
    """

    pointwise = True  # each pixel on its own: it widens no receptive field (bfcnn.receptive)

    STATISTICS = ("std", "rms")

    def __init__(self, channels, momentum=0.1, eps=1e-5, slots=1, statistic="std"):
        super().__init__()
        if statistic not in self.STATISTICS:
            raise ValueError(f"statistic must be one of {', '.join(self.STATISTICS)}, got {statistic!r}")
        # the paper's start: small random scales. Nothing subtracts a mean, so with unit scales a deep stack's
        # activations grow layer by layer: a 6-layer BF-DnCNN then never left the identity (20.9 dB at sigma 25
        # after 600 steps, against 28.4 with this start and 26.9 dividing by the RMS with unit scales)
        self.weight = nn.Parameter((torch.randn(channels) * PAPER_SCALE).clamp_(-PAPER_CLAMP, PAPER_CLAMP))
        self.register_buffer("running_var", torch.ones(channels) if slots == 1 else torch.ones(slots, channels))
        self.momentum, self.eps, self.statistic = momentum, eps, statistic
        self.slot = 0  # the row of running_var in use, with slots > 1 (see per_level_statistics)

    def forward(self, x):
        running = self.running_var if self.running_var.dim() == 1 else self.running_var[self.slot]
        if self.training:
            accumulate = torch.promote_types(x.dtype, torch.float32)
            if self.statistic == "std":  # two passes, centred: E[x^2] - E[x]^2 would cancel where the mean is
                # large; and 13x faster than torch.var_mean on a CPU (0.75 against 9.7 ms for 1 x 64 x 256 x 256)
                mean = torch.mean(x, dim=(0, 2, 3), keepdim=True, dtype=accumulate)
                centre = mean.to(x.dtype)  # in bf16 the centre is rounded: its offset from the mean comes off below
                norm = torch.linalg.vector_norm(x - centre, 2, dim=(0, 2, 3), dtype=accumulate)
                var = norm * norm / (x.numel() // x.shape[1]) - (mean - centre.to(accumulate)).square().flatten()
            else:  # one fused reduction
                norm = torch.linalg.vector_norm(x, 2, dim=(0, 2, 3), dtype=accumulate)
                var = norm * norm / (x.numel() // x.shape[1])
            with torch.no_grad():
                running.lerp_(var.detach().to(running.dtype), self.momentum)
        else:
            var = running
        scale = self.weight * torch.rsqrt(var.to(self.weight.dtype) + self.eps)
        return x * scale.view(1, -1, 1, 1).to(x.dtype)

    def extra_repr(self):
        return f"{self.weight.numel()}, statistic={self.statistic!r}"


def batch_norm(channels, bias_free=True, batchnorm=True) -> nn.Module:
    """The batch norm a model's `batchnorm` key asks for: true or "std", the paper's bias-free one (divide by the
    batch's standard deviation); "rms", divide by its root mean square; torch's own when not bias_free."""
    if not bias_free:
        return nn.BatchNorm2d(channels)
    return BiasFreeBatchNorm(channels, statistic="rms" if batchnorm == "rms" else "std")


class SlottedBatchNorm2d(nn.BatchNorm2d):
    """torch's batch norm with `slots` rows of running statistics, `slot` picking the one in use."""

    def __init__(self, channels, slots, momentum=0.1, eps=1e-5):
        super().__init__(channels, eps=eps, momentum=momentum)
        self.register_buffer("running_mean", torch.zeros(slots, channels))
        self.register_buffer("running_var", torch.ones(slots, channels))
        self.slot = 0

    def forward(self, x):
        return F.batch_norm(x, self.running_mean[self.slot], self.running_var[self.slot], self.weight, self.bias,
                            self.training, self.momentum, self.eps)


class OnGridCore(nn.Module):
    """A model that zero-pads to its grid inside (bfcnn.receptive.pad_to), as its core alone: what a trace or a
    fixed-size conversion is made of, with no size frozen in a pad or crop; the caller pads the inputs outside
    (bfcnn.engines.on_grid, bfcnn.runtime with the report's `tiling.pad_to`)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.core(x)


def per_level_statistics(core: nn.Module, levels: int) -> list[nn.Module]:
    """Give every batch norm of a core that all pyramid levels share one row of running statistics per level,
    and return those norms (set `.slot = level` before running the core on a level). In training each level's
    band is normalized by its own batch statistics; the bands' scales differ (a coarse band holds the image,
    a fine one its edges), so eval needs each level's own running values: one shared set made a trained 3-level
    model 3 dB worse in eval than in training at sigma 50."""
    slotted = []
    for parent in list(core.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, BiasFreeBatchNorm):
                new = BiasFreeBatchNorm(child.weight.numel(), child.momentum, child.eps, levels, child.statistic)
            elif isinstance(child, nn.BatchNorm2d) and not isinstance(child, SlottedBatchNorm2d):
                new = SlottedBatchNorm2d(child.num_features, levels, child.momentum, child.eps)
            else:
                continue
            new.load_state_dict({k: v for k, v in child.state_dict().items() if not k.startswith(("running_", "num_"))},
                                strict=False)
            setattr(parent, name, new)
            slotted.append(new)
    return slotted


def soft_threshold(h, tau):
    """sign(h) * max(|h| - tau, 0), written as h - clamp(h, -tau, tau) (differentiable, compile-friendly)."""
    return h - torch.maximum(torch.minimum(h, tau), -tau)


class ScaleFreeShrink(nn.Module):
    """Sparsity that keeps homogeneity: soft threshold at t_c times the pixel's own feature scale.

    The scale is the mean |h| over channels at each pixel, so it scales with the input (and needs no eps, no
    neighbours: tiling gives the same result); t_c >= 0 is learned per channel (stored as its square root).
    """

    def __init__(self, channels, threshold=0.5):
        super().__init__()
        self.root = nn.Parameter(torch.full((channels,), float(threshold) ** 0.5))

    def forward(self, h):
        scale = h.abs().mean(dim=1, keepdim=True)
        tau = (self.root * self.root).view(1, -1, 1, 1).to(h.dtype) * scale
        return soft_threshold(h, tau)


class ScaleFreeGate(nn.Module):
    """A per-pixel on/off gate in (0, 1) computed from the direction of the feature vector, h / |h|.

    The direction is unchanged when the input is scaled, so gate(a h) = gate(h) and a gated block stays
    homogeneous. The logit's offset acts on that scale-free quantity, so it adds no constant to the output.
    """

    EPS = 1e-24  # guards 0 / 0 only: relative effect below 1e-12 for feature norms above 1e-6

    def __init__(self, channels, open_logit=2.0):
        super().__init__()
        self.proj = nn.Conv2d(channels, 1, 1, bias=True)
        self.open_logit = open_logit
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.normal_(self.proj.weight, std=0.01)
        nn.init.constant_(self.proj.bias, self.open_logit)

    def forward(self, h):
        # the channel sum as a 1x1 convolution with ones: litert-torch 0.10 gives a keepdim reduction a reshape
        # fixed at the converted size, so a TFLite file with one could not be resized
        squares = F.conv2d(h * h, h.new_ones(1, h.shape[1], 1, 1))
        direction = h * torch.rsqrt(squares + self.EPS)
        return torch.sigmoid(self.proj(direction))


# ---------------------------------------------------------------------------------------------------------
# Laplacian pyramid

BINOMIAL_5 = (1.0, 4.0, 6.0, 4.0, 1.0)


def blur_kernel(channels, dtype, device):
    k = torch.tensor(BINOMIAL_5, dtype=dtype, device=device)
    k2 = torch.outer(k, k) / (k.sum() ** 2)
    return k2.expand(channels, 1, 5, 5)


def downsample(x):
    """Binomial 5x5 blur (replicate border) then every second pixel: H x W -> ceil(H/2) x ceil(W/2)."""
    channels = x.shape[1]
    padded = F.pad(x, (2, 2, 2, 2), mode="replicate")
    return F.conv2d(padded, blur_kernel(channels, x.dtype, x.device), stride=2, groups=channels)


def upsample(x, size):
    """Bilinear up-sampling by exactly 2, cropped to `size` (ceil(n / 2) -> n, so odd sizes round-trip).

    The factor is fixed rather than size / ceil(size / 2): the coarse grid then sits at the same place for every
    image size, which keeps the levels registered on odd sizes and makes tiles agree with the whole image.
    """
    up = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False, recompute_scale_factor=False)
    return up[..., :size[0], :size[1]]


def laplacian_pyramid(x, levels: int) -> list:
    """[L_0, ..., L_{n-2}, G_{n-1}]: band-pass residuals, finest first, then the low-pass remainder.

    Every step is linear, so the pyramid keeps homogeneity; `reconstruct_pyramid` inverts it exactly
    (L_i = G_i - up(G_{i+1}) by construction, whatever the filters).
    """
    bands, current = [], x
    for _ in range(levels - 1):
        lower = downsample(current)
        bands.append(current - upsample(lower, current.shape[-2:]))
        current = lower
    bands.append(current)
    return bands


def reconstruct_pyramid(bands: list):
    current = bands[-1]
    for band in reversed(bands[:-1]):
        current = band + upsample(current, band.shape[-2:])
    return current


# ---------------------------------------------------------------------------------------------------------
# initialisation, regularization, counting

def init_conv_weights(module: nn.Module, initializer: str):
    """Keras-named initialisers for every conv weight (biases to zero, as Keras does); gates keep theirs."""
    if initializer == "torch_default":
        return
    fns = {
        "glorot_normal": nn.init.xavier_normal_,
        "glorot_uniform": nn.init.xavier_uniform_,
        "he_normal": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
        "he_uniform": lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu"),
        "orthogonal": nn.init.orthogonal_,
    }
    if initializer not in fns:
        raise ValueError(f"unknown kernel_initializer {initializer!r} (known: torch_default, {', '.join(fns)})")
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            fns[initializer](m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for m in module.modules():  # gates keep their own start (nearly open)
        if isinstance(m, ScaleFreeGate):
            m.reset_parameters()


KERAS_FACTOR = 0.01  # Keras' default factor for the string regularizers 'l1', 'l2', 'l1_l2'


def kernel_penalty(module: nn.Module, kind: str | None):
    """Keras-style penalty over every conv kernel: l1 = 0.01 sum|w|, l2 = 0.01 sum w^2, l1_l2 = both."""
    weights = [m.weight for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    total = weights[0].new_zeros(()) if weights else torch.zeros(())
    if kind in (None, "none"):
        return total
    for w in weights:
        if kind in ("l1", "l1_l2"):
            total = total + KERAS_FACTOR * w.abs().sum()
        if kind in ("l2", "l1_l2"):
            total = total + KERAS_FACTOR * w.pow(2).sum()
    return total


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_pixel(model: nn.Module, channels: int, size: int = 64) -> float:
    """FLOPs (2 x multiply-adds of convolutions and matrix products) per input pixel, by
    torch.utils.flop_counter on a `size` x `size` input of the meta device (nothing is computed; the CPU
    when the model has an op without a meta kernel)."""
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    copied = copy.deepcopy(model).eval()
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            copied.to("meta")(torch.zeros(1, channels, size, size, device="meta"))
    except (NotImplementedError, RuntimeError):  # an op without a meta kernel: count on the CPU instead
        copied = copy.deepcopy(model).eval().cpu()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            copied(torch.zeros(1, channels, size, size))
    return counter.get_total_flops() / (size * size)


def model_channels(model: nn.Module) -> int:
    """Input channels of a model: its `channels` attribute, else the first Conv2d's in_channels."""
    if isinstance(getattr(model, "channels", None), int):
        return model.channels
    for layer in model.modules():
        if isinstance(layer, nn.Conv2d):
            return layer.in_channels
    from .errors import BfcnnError

    raise BfcnnError("cannot tell the model's input channels: it has no Conv2d and no `channels` attribute")


def model_facts(name, registries=None, size=64) -> dict:
    """bias_free, parameter count and FLOPs per pixel of a registered model built with default params."""
    from .registry import build

    model = build("model", {"type": name}, registries)
    return {"bias_free": bool(getattr(model, "bias_free", False)), "parameters": parameter_count(model),
            "flops_per_pixel": flops_per_pixel(model, model_channels(model), size)}
