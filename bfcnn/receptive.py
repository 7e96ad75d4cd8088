"""How much context one output pixel of a model needs: what exact tiling (bfcnn.denoise, bfcnn.runtime through
the exporters' reports) gives each tile. torch is imported only once a model is at hand."""

from __future__ import annotations

import math

FALLBACK_MARGIN = 64  # context for models whose receptive field cannot be computed


def receptive_radius(module):
    """Pixels of context one output pixel depends on, for a plain stack of stride-1 convolutions; else None.

    Only models built of Sequential / ModuleList containers, stride-1 convolutions and pointwise layers (torch's
    own, and any layer with a class attribute `pointwise = True`, e.g. bfcnn.layers.BiasFreeBatchNorm) are
    measured (a custom sub-module's forward could resample); a model may state its radius itself with an
    integer `receptive_radius` attribute (e.g. a multiscale net). None: tiles get FALLBACK_MARGIN and blending.
    """
    from torch import nn

    stated = getattr(module, "receptive_radius", None)
    if isinstance(stated, int):
        return stated
    pointwise = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.Identity, nn.BatchNorm2d, nn.Tanh, nn.Sigmoid, nn.GELU,
                 nn.SiLU, nn.Dropout)
    radius = 0
    for layer in module.modules():
        if layer is module or isinstance(layer, (nn.Sequential, nn.ModuleList)):
            continue
        if isinstance(layer, nn.Conv2d) and type(layer) is nn.Conv2d:
            if tuple(layer.stride) != (1, 1) or layer.padding_mode != "zeros":
                return None
            radius += max(-(-d * (k - 1) // 2) for k, d in zip(layer.kernel_size, layer.dilation))
        elif isinstance(layer, pointwise) or getattr(layer, "pointwise", False) is True:
            continue
        else:
            return None
    return radius


def pad_to(module) -> int:
    """The multiple a model zero-pads its sides to inside and crops back (1 for most): its grid where it says so
    with `pads_to_grid = True` and has `core(x)`, the model on sides that are multiples of it. Padding the input
    outside first gives the same result, so a traced or fixed-size copy of the core serves every size."""
    if getattr(module, "pads_to_grid", False) is True and callable(getattr(module, "core", None)):
        return int(getattr(module, "grid", 1) or 1)
    return 1


def tiling_context(module) -> dict:
    """How to tile `module` exactly: its receptive radius as `margin` (FALLBACK_MARGIN, and `exact` false, where
    it cannot be computed), as `align`, what tile windows start on a multiple of so that they see the whole
    image's pixel grid (a pyramid's or a pooling's grid, a size multiple the model needs), and `pad_to` (above).
    Exporters write this into their reports, where the torch-free runtime reads it."""
    radius = receptive_radius(module)
    align = math.lcm(int(getattr(module, "size_multiple", 1) or 1), int(getattr(module, "grid", 1) or 1))
    return {"margin": FALLBACK_MARGIN if radius is None else radius, "align": align, "exact": radius is not None,
            "pad_to": pad_to(module)}
