"""Built-in corruptions. A noise is `noise(x, generator) -> y` on float N x C x H x W tensors in [0, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bfcnn import build, hookimpl

NUMBER_OR_LIST = {"oneOf": [{"type": "number", "minimum": 0},
                            {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 1}]}
RANGE = {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 2, "maxItems": 2}


def per_image(values, n, generator, device):
    """One value per image: a random pick from a list, or a number for all."""
    values = torch.as_tensor(values if isinstance(values, (list, tuple)) else [values], dtype=torch.float32)
    index = torch.randint(len(values), (n,), generator=generator, device=device)
    return values.to(device)[index]


def uniform(low, high, n, generator, device):
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


class AdditiveGaussian:
    def __init__(self, sigma=25, sigma_range=None, value_range=255.0, per_channel=True, clip=False, quantize=False):
        self.sigma, self.sigma_range, self.value_range = sigma, sigma_range, float(value_range)
        self.per_channel, self.clip, self.quantize = per_channel, clip, quantize

    def sigmas(self, n, generator, device):
        if self.sigma_range is not None:
            return uniform(*self.sigma_range, n, generator, device) / self.value_range
        return per_image(self.sigma, n, generator, device) / self.value_range

    def __call__(self, x, generator):
        n, c, h, w = x.shape
        sigma = self.sigmas(n, generator, x.device).to(x.dtype).view(n, 1, 1, 1)
        shape = (n, c, h, w) if self.per_channel else (n, 1, h, w)
        y = x + sigma * torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
        if self.quantize:
            y = torch.round(y * self.value_range) / self.value_range
        return y.clamp(0, 1) if self.clip else y


class Choice:
    """A random pick of one noise per image."""

    def __init__(self, choices, probabilities=None):
        self.noises = [build("noise", spec) for spec in choices]
        weights = torch.tensor(probabilities if probabilities else [1.0] * len(self.noises), dtype=torch.float32)
        if len(weights) != len(self.noises):
            from bfcnn.errors import ConfigError
            raise ConfigError(f"noise.probabilities: {len(weights)} values for {len(self.noises)} choices")
        self.weights = weights / weights.sum()

    def __call__(self, x, generator):
        pick = torch.multinomial(self.weights.to(x.device), x.shape[0], replacement=True, generator=generator)
        out = torch.empty_like(x)
        for i, noise in enumerate(self.noises):  # every noise sees the whole batch: reproducible draws
            out = torch.where((pick == i).view(-1, 1, 1, 1), noise(x, generator), out)
        return out


class Sequence:
    def __init__(self, steps):
        self.noises = [build("noise", spec) for spec in steps]

    def __call__(self, x, generator):
        for noise in self.noises:
            x = noise(x, generator)
        return x


class MultiplicativeGaussian:
    def __init__(self, sigma=0.1, sigma_range=None, blur=False, blur_sigma=1.0, clip=False):
        self.sigma, self.sigma_range, self.blur, self.blur_sigma, self.clip = sigma, sigma_range, blur, blur_sigma, clip

    def __call__(self, x, generator):
        n, c, h, w = x.shape
        if self.sigma_range is not None:
            sigma = uniform(*self.sigma_range, n, generator, x.device)
        else:
            sigma = per_image(self.sigma, n, generator, x.device)
        field = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if self.blur:
            field = gaussian_blur(field, self.blur_sigma)
            field = field / field.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
        y = x * (1 + sigma.to(x.dtype).view(n, 1, 1, 1) * field)
        return y.clamp(0, 1) if self.clip else y


def gaussian_blur(x, sigma):
    radius = max(1, int(3 * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-t**2 / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


class Subsample:
    def __init__(self, factor=2, mode="nearest"):
        self.factors = factor if isinstance(factor, list) else [factor]
        self.mode = mode

    def __call__(self, x, generator):
        n = x.shape[0]
        pick = torch.randint(len(self.factors), (n,), generator=generator, device=x.device)
        out = torch.empty_like(x)
        for i, factor in enumerate(self.factors):
            small = F.avg_pool2d(x, factor, ceil_mode=True)
            kwargs = {} if self.mode == "nearest" else {"align_corners": False}
            big = F.interpolate(small, scale_factor=factor, mode=self.mode, **kwargs)[..., : x.shape[2], : x.shape[3]]
            out = torch.where((pick == i).view(-1, 1, 1, 1), big, out)
        return out


NOISE_SPEC = {"$ref": "#/$defs/noise"}


@hookimpl
def register_noises(register):
    register("additive_gaussian", AdditiveGaussian, {
        "type": "object", "additionalProperties": False,
        "properties": {
            "sigma": {**NUMBER_OR_LIST, "description": "std in pixel units of value_range; a list is a random pick per image"},
            "sigma_range": {**RANGE, "description": "[low, high]: sigma drawn uniformly per image"},
            "value_range": {"type": "number", "exclusiveMinimum": 0, "default": 255},
            "per_channel": {"type": "boolean", "default": True},
            "clip": {"type": "boolean", "default": False},
            "quantize": {"type": "boolean", "default": False},
        },
    }, "zero-mean Gaussian noise, sigma per image from a list or a range")
    register("multiplicative_gaussian", MultiplicativeGaussian, {
        "type": "object", "additionalProperties": False,
        "properties": {
            "sigma": NUMBER_OR_LIST, "sigma_range": RANGE,
            "blur": {"type": "boolean", "default": False},
            "blur_sigma": {"type": "number", "exclusiveMinimum": 0, "default": 1.0},
            "clip": {"type": "boolean", "default": False},
        },
    }, "mean-1 Gaussian gain field, optionally blurred")
    register("subsample", Subsample, {
        "type": "object", "additionalProperties": False,
        "properties": {
            "factor": {"oneOf": [{"enum": [2, 4, 8]}, {"type": "array", "items": {"enum": [2, 4, 8]}, "minItems": 1}]},
            "mode": {"enum": ["nearest", "bilinear"], "default": "nearest"},
        },
    }, "decimate by 2, 4 or 8 and bring back to full size")
    register("choice", Choice, {
        "type": "object", "additionalProperties": False, "required": ["choices"],
        "properties": {
            "choices": {"type": "array", "items": NOISE_SPEC, "minItems": 1},
            "probabilities": {"type": "array", "items": {"type": "number", "minimum": 0}},
        },
    }, "a random pick of one noise per image")
    register("sequence", Sequence, {
        "type": "object", "additionalProperties": False, "required": ["steps"],
        "properties": {"steps": {"type": "array", "items": NOISE_SPEC, "minItems": 1}},
    }, "several noises applied in order")
