"""Built-in linear measurements for `bfcnn restore` (see bfcnn.restore.Measurement): every one has orthonormal
rows, M M^T = I, so M^T M is the orthogonal projection on what is measured.

The frequency measurements (lowpass, blur) use the orthonormal 2-D DCT-II, the Fourier transform of the image's
mirror-symmetric extension: real, orthonormal, and without the wrap-around at the borders of the FFT; a
Gaussian blur with mirrored borders is diagonal in it. The DCT matrices come from scipy.fft.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bfcnn.registry import hookimpl
from bfcnn.errors import BfcnnError
from bfcnn.measurement import Measurement, MeasurementFactory


def check_fraction(name, fraction):
    if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        raise BfcnnError(f"{name}: fraction must be in (0, 1], got {fraction!r}")
    return float(fraction)


class PixelSubset(Measurement):
    """Measures the pixels where `known` (H x W bool) is true, every channel: y is N x C x K."""

    def set_known(self, known):
        self.known = known.to(self.device)
        self.index = self.known.flatten().nonzero().squeeze(1)

    def measure(self, x):
        x = self.check(x)
        return x.flatten(2)[:, :, self.index]

    def adjoint(self, y):
        c, h, w = self.shape
        out = y.new_zeros((y.shape[0], c, h * w))
        out[:, :, self.index] = y
        return out.view(y.shape[0], c, h, w)


class Inpaint(PixelSubset):
    """A box of missing pixels ([top, left, height, width]; default: the centre quarter of each side), or a
    mask image whose nonzero pixels are missing."""

    def __init__(self, shape, seed=0, device="cpu", box=None, mask=None):
        super().__init__(shape, seed, device)
        _, h, w = self.shape
        if mask is not None:
            from bfcnn.images import read_image

            array = read_image(mask, "grayscale")[..., 0]
            if array.shape != (h, w):
                raise BfcnnError(f"inpaint: the mask {mask} is {array.shape[1]} x {array.shape[0]} pixels, the image "
                                 f"{w} x {h} (width x height): they must be the same size")
            missing = torch.from_numpy(array > 0)
        else:
            top, left, bh, bw = box if box is not None else (3 * h // 8, 3 * w // 8, max(1, h // 4), max(1, w // 4))
            if top < 0 or left < 0 or bh < 1 or bw < 1 or top + bh > h or left + bw > w:
                raise BfcnnError(f"inpaint: the box [top, left, height, width] = {list(box)} is not inside the "
                                 f"{h} x {w} image")
            missing = torch.zeros(h, w, dtype=torch.bool)
            missing[top:top + bh, left:left + bw] = True
        if missing.all():
            raise BfcnnError("inpaint: the mask leaves no pixel known")
        self.set_known(~missing)


class RandomPixels(PixelSubset):
    """A random `fraction` of the pixels (every channel) is known, the same ones for the same seed."""

    # scattered pixels: the data's smooth fill is close already; a low noise level and gentle steps keep it
    # (with the shipped prior on 12 crops of Kodak24 / Set12, mean of 4: 24.71 / 21.90 dB, against 24.45 / 21.58
    # at the general defaults' sigma_0 0.4 and beta 0.05; BENCHMARKS.md)
    restore_defaults = {"start": "smooth", "sigma_0": 0.05, "beta": 0.5}

    def __init__(self, shape, seed=0, device="cpu", fraction=0.1):
        super().__init__(shape, seed, device)
        fraction = check_fraction("random_pixels", fraction)
        _, h, w = self.shape
        count = max(1, round(fraction * h * w))
        order = torch.randperm(h * w, generator=torch.Generator().manual_seed(self.seed))
        known = torch.zeros(h * w, dtype=torch.bool)
        known[order[:count]] = True
        self.set_known(known.view(h, w))


class BlockAverage(Measurement):
    """Super-resolution: the mean of each factor x factor block, scaled by `factor` so the rows are unit vectors.
    `degrade` is the small image (the block means); `from_degraded` takes one back."""

    def __init__(self, shape, seed=0, device="cpu", factor=4):
        super().__init__(shape, seed, device)
        _, h, w = self.shape
        if not isinstance(factor, int) or factor < 1:
            raise BfcnnError(f"block_average: factor must be a positive integer, got {factor!r}")
        if h % factor or w % factor:
            raise BfcnnError(f"block_average: factor {factor} does not divide the image size {w} x {h}; crop it to "
                             f"{w - w % factor} x {h - h % factor}")
        self.factor = factor

    @staticmethod
    def image_shape_for(degraded_shape, factor=4):
        c, h, w = degraded_shape
        return c, h * factor, w * factor

    def measure(self, x):
        return F.avg_pool2d(self.check(x), self.factor) * self.factor

    def adjoint(self, y):
        f = self.factor
        return (y / f).repeat_interleave(f, dim=2).repeat_interleave(f, dim=3)

    def degrade(self, x):
        return self.measure(x) / self.factor

    def from_degraded(self, image):
        c, h, w = self.shape
        if tuple(image.shape[1:]) != (c, h // self.factor, w // self.factor):
            raise BfcnnError(f"block_average: a degraded image of {w // self.factor} x {h // self.factor} pixels "
                             f"was expected, got {image.shape[-1]} x {image.shape[-2]}")
        return image * self.factor


def dct_matrix(n, device):
    """The orthonormal DCT-II matrix D (n x n): D @ v = scipy.fft.dct(v, norm='ortho')."""
    import numpy as np
    from scipy.fft import dct

    return torch.from_numpy(dct(np.eye(n), norm="ortho", axis=0)).float().to(device)


class DctSubset(Measurement):
    """Measures the 2-D DCT coefficients where `keep` (H x W bool) is true: y is N x C x K."""

    def set_keep(self, keep):
        _, h, w = self.shape
        self.dh, self.dw = dct_matrix(h, self.device), dct_matrix(w, self.device)
        self.keep = keep.to(self.device)
        self.index = self.keep.flatten().nonzero().squeeze(1)

    def dct(self, x):
        return self.dh @ x @ self.dw.T

    def idct(self, c):
        return self.dh.T @ c @ self.dw

    def measure(self, x):
        return self.dct(self.check(x)).flatten(2)[:, :, self.index]

    def adjoint(self, y):
        c, h, w = self.shape
        out = y.new_zeros((y.shape[0], c, h * w))
        out[:, :, self.index] = y
        return self.idct(out.view(y.shape[0], c, h, w))


class Lowpass(DctSubset):
    """Spectral super-resolution: the lowest 1/factor of the frequencies along each axis."""

    def __init__(self, shape, seed=0, device="cpu", factor=4):
        super().__init__(shape, seed, device)
        if not (isinstance(factor, (int, float)) and factor >= 1):
            raise BfcnnError(f"lowpass: factor must be a number >= 1, got {factor!r}")
        _, h, w = self.shape
        keep = torch.zeros(h, w, dtype=torch.bool)
        keep[:max(1, math.ceil(h / factor)), :max(1, math.ceil(w / factor))] = True
        self.set_keep(keep)


class Blur(DctSubset):
    """A Gaussian blur of std `sigma` pixels (mirrored borders): `degrade` is the blurred image; the measurement is
    the DCT coefficients the blur keeps above `threshold` of their size, which `from_degraded` divides back out."""

    def __init__(self, shape, seed=0, device="cpu", sigma=2.0, threshold=0.05):
        super().__init__(shape, seed, device)
        if not (sigma > 0 and 0 < threshold < 1):
            raise BfcnnError(f"blur: sigma must be > 0 and threshold in (0, 1), got {sigma!r}, {threshold!r}")
        _, h, w = self.shape
        fh = torch.exp(-0.5 * (math.pi * sigma * torch.arange(h, dtype=torch.float64) / h) ** 2)
        fw = torch.exp(-0.5 * (math.pi * sigma * torch.arange(w, dtype=torch.float64) / w) ** 2)
        self.transfer = (fh[:, None] * fw[None, :]).float().to(self.device)
        self.set_keep(self.transfer >= threshold)
        self.gain = self.transfer.flatten()[self.index]

    def degrade(self, x):
        return self.idct(self.dct(self.check(x)) * self.transfer)

    def from_degraded(self, image):
        return self.measure(image) / self.gain


class Compressive(Measurement):
    """Compressive sensing: each block x block tile (all channels; d values) is measured by the same random
    orthonormal d x k basis, k = round(fraction d) (edge tiles get their own); seeded, O(d k) memory."""

    def __init__(self, shape, seed=0, device="cpu", fraction=0.25, block=16):
        super().__init__(shape, seed, device)
        fraction = check_fraction("compressive", fraction)
        if not isinstance(block, int) or block < 1:
            raise BfcnnError(f"compressive: block must be a positive integer, got {block!r}")
        c, h, w = self.shape
        hm, wm = h - h % block, w - w % block
        self.regions = []  # (row slice, column slice, tile height, tile width, basis)
        bases = {}
        for rows, bh in (((0, hm), block), ((hm, h), h - hm)):
            for cols, bw in (((0, wm), block), ((wm, w), w - wm)):
                if rows[1] <= rows[0] or cols[1] <= cols[0]:
                    continue
                d = c * bh * bw
                if d not in bases:
                    k = max(1, round(fraction * d))
                    generator = torch.Generator().manual_seed(self.seed * 1_000_003 + d)
                    q, _ = torch.linalg.qr(torch.randn(d, k, generator=generator, dtype=torch.float64))
                    bases[d] = q.float().to(self.device)
                self.regions.append((slice(*rows), slice(*cols), bh, bw, bases[d]))

    @staticmethod
    def tiles(x, bh, bw):
        n, c, h, w = x.shape
        x = x.reshape(n, c, h // bh, bh, w // bw, bw).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(n, (h // bh) * (w // bw), c * bh * bw)

    def measure(self, x):
        x = self.check(x)
        return torch.cat([(self.tiles(x[:, :, rows, cols], bh, bw) @ basis).flatten(1)
                          for rows, cols, bh, bw, basis in self.regions], dim=1)

    def adjoint(self, y):
        c = self.shape[0]
        n = y.shape[0]
        out = y.new_zeros((n, *self.shape))
        start = 0
        for rows, cols, bh, bw, basis in self.regions:
            h, w = rows.stop - rows.start, cols.stop - cols.start
            count = (h // bh) * (w // bw) * basis.shape[1]
            tiles = y[:, start:start + count].reshape(n, -1, basis.shape[1]) @ basis.T
            tiles = tiles.reshape(n, h // bh, w // bw, c, bh, bw).permute(0, 3, 1, 4, 2, 5)
            out[:, :, rows, cols] = tiles.reshape(n, c, h, w)
            start += count
        return out


class Nothing(Measurement):
    """No measurement at all: restoring with it draws samples from the prior."""

    def measure(self, x):
        return self.check(x).new_zeros((x.shape[0], 0))

    def adjoint(self, y):
        return y.new_zeros((y.shape[0], *self.shape))


def factory(cls):
    return lambda **params: MeasurementFactory(cls, **params)


FRACTION = {"type": "number", "exclusiveMinimum": 0, "maximum": 1}


@hookimpl
def register_measurements(register):
    register("inpaint", factory(Inpaint), {
        "type": "object", "additionalProperties": False,
        "properties": {
            "box": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 4, "maxItems": 4,
                    "description": "missing box [top, left, height, width] in pixels (default: the centre quarter)"},
            "mask": {"type": "string", "description": "mask image file: nonzero pixels are missing"},
        },
        "not": {"required": ["box", "mask"]},
        "examples": [{"box": [4, 6, 8, 10]}],
    }, "fill in missing pixels (a box or a mask image)")
    register("random_pixels", factory(RandomPixels), {
        "type": "object", "additionalProperties": False,
        "properties": {"fraction": {**FRACTION, "description": "fraction of pixels kept (default 0.1)"}},
        "examples": [{"fraction": 0.3}],
    }, "a random fraction of the pixels is known")
    register("block_average", factory(BlockAverage), {
        "type": "object", "additionalProperties": False,
        "properties": {"factor": {"enum": [2, 4, 8], "description": "super-resolution factor (default 4)"}},
        "examples": [{"factor": 4}],
    }, "super-resolution: means of factor x factor blocks")
    register("lowpass", factory(Lowpass), {
        "type": "object", "additionalProperties": False,
        "properties": {"factor": {"type": "number", "minimum": 1,
                                  "description": "keep the lowest 1/factor of the frequencies per axis (default 4)"}},
        "examples": [{"factor": 4}],
    }, "spectral super-resolution: the low frequencies (DCT)")
    register("blur", factory(Blur), {
        "type": "object", "additionalProperties": False,
        "properties": {"sigma": {"type": "number", "exclusiveMinimum": 0, "description": "blur std in pixels (2)"},
                       "threshold": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1,
                                     "description": "frequencies the blur keeps above this gain are measured (0.05)"}},
        "examples": [{"sigma": 2.0}],
    }, "deblurring: a Gaussian blur with mirrored borders")
    register("compressive", factory(Compressive), {
        "type": "object", "additionalProperties": False,
        "properties": {"fraction": {**FRACTION, "description": "measurements per pixel value (default 0.25)"},
                       "block": {"type": "integer", "minimum": 1, "description": "tile size in pixels (16)"}},
        "examples": [{"fraction": 0.25, "block": 8}],
    }, "compressive sensing: random orthonormal projections of each tile")
    register("none", factory(Nothing), {"type": "object", "additionalProperties": False, "properties": {}},
             "no measurement: sampling from the prior")
