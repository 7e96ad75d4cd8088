"""Built-in losses: `loss(prediction, target) -> scalar tensor`."""

from __future__ import annotations

import torch

from bfcnn import hookimpl


def mse():
    return lambda prediction, target: torch.mean((prediction.float() - target.float()) ** 2)


def mae():
    return lambda prediction, target: torch.mean(torch.abs(prediction.float() - target.float()))


class HingedMAE:
    """The seed's loss: mean of |error| above a per-pixel hinge (pixel units of value_range), times mae_multiplier.

    `regularization` weights the model's own regularization term, which the trainer adds when the model has one.
    """

    def __init__(self, hinge=0.0, mae_multiplier=1.0, regularization=0.0, value_range=255.0):
        self.hinge = hinge / value_range
        self.mae_multiplier, self.regularization = mae_multiplier, regularization

    def __call__(self, prediction, target):
        error = torch.abs(prediction.float() - target.float())
        return self.mae_multiplier * torch.mean(torch.clamp(error - self.hinge, min=0))


NO_PARAMS = {"type": "object", "additionalProperties": False, "properties": {}}


@hookimpl
def register_losses(register):
    register("mse", mse, NO_PARAMS, "mean squared error")
    register("mae", mae, NO_PARAMS, "mean absolute error")
    register("hinged_mae", HingedMAE, {
        "type": "object", "additionalProperties": False,
        "properties": {
            "hinge": {"type": "number", "minimum": 0, "default": 0},
            "mae_multiplier": {"type": "number", "minimum": 0, "default": 1},
            "regularization": {"type": "number", "minimum": 0, "default": 0},
            "value_range": {"type": "number", "exclusiveMinimum": 0, "default": 255},
        },
    }, "the seed's hinged MAE (hinge in pixel units) with a regularization weight")
