"""The interface of linear measurements (the `measurement` kind): what bfcnn.restore restores from and the plugins
(bfcnn/plugins/measurements.py and others) implement."""

from __future__ import annotations

import torch

from .errors import BfcnnError


class Measurement:
    """A linear measurement M of images of shape (C, H, W), with orthonormal rows (M M^T = I).

    Subclasses define `measure(x)` (N x C x H x W -> N x ..., the measurements) and `adjoint(y)` (back to
    N x C x H x W). Optional: `degrade(x)`, the measured image as a person would see it (a blurred photo, a
    small image; default M^T M x), and `from_degraded(image)`, its inverse back to measurements (default M).
    A registered measurement's factory returns a callable `(shape, seed=0, device="cpu") -> Measurement`
    (`MeasurementFactory` makes one from a subclass); that callable may have `image_shape(degraded_shape)`, the
    shape of the image behind a degraded one (e.g. a factor bigger for super-resolution).

    `restore_defaults`: the algorithm's parameters (bfcnn.restore.ALGORITHM_SCHEMA) that suit this measurement
    better than the general defaults, as measured (benchmarks/bench_restore.py); the caller's values win.
    """

    restore_defaults: dict = {}

    def __init__(self, shape, seed=0, device="cpu"):
        if len(shape) != 3 or min(shape) < 1:
            raise BfcnnError(f"a measurement is built for an image shape (C, H, W), got {tuple(shape)}")
        self.shape = tuple(int(s) for s in shape)
        self.seed = int(seed)
        self.device = torch.device(device)

    def measure(self, x):
        raise NotImplementedError

    def adjoint(self, y):
        raise NotImplementedError

    def project(self, x):
        """M^T M x: the orthogonal projection of x on the measured subspace."""
        return self.adjoint(self.measure(x))

    def degrade(self, x):
        return self.project(x)

    def from_degraded(self, image):
        return self.measure(image)

    def check(self, x):
        if x.dim() != 4 or tuple(x.shape[1:]) != self.shape:
            raise BfcnnError(f"{type(self).__name__} was built for images of shape {self.shape} (C, H, W), got "
                             f"{tuple(x.shape[1:]) if x.dim() == 4 else tuple(x.shape)}")
        return x


class MeasurementFactory:
    """`MeasurementFactory(cls, **params)(shape, seed, device)` -> cls(shape, seed=seed, device=device, **params)."""

    def __init__(self, cls, **params):
        self.cls, self.params = cls, params

    def __call__(self, shape, seed=0, device="cpu"):
        return self.cls(shape, seed=seed, device=device, **self.params)

    def image_shape(self, degraded_shape):
        fn = getattr(self.cls, "image_shape_for", None)
        return tuple(fn(tuple(degraded_shape), **self.params)) if fn else tuple(degraded_shape)

    def __repr__(self):
        return f"{self.cls.__name__}({', '.join(f'{k}={v!r}' for k, v in self.params.items())})"
