"""Built-in denoisers. A model is a torch.nn.Module from N x C x H x W to the same shape, with `bias_free`.

dncnn: the paper's BF-DnCNN. resnet, sparse_resnet, gatenet and unet (BF-UNet) share one wrapper that takes
the original project's model keys (levels, no_layers, stop_grads, local_normalization, ...): `levels` > 1
runs the network coarse-to-fine inside a Laplacian pyramid. Options that add a constant somewhere (biases,
non-homogeneous activations, tanh output, clipping, mean/std normalization) are allowed; the model then
reports `bias_free = False`.
"""

from __future__ import annotations

import functools
import json

import torch
import torch.nn.functional as F
from torch import nn

from bfcnn.registry import hookimpl
from bfcnn.errors import ConfigError
from bfcnn.layers import (
    ACTIVATIONS,
    HOMOGENEOUS_ACTIVATIONS,
    BiasFreeBatchNorm,
    ScaleFreeGate,
    ScaleFreeShrink,
    activation,
    batch_norm,
    conv,
    init_conv_weights,
    kernel_penalty,
    laplacian_pyramid,
    model_facts,
    per_level_statistics,
    upsample,
)

__all__ = ["BiasFreeBatchNorm", "DRUNet", "DnCNN", "ShuffleDnCNN", "Denoiser", "ResNetCore", "UNetCore", "build_denoiser", "model_facts"]

def check_kernel_size(kernel_size):
    """The schema's rule (KERNEL_SIZE) for code that builds a model without bfcnn.build."""
    if kernel_size % 2 == 0:
        raise ConfigError(f"model.kernel_size must be odd (a 'same' convolution), got {kernel_size}")


class DnCNN(nn.Module):
    """The paper's BF-DnCNN: conv-relu, (depth-2) x conv-BN-relu, conv; predicts the noise and subtracts it."""

    def __init__(self, channels=3, depth=20, filters=64, kernel_size=3, batchnorm=True, bias_free=True):
        super().__init__()
        check_kernel_size(kernel_size)
        pad = kernel_size // 2
        layers = [nn.Conv2d(channels, filters, kernel_size, padding=pad, bias=not bias_free), nn.ReLU()]
        for _ in range(depth - 2):
            layers.append(nn.Conv2d(filters, filters, kernel_size, padding=pad, bias=False if batchnorm else not bias_free))
            if batchnorm:
                layers.append(batch_norm(filters, bias_free, batchnorm))
            layers.append(nn.ReLU())
        layers.append(nn.Conv2d(filters, channels, kernel_size, padding=pad, bias=not bias_free))
        self.body = nn.Sequential(*layers)
        self.channels = channels
        self.bias_free = bias_free

    def forward(self, x):
        return x - self.body(x)


class ShuffleDnCNN(nn.Module):
    """A DnCNN at 1/factor resolution, as FFDNet works: pixel-unshuffle in (C -> C factor^2 channels), the DnCNN
    body there, pixel-shuffle out, subtracted from the input. About factor^2 fewer FLOPs per pixel for the same
    width and a factor wider view. Both shuffles are permutations, so the model stays bias-free. Sides that are
    not multiples of `factor` are zero-padded (linear) and cropped back."""

    pads_to_grid = True  # as said: bfcnn.engines pads a traced copy's input the same way

    def __init__(self, channels=3, depth=12, filters=96, kernel_size=3, batchnorm=True, bias_free=True, factor=2):
        super().__init__()
        check_kernel_size(kernel_size)
        self.factor, self.channels, self.bias_free = factor, channels, bias_free
        inner = DnCNN(channels * factor * factor, depth, filters, kernel_size, batchnorm, bias_free)
        self.body = inner.body
        self.grid = factor  # tiles start on the shuffle's phase
        self.receptive_radius = factor * depth * (kernel_size // 2) + factor - 1
        n = channels * factor * factor  # the shuffles' one-hot kernel, a constant: not in the weights file
        self.register_buffer("onehot", torch.eye(n).view(n, channels, factor, factor), persistent=False)

    def forward(self, x):
        f = self.factor
        h, w = x.shape[-2:]
        # always, as DRUNet: symbolic sizes keep the arithmetic
        return self.core(F.pad(x, (0, (-w) % f, 0, (-h) % f)))[..., :h, :w]

    def core(self, x):
        """The model on sides that are multiples of `factor` (no pad, no crop). The shuffles are a strided
        convolution and its transpose with a one-hot kernel (exactly F.pixel_unshuffle / F.pixel_shuffle):
        no reshape holds a size, so a TFLite file converted at one size runs at any other."""
        f, onehot = self.factor, self.onehot.to(x.dtype)
        return x - F.conv_transpose2d(self.body(F.conv2d(x, onehot, stride=f)), onehot, stride=f)


class ResBlock(nn.Module):
    """DRUNet's block without biases: h + conv(relu(conv(h))), the second conv starting at zero."""

    def __init__(self, filters, bias_free=True):
        super().__init__()
        self.conv1 = conv(filters, filters, 3, bias=not bias_free)
        self.conv2 = conv(filters, filters, 3, bias=not bias_free)
        nn.init.zeros_(self.conv2.weight)

    def forward(self, h):
        return h + self.conv2(torch.relu(self.conv1(h)))


class DRUNet(nn.Module):
    """A small bias-free DRUNet (Zhang et al. 2021, scaled down, no noise-level map): a head conv, `scales` - 1
    stride-2 2x2 convolutions down (filters double each time) with `blocks` residual blocks before each, a body of
    residual blocks, transposed 2x2 convolutions up with additive skips, a tail conv; predicts the noise and
    subtracts it. Sides that are not multiples of 2^(scales-1) are zero-padded (linear) and cropped back."""

    pads_to_grid = True  # as said: bfcnn.engines pads a traced copy's input the same way

    def __init__(self, channels=3, filters=32, blocks=2, scales=4, bias_free=True):
        super().__init__()
        self.channels, self.bias_free = channels, bias_free
        bias = not bias_free
        widths = [filters * 2 ** s for s in range(scales)]
        self.head = conv(channels, filters, 3, bias=bias)
        self.down = nn.ModuleList(
            nn.Sequential(*[ResBlock(w, bias_free) for _ in range(blocks)],
                          nn.Conv2d(w, w2, 2, stride=2, bias=bias)) for w, w2 in zip(widths, widths[1:]))
        self.body = nn.Sequential(*[ResBlock(widths[-1], bias_free) for _ in range(blocks)])
        self.up = nn.ModuleList(
            nn.ModuleList([nn.ConvTranspose2d(w2, w, 2, stride=2, bias=bias),
                           nn.Sequential(*[ResBlock(w, bias_free) for _ in range(blocks)])])
            for w, w2 in reversed(list(zip(widths, widths[1:]))))
        self.tail = conv(filters, channels, 3, bias=bias)
        self.grid = 2 ** (scales - 1)
        # a bound on the context: two 3x3 convs a block at each scale's stride, down and up; each 2x2 step's
        # reach; head and tail
        reach = sum(2 * blocks * 2 ** s for s in range(scales - 1)) * 2 + 2 * blocks * 2 ** (scales - 1)
        self.receptive_radius = reach + 2 * (2 ** (scales - 1)) + 2
        # a wide view makes a tile's context large: on dev-2core the shipped small UNet (radius 106, onnxruntime)
        # denoised a 24 MP JPEG in 33.7 s / 1,663 MB with tiles of 1024, 38.9 s / 1,372 MB with 768, 50.2 s /
        # 1,252 MB with 512 (BENCHMARKS.md): 768 keeps the default model inside 1.5 GB
        self.default_tile = {"cpu": 768} if self.receptive_radius > 64 else {}

    def forward(self, x):
        h, w = x.shape[-2:]
        g = self.grid
        # padded always, by (-h) % g (often 0): no branch on the size, so an export with symbolic sizes keeps the
        # pad's arithmetic instead of fixing it at the example's size
        return self.core(F.pad(x, (0, (-w) % g, 0, (-h) % g)))[..., :h, :w]

    def core(self, x):
        """The model on sides that are multiples of its grid (no pad, no crop): what a fixed-size export holds."""
        t = self.head(x)
        skips = []
        for stage in self.down:
            skips.append(t)
            t = stage(t)
        t = self.body(t)
        for (upconv, blocks), skip in zip(self.up, reversed(skips)):
            t = blocks(upconv(t) + skip)
        return x - self.tail(t)


# ---------------------------------------------------------------------------------------------------------
# cores: (N, in_channels, H, W) -> the predicted noise (N, out_channels, H, W)

class ResidualBlock(nn.Module):
    """h -> act(h + g(h) * BN(conv(act(BN(conv(h)))))), then an optional scale-free shrink."""

    def __init__(self, filters, kernel_size, batchnorm, bias_free, act, gated=False, sparse=False, threshold=0.5):
        super().__init__()
        bias = not bias_free and not batchnorm
        self.conv1 = conv(filters, filters, kernel_size, bias=bias)
        self.bn1 = batch_norm(filters, bias_free, batchnorm) if batchnorm else nn.Identity()
        self.act1 = activation(act, filters)
        self.conv2 = conv(filters, filters, kernel_size, bias=bias)
        self.bn2 = batch_norm(filters, bias_free, batchnorm) if batchnorm else nn.Identity()
        self.act2 = activation(act, filters)
        self.gate = ScaleFreeGate(filters) if gated else None
        self.shrink = ScaleFreeShrink(filters, threshold) if sparse else None

    def zero_branch(self):
        """Start as the identity (the branch's last scale at zero, Goyal et al. 2017): without it, every block
        adds a unit-variance term, and a multiscale resnet begins with a noise estimate tens of times too loud."""
        last = self.bn2 if isinstance(self.bn2, (BiasFreeBatchNorm, nn.BatchNorm2d)) else self.conv2
        nn.init.zeros_(last.weight)

    def forward(self, h):
        r = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(h)))))
        if self.gate is not None:
            r = self.gate(h) * r
        h = self.act2(h + r)
        if self.shrink is not None:
            h = self.shrink(h)
        return h


class ResNetCore(nn.Module):
    """conv-act stem, `no_layers` residual blocks (two convs each), conv head.

    With `context`, the stem also takes a second image (a coarser level's estimate) through its own conv;
    the two are summed, which is a conv of their concatenation, without the copy and skipped when absent.
    """

    def __init__(self, in_channels, out_channels, filters=64, no_layers=8, kernel_size=3, batchnorm=True,
                 bias_free=True, act="relu", gated=False, sparse=False, threshold=0.5, context=False):
        super().__init__()
        self.stem = conv(in_channels, filters, kernel_size, bias=not bias_free)
        self.stem_context = conv(in_channels, filters, kernel_size) if context else None
        self.stem_act = activation(act, filters)
        self.blocks = nn.Sequential(*[
            ResidualBlock(filters, kernel_size, batchnorm, bias_free, act, gated, sparse, threshold)
            for _ in range(no_layers)])
        self.head = conv(filters, out_channels, kernel_size, bias=not bias_free)
        self.radius = (2 * no_layers + 2) * (kernel_size // 2)  # stem, two convs a block, head; gates are per pixel
        self.grid = 1

    def forward(self, x, context=None):
        h = self.stem(x)
        if context is not None:
            h = h + self.stem_context(context)
        return self.head(self.blocks(self.stem_act(h)))


def conv_stage(in_channels, out_channels, no_layers, kernel_size, batchnorm, bias_free, act):
    layers = []
    for i in range(no_layers):
        layers.append(conv(in_channels if i == 0 else out_channels, out_channels, kernel_size,
                           bias=not bias_free and not batchnorm))
        if batchnorm:
            layers.append(batch_norm(out_channels, bias_free, batchnorm))
        layers.append(activation(act, out_channels))
    return nn.Sequential(*layers)


class UNetCore(nn.Module):
    """BF-UNet: `downsamplings` max-pool steps (filters double each time), bilinear up-sampling to the skip's
    exact size and concatenation, `no_layers` conv-BN-act per stage. Max-pool (ceil mode) and bilinear
    up-sampling are homogeneous and take odd sizes without padding or cropping. `context` as in ResNetCore."""

    def __init__(self, in_channels, out_channels, filters=32, no_layers=2, kernel_size=3, batchnorm=True,
                 bias_free=True, act="relu", downsamplings=3, context=False):
        super().__init__()
        widths = [filters * 2 ** s for s in range(downsamplings + 1)]
        first = conv_stage(in_channels, filters, no_layers, kernel_size, batchnorm, bias_free, act)
        self.stem = first[0]  # the first conv, so that a context image can be added after it
        self.stem_context = conv(in_channels, filters, kernel_size) if context else None
        self.encoders = nn.ModuleList([nn.Sequential(*list(first)[1:])])
        for previous, width in zip(widths, widths[1:]):
            self.encoders.append(conv_stage(previous, width, no_layers, kernel_size, batchnorm, bias_free, act))
        self.decoders = nn.ModuleList(
            conv_stage(widths[s + 1] + widths[s], widths[s], no_layers, kernel_size, batchnorm, bias_free, act)
            for s in reversed(range(downsamplings)))
        self.head = conv(filters, out_channels, kernel_size, bias=not bias_free)
        # a bound on the context: every stage's convs at their stride, down the encoders and up the decoders,
        # each up-sampling's reach (two coarse pixels, which covers its max-pool's too), the head
        p, n, d = kernel_size // 2, no_layers, downsamplings
        self.radius = n * p * (2 ** (d + 1) - 1) + 2 * (2 ** d - 1) + n * p * (2 ** d - 1) + p
        self.grid = 2 ** d  # the max-pools' phase: tiles must start on it to pool the same pixels

    def forward(self, x, context=None):
        h = self.stem(x)
        if context is not None:
            h = h + self.stem_context(context)
        skips = []
        for i, encoder in enumerate(self.encoders):
            if i > 0:
                h = F.max_pool2d(h, 2, ceil_mode=True)
            h = encoder(h)
            skips.append(h)
        skips.pop()
        for decoder in self.decoders:
            skip = skips.pop()
            h = decoder(torch.cat([upsample(h, skip.shape[-2:]), skip], dim=1))
        return self.head(h)


# ---------------------------------------------------------------------------------------------------------
# the wrapper: normalization, multiscale, output stage, regularization

NORM_EPS = 1e-4  # added to the variance of mean/std normalization: one of the constants that break homogeneity


def pyramid_radius(core_radius, levels):
    """A bound on the context of an output pixel of a core run in a Laplacian pyramid (full-resolution pixels).

    Level l runs at stride 2^l: its Gaussian image reaches 2 (2^l - 1) pixels (a 5-tap blur per step), its band
    one coarse pixel more (the bilinear up-sampling), its core `core_radius` of its own pixels, and the estimate
    handed down from the coarser level one coarse pixel more again.
    """
    top = levels - 1
    radius = 2 * (2 ** top - 1) + core_radius * 2 ** top
    for level in reversed(range(top)):
        band = 2 * (2 ** (level + 1) - 1) + 2 ** (level + 1)
        radius = max(band, radius + 2 ** (level + 1)) + core_radius * 2 ** level
    return radius


class Denoiser(nn.Module):
    """x -> [normalize] -> core(s) in a Laplacian pyramid (or once) -> [denormalize] -> output stage.

    Multiscale (levels > 1): coarse to fine; the core of level i sees its band and the up-sampled estimate of
    the coarser levels (the coarsest sees its band only), predicts the band's noise, and the clean band plus
    that estimate is the next estimate. With `stop_grads` the estimate handed to a finer level is detached during
    training (in eval mode nothing is detached, so Jacobians stay exact). `shared_weights`: one core for all
    levels, otherwise one per level.
    """

    def __init__(self, make_core, channels=3, levels=1, shared_weights=False, stop_grads=False,
                 local_normalization=-1, output_multiplier=1.0, final_activation="linear", clip_values=False,
                 kernel_regularizer=None, kernel_initializer="glorot_normal", homogeneous_core=True):
        super().__init__()
        self.channels, self.levels = channels, levels
        self.shared_weights, self.stop_grads = shared_weights, stop_grads
        self.local_normalization = local_normalization
        self.output_multiplier, self.final_activation = float(output_multiplier), final_activation
        self.clip_values, self.kernel_regularizer = clip_values, kernel_regularizer
        self.level_norms = []  # a shared core's batch norms, with running statistics per level
        if levels == 1 or shared_weights:
            self.core = make_core(channels, channels, levels > 1)
            if levels > 1:
                self.level_norms = per_level_statistics(self.core, levels)
        else:
            self.cores = nn.ModuleList(make_core(channels, channels, level < levels - 1) for level in range(levels))
        init_conv_weights(self, kernel_initializer)
        for block in self.modules():
            if isinstance(block, ResidualBlock):
                block.zero_branch()
        self.bias_free = bool(homogeneous_core and local_normalization < 0 and not clip_values
                              and final_activation in ("linear", "relu"))
        # what tiled inference (bfcnn.denoise) needs to equal whole-image inference: the context of a pixel
        # and the sampling grid that tiles must start on
        core = self.core if levels == 1 or shared_weights else self.cores[0]
        self.grid = 2 ** (levels - 1) * core.grid
        self.receptive_radius = pyramid_radius(core.radius, levels)
        if local_normalization == 0:  # statistics of the whole image: no tile sees them
            self.receptive_radius = None
        elif local_normalization > 0:
            self.receptive_radius += local_normalization // 2  # the k x k window's reach

    def core_of(self, level):
        if self.levels == 1 or self.shared_weights:
            for norm in self.level_norms:
                norm.slot = level
            return self.core
        return self.cores[level]

    def normalize(self, x):
        k = self.local_normalization
        if k == 0:
            mean = x.mean(dim=(2, 3), keepdim=True)
            var = x.var(dim=(2, 3), unbiased=False, keepdim=True)
        else:
            padded = F.pad(x, ((k - 1) // 2, k // 2, (k - 1) // 2, k // 2), mode="replicate")
            mean = F.avg_pool2d(padded, k, stride=1)
            var = torch.clamp(F.avg_pool2d(padded * padded, k, stride=1) - mean * mean, min=0)
        std = torch.sqrt(var + NORM_EPS)
        return (x - mean) / std, mean, std

    def denoise(self, x):
        if self.levels == 1:
            return x - self.core(x)
        bands = laplacian_pyramid(x, self.levels)
        estimate = bands[-1] - self.core_of(self.levels - 1)(bands[-1])
        for level in reversed(range(self.levels - 1)):
            band = bands[level]
            context = upsample(estimate, band.shape[-2:])
            given = context.detach() if self.stop_grads and self.training else context
            estimate = band - self.core_of(level)(band, given) + context
        return estimate

    def forward(self, x):
        if self.local_normalization >= 0:
            x, mean, std = self.normalize(x)
            y = self.denoise(x) * std + mean
        else:
            y = self.denoise(x)
        m = self.output_multiplier
        if self.final_activation == "relu":
            y = torch.relu(m * y)
        elif self.final_activation == "tanh":  # the original's tanh, applied in its centred units (x - 0.5)
            y = 0.5 + torch.tanh(m * (y - 0.5))
        elif m != 1.0:
            y = m * y
        if self.clip_values:
            y = torch.clamp(y, 0.0, 1.0)
        return y

    def regularization_loss(self):
        """Keras-style kernel penalty (0 without a kernel_regularizer); the trainer weights it."""
        return kernel_penalty(self, self.kernel_regularizer)


# ---------------------------------------------------------------------------------------------------------
# factories and schemas

def resolve_channels(channels, input_shape):
    if input_shape is not None:
        last = input_shape[-1]
        if not isinstance(last, int):
            raise ConfigError(f"model.input_shape: the last entry gives the channels and must be an integer, got {last!r}")
        if channels is not None and channels != last:
            raise ConfigError(f"model.channels ({channels}) disagrees with model.input_shape[-1] ({last})")
        return last
    return 3 if channels is None else channels


def build_denoiser(kind, channels=None, input_shape=None, levels=1, filters=None, no_layers=None, kernel_size=3,
                   batchnorm=True, bias_free=True, stop_grads=False, shared_weights=False, activation="relu",
                   local_normalization=-1, output_multiplier=1.0, kernel_regularizer=None,
                   final_activation="linear", clip_values=False, kernel_initializer="glorot_normal",
                   min_value=0, max_value=255, threshold=0.5, downsamplings=3):
    """Build resnet / sparse_resnet / gatenet / unet from the original project's model keys."""
    channels = resolve_channels(channels, input_shape)
    if min_value >= max_value:
        raise ConfigError(f"model.min_value ({min_value}) must be below model.max_value ({max_value})")
    check_kernel_size(kernel_size)
    kernel_regularizer = None if kernel_regularizer in (None, "none") else kernel_regularizer
    if kind == "unet":
        filters, no_layers = filters or 32, no_layers or 2

        def make_core(cin, cout, context):
            return UNetCore(cin, cout, filters, no_layers, kernel_size, batchnorm, bias_free, activation,
                            downsamplings, context)
    else:
        filters, no_layers = filters or 64, no_layers or 8

        def make_core(cin, cout, context):
            return ResNetCore(cin, cout, filters, no_layers, kernel_size, batchnorm, bias_free, activation,
                              gated=kind == "gatenet", sparse=kind == "sparse_resnet", threshold=threshold,
                              context=context)
    model = Denoiser(make_core, channels, levels, shared_weights, stop_grads, local_normalization,
                     output_multiplier, final_activation, clip_values, kernel_regularizer, kernel_initializer,
                     homogeneous_core=bias_free and activation in HOMOGENEOUS_ACTIVATIONS)
    model.kind = kind
    return model


def factory(kind):
    def make(**params):
        return build_denoiser(kind, **params)
    make.__name__ = kind
    return make


# upper bounds: a size beyond them is a typo (or a machine that does not exist), said by the config check
# instead of a failed allocation of terabytes
MAX_CHANNELS, MAX_FILTERS, MAX_LAYERS, MAX_LEVELS = 256, 4096, 1000, 16
CHANNELS = {"type": "integer", "minimum": 1, "maximum": MAX_CHANNELS, "default": 3, "description": "image channels"}
KERNEL_SIZE = {"type": "integer", "minimum": 1, "maximum": 63, "not": {"multipleOf": 2}, "default": 3,
               "description": "must be odd (a 'same' convolution keeps the image's size)"}
BATCHNORM = {"enum": [True, False, "std", "rms"], "default": True,
             "description": "bias-free batch norm: true or std divides by the batch's standard deviation (the "
                            "paper's), rms by its root mean square; torch's standard one when bias_free is false"}


def denoiser_schema(defaults: dict, extra: dict | None = None, examples=()) -> dict:
    boolean = {"type": "boolean"}
    properties = {
        "channels": CHANNELS,
        "input_shape": {"type": "array", "minItems": 3, "maxItems": 3,
                        "items": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 1 << 20}, {"type": "null"},
                                            {"type": "string", "enum": ["?", "", "-1"]}]},
                        "description": "the original's [H, W, C] ('?' for any size): C gives the channels"},
        "levels": {"type": "integer", "minimum": 1, "maximum": MAX_LEVELS, "default": 1,
                   "description": "> 1: run coarse to fine in a Laplacian pyramid of this many levels"},
        "filters": {"type": "integer", "minimum": 1, "maximum": MAX_FILTERS, "default": defaults["filters"]},
        "no_layers": {"type": "integer", "minimum": 1, "maximum": MAX_LAYERS, "default": defaults["no_layers"],
                      "description": defaults["no_layers_means"]},
        "kernel_size": KERNEL_SIZE,
        "batchnorm": BATCHNORM,
        "bias_free": {**boolean, "default": True, "description": "false: biases and standard batch norm (ablation)"},
        "stop_grads": {**boolean, "default": False,
                       "description": "in training, detach the coarse estimate handed to finer levels"},
        "shared_weights": {**boolean, "default": False, "description": "one network for every pyramid level"},
        "activation": {"enum": list(ACTIVATIONS), "default": "relu",
                       "description": f"homogeneous: {', '.join(HOMOGENEOUS_ACTIVATIONS)}"},
        "local_normalization": {"type": "integer", "minimum": -(1 << 20), "maximum": 1 << 20, "default": -1,
                                "description": "k > 0: normalize by the k x k local mean and std, 0: by the "
                                               "image's, < 0: none (normalizing makes the model not bias-free)"},
        "output_multiplier": {"type": "number", "exclusiveMinimum": 0, "default": 1.0},
        "kernel_regularizer": {"enum": ["l1", "l2", "l1_l2", "none", None], "default": None,
                               "description": "Keras-style penalty (factor 0.01) from regularization_loss()"},
        "final_activation": {"enum": ["linear", "relu", "tanh"], "default": "linear",
                             "description": "tanh (in the original's centred units) makes the model not bias-free"},
        "clip_values": {**boolean, "default": False,
                        "description": "clip the output to [0, 1] (makes the model not bias-free)"},
        "kernel_initializer": {"enum": ["glorot_normal", "glorot_uniform", "he_normal", "he_uniform",
                                        "orthogonal", "torch_default"], "default": "glorot_normal"},
        "min_value": {"type": "number", "default": 0,
                      "description": "the original's pixel range; bfcnn feeds models [0, 1], so only checked"},
        "max_value": {"type": "number", "default": 255},
    }
    properties.update(extra or {})
    return {"type": "object", "additionalProperties": False, "properties": properties, "examples": list(examples)}


RESNET_DEFAULTS = {"filters": 64, "no_layers": 8, "no_layers_means": "residual blocks (two convs each) per level"}
SMALL = [{"filters": 8, "no_layers": 2, "levels": 2}]  # schema examples: small builds for quick checks
UNET_DEFAULTS = {"filters": 32, "no_layers": 2, "no_layers_means": "conv-BN-act layers per UNet stage"}


MAX_PARAMETERS = 10**9  # weights of 4 GB in float32, 16 GB with Adam's moments: beyond, a config is a typo


def size_check(factory):
    """A model's check: built on torch's meta device (shapes only, nothing allocated), it has at most
    MAX_PARAMETERS weights, so that sizes each within their maximum do not add up to terabytes."""
    @functools.lru_cache(maxsize=256)
    def parameters(params_json):
        with torch.device("meta"):
            return sum(p.numel() for p in factory(**json.loads(params_json)).parameters())

    def check(spec, config):
        params = {k: v for k, v in spec.items() if k != "type"}
        try:
            count = parameters(json.dumps(params, sort_keys=True))
        except Exception:  # a model that cannot be built on the meta device: its own build will say why
            return []
        if count > MAX_PARAMETERS:
            return [f"model: {count:,} parameters, more than the {MAX_PARAMETERS:,} a config may ask for "
                    "(lower filters, depth, no_layers, levels or downsamplings)"]
        return []
    return check


def dncnn_properties(depth, filters) -> dict:
    """The params of a plain conv stack (dncnn, dncnn_shuffle), with its default depth and filters."""
    return {
        "channels": CHANNELS,
        "depth": {"type": "integer", "minimum": 2, "maximum": MAX_LAYERS, "default": depth},
        "filters": {"type": "integer", "minimum": 1, "maximum": MAX_FILTERS, "default": filters},
        "kernel_size": KERNEL_SIZE,
        "batchnorm": BATCHNORM,
        "bias_free": {"type": "boolean", "default": True},
    }


@hookimpl
def register_models(register):
    register("dncnn", DnCNN, {
        "type": "object", "additionalProperties": False,
        "properties": dncnn_properties(depth=20, filters=64),
        "examples": [{"channels": 3, "depth": 6, "filters": 16}],
    }, "BF-DnCNN of the paper (20 layers, 64 channels, 3x3 by default)", check=size_check(DnCNN))
    register("dncnn_shuffle", ShuffleDnCNN, {
        "type": "object", "additionalProperties": False,
        "properties": {
            **dncnn_properties(depth=12, filters=96),
            "factor": {"type": "integer", "minimum": 1, "maximum": 8, "default": 2,
                       "description": "pixel-unshuffle factor: the body runs at 1/factor resolution"},
        },
        "examples": [{"channels": 3, "depth": 4, "filters": 16}],
    }, "BF-DnCNN at half resolution (pixel-unshuffle in, pixel-shuffle out, as FFDNet)",
        check=size_check(ShuffleDnCNN))
    register("drunet", DRUNet, {
        "type": "object", "additionalProperties": False,
        "properties": {
            "channels": CHANNELS,
            "filters": {"type": "integer", "minimum": 1, "maximum": MAX_FILTERS, "default": 32,
                        "description": "filters at full resolution, doubled at each scale"},
            "blocks": {"type": "integer", "minimum": 1, "maximum": MAX_LAYERS, "default": 2,
                       "description": "residual blocks per scale"},
            "scales": {"type": "integer", "minimum": 1, "maximum": 6, "default": 4},
            "bias_free": {"type": "boolean", "default": True},
        },
        "examples": [{"channels": 3, "filters": 8, "blocks": 1, "scales": 3}],
    }, "small bias-free DRUNet: a UNet of residual blocks, stride-2 convs down, transposed convs up",
        check=size_check(DRUNet))
    register("resnet", factory("resnet"), denoiser_schema(RESNET_DEFAULTS, examples=SMALL),
             "bias-free residual denoiser; levels > 1: coarse to fine in a Laplacian pyramid",
             check=size_check(factory("resnet")))
    register("sparse_resnet", factory("sparse_resnet"), denoiser_schema(RESNET_DEFAULTS, {
        "threshold": {"type": "number", "minimum": 0, "default": 0.5,
                      "description": "initial soft threshold, relative to each pixel's mean |feature|"}}, SMALL),
             "resnet with a scale-free soft threshold on its features (stays homogeneous)",
             check=size_check(factory("sparse_resnet")))
    register("gatenet", factory("gatenet"), denoiser_schema(RESNET_DEFAULTS, examples=SMALL),
             "resnet with per-pixel gates on its blocks computed from feature directions (stays homogeneous)",
             check=size_check(factory("gatenet")))
    register("unet", factory("unet"), denoiser_schema(UNET_DEFAULTS, {
        "downsamplings": {"type": "integer", "minimum": 0, "maximum": MAX_LEVELS, "default": 3,
                          "description": "max-pool steps inside the UNet (filters double at each)"}},
        [{"filters": 8, "no_layers": 1, "downsamplings": 2, "levels": 2}]),
             "BF-UNet of the paper: bias-free encoder-decoder with skip connections", check=size_check(factory("unet")))
