"""Built-in optimizers: the factory's result is `optimizer(parameters) -> torch.optim.Optimizer`."""

from __future__ import annotations

import functools

import torch

from bfcnn.registry import hookimpl


def optimizer(cls, learning_rate=1e-3, **kwargs):
    return functools.partial(cls, lr=learning_rate, **kwargs)


LR = {"type": "number", "exclusiveMinimum": 0, "default": 1e-3}
WEIGHT_DECAY = {"type": "number", "minimum": 0, "default": 0}
BETAS = {"type": "array", "items": {"type": "number", "minimum": 0, "exclusiveMaximum": 1}, "minItems": 2, "maxItems": 2}


def schema(**extra):
    return {"type": "object", "additionalProperties": False,
            "properties": {"learning_rate": LR, "weight_decay": WEIGHT_DECAY, **extra}}


@hookimpl
def register_optimizers(register):
    register("adam", functools.partial(optimizer, torch.optim.Adam), schema(betas=BETAS), "Adam")
    register("adamw", functools.partial(optimizer, torch.optim.AdamW), schema(betas=BETAS), "AdamW (decoupled weight decay)")
    register("sgd", functools.partial(optimizer, torch.optim.SGD),
             schema(momentum={"type": "number", "minimum": 0, "default": 0.9}, nesterov={"type": "boolean"}),
             "SGD with momentum")
    register("rmsprop", functools.partial(optimizer, torch.optim.RMSprop),
             schema(momentum={"type": "number", "minimum": 0, "default": 0}, alpha={"type": "number", "minimum": 0}),
             "RMSprop")
