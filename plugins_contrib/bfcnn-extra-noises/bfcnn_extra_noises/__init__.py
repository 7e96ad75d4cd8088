"""Example bfcnn plugin: Poisson-Gaussian and salt-and-pepper noise (torch is imported when a noise is applied,
so that loading the plugin, e.g. for `bfcnn --help`, stays fast)."""

from bfcnn import hookimpl


class PoissonGaussian:
    """y = x + sqrt(gain * x + read^2) * n, n ~ N(0, 1): shot noise grows with the signal (Gaussian approximation)."""

    def __init__(self, gain=0.01, read_noise=2.0, value_range=255.0):
        self.gain, self.read = gain, read_noise / value_range

    def __call__(self, x, generator):
        import torch

        std = torch.sqrt(self.gain * x.clamp_min(0) + self.read**2)
        return x + std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


class SaltAndPepper:
    def __init__(self, amount=0.05, salt_ratio=0.5):
        self.amount, self.salt_ratio = amount, salt_ratio

    def __call__(self, x, generator):
        import torch

        n, _, h, w = x.shape
        draw = torch.rand((n, 1, h, w), generator=generator, device=x.device)
        salt = draw < self.amount * self.salt_ratio
        pepper = (draw >= self.amount * self.salt_ratio) & (draw < self.amount)
        return torch.where(salt, torch.ones_like(x), torch.where(pepper, torch.zeros_like(x), x))


@hookimpl
def register_noises(register):
    register("poisson_gaussian", PoissonGaussian, {
        "type": "object", "additionalProperties": False,
        "properties": {
            "gain": {"type": "number", "minimum": 0, "description": "shot-noise gain (variance per unit signal)"},
            "read_noise": {"type": "number", "minimum": 0, "description": "read-noise sigma in pixel units"},
            "value_range": {"type": "number", "exclusiveMinimum": 0},
        },
    }, "signal-dependent shot noise plus Gaussian read noise")
    register("salt_and_pepper", SaltAndPepper, {
        "type": "object", "additionalProperties": False,
        "properties": {
            "amount": {"type": "number", "minimum": 0, "maximum": 1},
            "salt_ratio": {"type": "number", "minimum": 0, "maximum": 1},
        },
    }, "a fraction of pixels set to 0 or 1")
