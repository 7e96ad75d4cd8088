"""Built-in denoisers. A model is a torch.nn.Module from N x C x H x W to the same shape, with `bias_free`."""

from __future__ import annotations

import torch
from torch import nn

from bfcnn import hookimpl


class BiasFreeBatchNorm(nn.Module):
    """Batch norm without mean subtraction or shift: divides by the batch's std, so it stays homogeneous."""

    def __init__(self, channels, momentum=0.1, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.momentum, self.eps = momentum, eps

    def forward(self, x):
        if self.training:
            var = x.float().pow(2).mean(dim=(0, 2, 3))
            with torch.no_grad():
                self.running_var.lerp_(var, self.momentum)
        else:
            var = self.running_var
        scale = self.weight / torch.sqrt(var + self.eps)
        return x * scale.view(1, -1, 1, 1).to(x.dtype)


class DnCNN(nn.Module):
    """The paper's BF-DnCNN: conv-relu, (depth-2) x conv-BN-relu, conv; predicts the noise and subtracts it."""

    def __init__(self, channels=3, depth=20, filters=64, kernel_size=3, batchnorm=True, bias_free=True):
        super().__init__()
        pad = kernel_size // 2
        layers = [nn.Conv2d(channels, filters, kernel_size, padding=pad, bias=not bias_free), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers.append(nn.Conv2d(filters, filters, kernel_size, padding=pad, bias=False if batchnorm else not bias_free))
            if batchnorm:
                layers.append(BiasFreeBatchNorm(filters) if bias_free else nn.BatchNorm2d(filters))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Conv2d(filters, channels, kernel_size, padding=pad, bias=not bias_free))
        self.body = nn.Sequential(*layers)
        self.bias_free = bias_free

    def forward(self, x):
        return x - self.body(x)


@hookimpl
def register_models(register):
    register("dncnn", DnCNN, {
        "type": "object", "additionalProperties": False,
        "properties": {
            "channels": {"type": "integer", "minimum": 1, "default": 3},
            "depth": {"type": "integer", "minimum": 2, "default": 20},
            "filters": {"type": "integer", "minimum": 1, "default": 64},
            "kernel_size": {"type": "integer", "minimum": 1, "default": 3},
            "batchnorm": {"type": "boolean", "default": True},
            "bias_free": {"type": "boolean", "default": True},
        },
    }, "BF-DnCNN of the paper (20 layers, 64 channels, 3x3 by default)")
