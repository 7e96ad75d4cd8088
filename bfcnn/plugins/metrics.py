"""Built-in metrics: `metric(prediction, target) -> per-image tensor` of shape (N,), images in [0, 1]."""

from __future__ import annotations

import torch

from bfcnn.registry import hookimpl


def psnr(data_range=1.0, clamp=True):
    def metric(prediction, target):
        if clamp:
            prediction = prediction.clamp(0, 1)
        mse = torch.mean((prediction.double() - target.double()) ** 2, dim=tuple(range(1, target.dim())))
        return (10 * torch.log10(data_range**2 / mse.clamp_min(1e-20))).float()
    return metric


def ssim(clamp=True):
    # pytorch-msssim: a maintained, differentiable SSIM with the standard 11x11 Gaussian window
    from pytorch_msssim import ssim as ssim_fn

    def metric(prediction, target):
        if clamp:
            prediction = prediction.clamp(0, 1)
        return ssim_fn(prediction.float(), target.float(), data_range=1.0, size_average=False)
    return metric


@hookimpl
def register_metrics(register):
    register("psnr", psnr, {"type": "object", "additionalProperties": False,
                            "properties": {"data_range": {"type": "number", "exclusiveMinimum": 0},
                                           "clamp": {"type": "boolean"}}},
             "peak signal-to-noise ratio in dB (prediction clamped to [0, 1])")
    register("ssim", ssim, {"type": "object", "additionalProperties": False,
                            "properties": {"clamp": {"type": "boolean"}}},
             "structural similarity (pytorch-msssim, 11x11 Gaussian window)")
