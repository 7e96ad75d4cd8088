"""Built-in corruptions. A noise is `noise(x, generator) -> y` on float N x C x H x W tensors in [0, 1].

Everything is batched and runs on the tensor's own device. Every random draw comes from the `generator`
given (the same generator state gives the same output); a generator on another device than the tensor
works too (the draws are made on the generator's device and moved), and `None` uses torch's global RNG.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from bfcnn.registry import build, hookimpl
from bfcnn.errors import ConfigError

NUMBER_OR_LIST = {"oneOf": [{"type": "number", "minimum": 0},
                            {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 1}]}
RANGE = {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 2, "maxItems": 2}


def draw_device(generator, device):
    return generator.device if generator is not None else torch.device(device)


def randn(shape, generator, device, dtype):
    """Standard normal draws from `generator`, on the generator's device, moved to `device`."""
    return torch.randn(shape, generator=generator, device=draw_device(generator, device), dtype=dtype).to(device)


@functools.lru_cache(maxsize=256)
def table(values: tuple, device: torch.device) -> torch.Tensor:
    """A small constant tensor, made once per device (a copy from the host at every step would wait for it)."""
    return torch.tensor(values, dtype=torch.float32, device=device)


def per_image(values, n, generator, device):
    """One value per image (float32 tensor of shape (n,)): a random pick from a list, or a number for all."""
    values = tuple(float(v) for v in (values if isinstance(values, (list, tuple)) else [values]))
    return table(values, torch.device(device))[per_image_pick(len(values), n, generator, device)]


def uniform(low, high, n, generator, device):
    """n values drawn uniformly from [low, high] (float32 tensor of shape (n,))."""
    u = torch.rand(n, generator=generator, device=draw_device(generator, device)).to(device)
    return low + (high - low) * u


def draw_sigmas(sigma, sigma_range, n, generator, device):
    """n sigmas: uniform in sigma_range when given, else per_image from `sigma` (a list or a number)."""
    if sigma_range is not None:
        return uniform(*sigma_range, n, generator, device)
    return per_image(sigma, n, generator, device)


def check_range(name, value_range):
    if value_range is not None and value_range[0] > value_range[1]:
        raise ConfigError(f"noise.{name}: [low, high] needs low <= high, got {list(value_range)}")


def per_image_pick(count, n, generator, device, weights=None):
    """For each of n images, the index of one of `count` options (uniform, or by `weights`)."""
    where = draw_device(generator, device)
    if weights is None:
        return torch.randint(count, (n,), generator=generator, device=where).to(device)
    return torch.multinomial(table(tuple(weights), where), n, replacement=True, generator=generator).to(device)


def apply_per_group(x, pick, count, fn, whole_batch=None):
    """out[i] = fn(k, ...)[i] for the images that picked option k. On the CPU each option runs on its own images
    only; on an accelerator every option runs on the whole batch and torch.where picks, which costs more
    arithmetic but never waits for the device (selecting a subset needs its size on the host)."""
    if count == 1:
        return fn(0, x)
    if whole_batch is None:
        whole_batch = x.device.type != "cpu"
    if whole_batch:
        out = fn(0, x)
        for k in range(1, count):
            out = torch.where((pick == k).view(-1, *([1] * (x.dim() - 1))), fn(k, x), out)
        return out
    out = torch.empty_like(x)
    for k in range(count):
        index = torch.nonzero(pick == k).flatten()
        if index.numel():
            out[index] = fn(k, x[index])
    return out


class AdditiveGaussian:
    """x + sigma * z, z ~ N(0, 1): sigma in pixel units of `value_range`, drawn per image."""

    def __init__(self, sigma=25, sigma_range=None, value_range=255.0, per_channel=True, clip=False, quantize=False):
        check_range("sigma_range", sigma_range)
        self.sigma, self.sigma_range, self.value_range = sigma, sigma_range, float(value_range)
        self.per_channel, self.clip, self.quantize = per_channel, clip, quantize

    def sigmas(self, n, generator, device):
        """Per-image sigma on the [0, 1] scale, shape (n,)."""
        return draw_sigmas(self.sigma, self.sigma_range, n, generator, device) / self.value_range

    def __call__(self, x, generator=None):
        n, c, h, w = x.shape
        sigma = self.sigmas(n, generator, x.device).to(x.dtype).view(n, 1, 1, 1)
        shape = (n, c, h, w) if self.per_channel else (n, 1, h, w)
        y = x + sigma * randn(shape, generator, x.device, x.dtype)
        if self.quantize:  # to whole pixel values of value_range
            y = torch.round(y * self.value_range) / self.value_range
        return y.clamp(0, 1) if self.clip else y


class MultiplicativeGaussian:
    """x * (1 + sigma * z): a gain field of mean 1 and std sigma, optionally blurred (then rescaled to std sigma)."""

    def __init__(self, sigma=0.1, sigma_range=None, blur=False, blur_sigma=1.0, per_channel=True, clip=False):
        check_range("sigma_range", sigma_range)
        self.sigma, self.sigma_range, self.blur, self.blur_sigma = sigma, sigma_range, blur, float(blur_sigma)
        self.per_channel, self.clip = per_channel, clip

    def __call__(self, x, generator=None):
        n, c, h, w = x.shape
        sigma = draw_sigmas(self.sigma, self.sigma_range, n, generator, x.device)
        field = randn((n, c if self.per_channel else 1, h, w), generator, x.device, x.dtype)
        if self.blur:
            field = gaussian_blur(field, self.blur_sigma)
            field = field / field.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
        y = x * (1 + sigma.to(x.dtype).view(n, 1, 1, 1) * field)
        return y.clamp(0, 1) if self.clip else y


def gaussian_blur(x, sigma):
    """Separable Gaussian blur of every channel (reflect borders; replicate where the image is too small)."""
    radius = max(1, int(3 * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-t**2 / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    mode = "reflect" if radius < min(x.shape[2], x.shape[3]) else "replicate"
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode=mode), kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode=mode), kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


class Subsample:
    """Down by `factor` (block mean, or plain decimation with antialias false) and back up to full size."""

    def __init__(self, factor=2, mode="nearest", antialias=True):
        self.factors = list(factor) if isinstance(factor, (list, tuple)) else [factor]
        self.mode, self.antialias = mode, antialias

    def resample(self, x, factor):
        h, w = x.shape[2], x.shape[3]
        small = F.avg_pool2d(x, factor, ceil_mode=True) if self.antialias else x[..., ::factor, ::factor]
        size = (small.shape[2] * factor, small.shape[3] * factor)
        if self.mode == "nearest":
            big = F.interpolate(small, size=size, mode="nearest")
        else:
            big = F.interpolate(small, size=size, mode="bilinear", align_corners=False)
        return big[..., :h, :w].contiguous()

    def __call__(self, x, generator=None):
        pick = per_image_pick(len(self.factors), x.shape[0], generator, x.device)
        return apply_per_group(x, pick, len(self.factors), lambda k, part: self.resample(part, self.factors[k]))


class Choice:
    """A random pick of one noise per image (uniform, or by `probabilities`); its noises come from the
    registries it was built from."""

    def __init__(self, choices, probabilities=None, registries=None):
        self.noises = [build("noise", spec, registries) for spec in choices]
        if probabilities is not None and len(probabilities) != len(self.noises):
            raise ConfigError(f"noise.probabilities: {len(probabilities)} values for {len(self.noises)} choices")
        if probabilities is not None and not math.fsum(probabilities) > 0:
            raise ConfigError("noise.probabilities: at least one must be above 0")
        weights = probabilities if probabilities else [1.0] * len(self.noises)
        self.weights = tuple(float(w) / math.fsum(weights) for w in weights)

    def __call__(self, x, generator=None):
        pick = per_image_pick(len(self.noises), x.shape[0], generator, x.device, self.weights)
        return apply_per_group(x, pick, len(self.noises), lambda k, part: self.noises[k](part, generator))


class Sequence:
    """Several noises applied in order."""

    def __init__(self, steps, registries=None):
        self.noises = [build("noise", spec, registries) for spec in steps]

    def __call__(self, x, generator=None):
        for noise in self.noises:
            x = noise(x, generator)
        return x


NOISE_SPEC = {"$ref": "#/$defs/noise"}


@hookimpl
def register_noises(register):
    register("additive_gaussian", AdditiveGaussian, {
        "type": "object", "additionalProperties": False,
        "properties": {
            "sigma": {**NUMBER_OR_LIST, "default": 25,
                      "description": "std in pixel units of value_range; a list is a random pick per image"},
            "sigma_range": {**RANGE, "description": "[low, high]: sigma drawn uniformly per image (wins over sigma)"},
            "value_range": {"type": "number", "exclusiveMinimum": 0, "default": 255,
                            "description": "the pixel scale sigma is given in (the seed's max_value - min_value)"},
            "per_channel": {"type": "boolean", "default": True,
                            "description": "independent noise per channel; false: one noise shared by all"},
            "clip": {"type": "boolean", "default": False, "description": "clamp the result to [0, 1]"},
            "quantize": {"type": "boolean", "default": False,
                         "description": "round the result to whole pixel values of value_range"},
        },
    }, "zero-mean Gaussian noise, sigma per image from a list or a range")
    register("multiplicative_gaussian", MultiplicativeGaussian, {
        "type": "object", "additionalProperties": False,
        "properties": {
            "sigma": {**NUMBER_OR_LIST, "default": 0.1,
                      "description": "std of the gain field (mean 1); a list is a random pick per image"},
            "sigma_range": {**RANGE, "description": "[low, high]: sigma drawn uniformly per image (wins over sigma)"},
            "blur": {"type": "boolean", "default": False,
                     "description": "blur the gain field (the seed's random_blur), then rescale it to std sigma"},
            "blur_sigma": {"type": "number", "exclusiveMinimum": 0, "default": 1.0,
                           "description": "std in pixels of the Gaussian blur kernel"},
            "per_channel": {"type": "boolean", "default": True,
                            "description": "an independent field per channel; false: one field for all"},
            "clip": {"type": "boolean", "default": False, "description": "clamp the result to [0, 1]"},
        },
    }, "mean-1 Gaussian gain field, optionally blurred")
    register("subsample", Subsample, {
        "type": "object", "additionalProperties": False,
        "properties": {
            "factor": {"oneOf": [{"enum": [2, 4, 8]}, {"type": "array", "items": {"enum": [2, 4, 8]}, "minItems": 1}],
                       "default": 2, "description": "decimation factor; a list is a random pick per image"},
            "mode": {"enum": ["nearest", "bilinear"], "default": "nearest",
                     "description": "how the small image is brought back to full size"},
            "antialias": {"type": "boolean", "default": True,
                          "description": "average each block before decimating; false: keep every factor-th pixel"},
        },
    }, "decimate by 2, 4 or 8 and bring back to full size")
    register("choice", Choice, {
        "type": "object", "additionalProperties": False, "required": ["choices"],
        "examples": [{"choices": [{"type": "additive_gaussian", "sigma": 25}, {"type": "subsample", "factor": 2}],
                      "probabilities": [3, 1]}],
        "properties": {
            "choices": {"type": "array", "items": NOISE_SPEC, "minItems": 1},
            "probabilities": {"type": "array", "items": {"type": "number", "minimum": 0},
                              "description": "relative weights of the choices (default: equal)"},
        },
    }, "a random pick of one noise per image")
    register("sequence", Sequence, {
        "type": "object", "additionalProperties": False, "required": ["steps"],
        "examples": [{"steps": [{"type": "subsample", "factor": 2}, {"type": "additive_gaussian", "sigma": 10}]}],
        "properties": {"steps": {"type": "array", "items": NOISE_SPEC, "minItems": 1}},
    }, "several noises applied in order")
