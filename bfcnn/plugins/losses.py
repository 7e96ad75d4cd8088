"""Built-in losses: `loss(prediction, target) -> scalar tensor`.

A loss may carry a `regularization` weight: when it is > 0 and the model has `regularization_loss()`, the
trainer adds `regularization * model.regularization_loss()` (the seed's regularization term).
"""

from __future__ import annotations

import torch

from bfcnn.registry import hookimpl


class Loss:
    def __init__(self, regularization=0.0):
        self.regularization = regularization


class MSE(Loss):
    def __call__(self, prediction, target):
        return torch.mean((prediction.float() - target.float()) ** 2)


class MAE(Loss):
    def __call__(self, prediction, target):
        return torch.mean(torch.abs(prediction.float() - target.float()))


class HingedMAE(Loss):
    """The seed's loss: mean of |error| above a per-pixel hinge (pixel units of value_range), times mae_multiplier.

    `regularization` weights the model's own regularization term, which the trainer adds when the model has one.
    """

    def __init__(self, hinge=0.0, mae_multiplier=1.0, regularization=0.0, value_range=255.0):
        super().__init__(regularization)
        self.hinge = hinge / value_range
        self.mae_multiplier = mae_multiplier

    def __call__(self, prediction, target):
        error = torch.abs(prediction.float() - target.float())
        return self.mae_multiplier * torch.mean(torch.clamp(error - self.hinge, min=0))


WIN_SIZE = {"type": "integer", "minimum": 3, "maximum": 255, "not": {"multipleOf": 2}, "default": 11,
            "description": "must be odd: the Gaussian window's size (crops must be at least this big)"}


def check_window(spec, config):
    """An SSIM loss needs crops at least as large as its window: said when the config is checked, not at the
    first training step."""
    dataset = config.get("dataset")
    shape = dataset.get("input_shape") if isinstance(dataset, dict) else None
    sides = [v for v in (shape or [])[:2] if isinstance(v, int)]
    window = spec.get("win_size", WIN_SIZE["default"])
    if sides and min(sides) < window:
        return [f"loss.win_size: the ssim window ({window}) is larger than the crops of dataset.input_shape "
                f"({' x '.join(map(str, shape[:2]))}); use larger crops or a smaller odd window"]
    return []


class SSIMLoss(Loss):
    """1 - SSIM through pytorch-msssim (maintained, differentiable; 11x11 Gaussian window by default)."""

    def __init__(self, win_size=WIN_SIZE["default"], regularization=0.0):
        from pytorch_msssim import ssim

        super().__init__(regularization)
        self.ssim, self.win_size = ssim, win_size

    def __call__(self, prediction, target):
        if min(target.shape[-2:]) < self.win_size:
            raise ValueError(f"ssim loss: images of {tuple(target.shape[-2:])} are smaller than its window "
                             f"({self.win_size}); use larger crops or a smaller loss.win_size")
        # no clamping: the gradient must reach predictions outside [0, 1] too
        return 1 - self.ssim(prediction.float(), target.float(), data_range=1.0, win_size=self.win_size)


REGULARIZATION = {"type": "number", "minimum": 0, "default": 0,
                  "description": "weight of the model's regularization_loss(), when it has one"}


def params(**extra):
    return {"type": "object", "additionalProperties": False,
            "properties": {**extra, "regularization": REGULARIZATION}}


@hookimpl
def register_losses(register):
    register("mse", MSE, params(), "mean squared error")
    register("mae", MAE, params(), "mean absolute error")
    register("hinged_mae", HingedMAE, params(
        hinge={"type": "number", "minimum": 0, "default": 0, "description": "error allowed per pixel, in pixel units"},
        mae_multiplier={"type": "number", "minimum": 0, "default": 1},
        value_range={"type": "number", "exclusiveMinimum": 0, "default": 255},
    ), "the seed's hinged MAE (hinge in pixel units) with a regularization weight")
    register("ssim", SSIMLoss, params(win_size=WIN_SIZE), "1 - SSIM (pytorch-msssim)", check=check_window)
