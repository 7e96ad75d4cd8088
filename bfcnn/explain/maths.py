"""explain a denoiser: each output pixel as an adaptive linear filter (filters, spread map, net bias, dimensionality)

A bias-free network is positively homogeneous and piecewise linear, so f(y) = J(y) y: output pixel i is the
weighted sum sum_j J_ij y_j of the noisy input, and row i of the Jacobian J(y) is that pixel's adaptive filter.
Nothing here builds the Jacobian one pixel at a time: every quantity comes from batched vector-Jacobian
products (rows of J, `torch.func.vjp` under `torch.func.vmap`) or Jacobian-vector products (J t for a whole
image t, `torch.func.jvp`), with a plain-autograd fallback for models that torch.func cannot transform.

Filters. The filter drawn for pixel p is the row of the channel-mean output, u = (1/C) sum_c e_(c,p),
w_p = J^T u (C x H x W, one plane per input channel); the heat map is its sum over input channels, the weights
the pixel gives a grey (equal in every channel) change of the input. For a per-channel linear filter that is the
kernel itself.

Spread map (every pixel at once, from 4 Jacobian-vector products). With the probe images
t0 = 1, t1 = x, t2 = y, t3 = x^2 + y^2 (the same value in every input channel; coordinates centred on the image
and divided by s = max(H, W) / 2 so float32 keeps its digits), (J t_k)_(c,p) = sum_q w_(c,p)(q) t_k(q) are the
moments of every output's spatial filter w_(c,p)(q) = sum_c' J_(c,p),(c',q). The moments are averaged over the
output channels first (the filter of the channel-mean output, as drawn), then

    m0 = J t0                      the sum of the weights (about 1 for a denoiser that keeps the local mean)
    centre = (J t1, J t2) / m0      the weighted centre (s * ... + image centre, in pixels)
    spread^2 = J t3 / m0 - |centre|^2   the second moment about that centre (times s^2, in pixels^2)

Weights are signed, so this is the centre and spread of a signed measure normalised by its signed total: it is
only meaningful where m0 is clearly positive (a filter that passes the local mean), and negative lobes can push
spread^2 below zero (a sharpening filter: no width in the usual sense, and sum |w| r^2 is not a linear functional
of the input, so no Jacobian-vector product can give it). Pixels with m0 < 0.05 or spread^2 < -tolerance are
left out (NaN in the map, light blue in the figure; counted in the JSON as `low_weight_sum_fraction`,
`negative_second_moment_fraction`, and together `undefined_fraction`); a spread^2 within rounding of zero
(tolerance max(0.05, 1e-5 s^2) px^2, e.g. a delta filter) is clamped to 0. The moments
are taken about the weighted centre, not about p, so a filter shifted off its pixel does not read as wide
(`mean_offset` reports the shift).

Net bias: ||f(y) - J(y) y|| / ||f(y)||, with J(y) y = jvp(f, y, y): rounding level for a bias-free model;
undefined where f(y) = 0 (null in report.json, with the reason in its `notes`).

Effective dimensionality: ||J||_F^2, the sum of the squared singular values (for a projection, the dimension of
the subspace it projects onto). Exact from the full Jacobian (rows in chunks of batched VJPs) for small images,
else Hutchinson's estimate mean_k ||J^T v_k||^2 over Rademacher probes v_k (E[v v^T] = I), with its standard
error. trace(J) comes from the same products (v^T J^T v), for comparison.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from ..errors import BfcnnError
from .inputs import MIN_WEIGHT_SUM, check_settings, resolve_model

log = logging.getLogger("bfcnn")

EXACT_LIMIT = 16384  # the largest image (C*H*W) whose full Jacobian (1 GiB in float32) we build


def as_batch(image, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """1 x C x H x W tensor from an H x W x C array (as read_image returns), a C x H x W or 1 x C x H x W tensor."""
    if isinstance(image, np.ndarray):
        array = image[..., None] if image.ndim == 2 else image
        tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
    else:
        tensor = torch.as_tensor(image)
    if tensor.ndim == 3:
        tensor = tensor[None]
    if tensor.ndim != 4 or tensor.shape[0] != 1:
        raise BfcnnError(f"explain takes one image (H x W x C array or 1 x C x H x W tensor), got shape "
                         f"{tuple(tensor.shape)}")
    return tensor.to(device=device, dtype=dtype)


class evaluation:
    """Context: the model in eval mode (batch norm uses its running statistics) and, on CUDA, TF32 off (its 10-bit
    mantissa would put the net bias near 1e-3 instead of rounding level); training flags and TF32 restored after."""

    def __init__(self, model):
        self.model = model
        self.cuda = any(p.is_cuda for p in model.parameters()) or any(b.is_cuda for b in model.buffers())

    def __enter__(self):
        self.modes = {m: m.training for m in self.model.modules()}
        self.precision = None
        if self.cuda:
            backends = torch.backends
            try:  # the API of torch >= 2.9; the legacy allow_tf32 flags otherwise
                self.precision = ("new", backends.cudnn.conv.fp32_precision, backends.cuda.matmul.fp32_precision)
                backends.cudnn.conv.fp32_precision = backends.cuda.matmul.fp32_precision = "ieee"
            except AttributeError:
                self.precision = ("legacy", backends.cudnn.allow_tf32, backends.cuda.matmul.allow_tf32)
                backends.cudnn.allow_tf32 = backends.cuda.matmul.allow_tf32 = False
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        for module, mode in self.modes.items():
            module.training = mode
        if self.precision and self.precision[0] == "new":
            torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = self.precision[1:]
        elif self.precision:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self.precision[1:]


def jvps(model, y, tangents, chunk_size=None):
    """(f(y), J(y) t for each t): `tangents` is K x C x H x W, the result f(y) 1 x C x H x W and K x C x H x W.

    torch.func.jvp under vmap; for models it cannot transform, forward-mode autograd one tangent at a time; for
    models without forward-mode formulas (an autograd.Function with only a backward), the double-backward trick
    J t = d/du <J^T u, t>.
    """
    y = y.detach()
    tangents = tangents.detach().to(y)
    try:
        def one(t):
            out, tangent = torch.func.jvp(model, (y,), (t[None],))
            return out[0], tangent[0]
        outs, products = torch.func.vmap(one, chunk_size=chunk_size)(tangents)
        return outs[:1].detach(), products.detach()
    except Exception as error:  # a model torch.func cannot transform
        log.debug("torch.func.jvp failed (%s); trying torch.autograd.forward_ad", error)
    try:
        from torch.autograd import forward_ad
        products = []
        with forward_ad.dual_level():
            for t in tangents:
                primal, tangent = forward_ad.unpack_dual(model(forward_ad.make_dual(y, t[None])))
                products.append(tangent[0].detach())
        with torch.no_grad():
            out = model(y)
        return out, torch.stack(products) if products else tangents.new_zeros((0, *y.shape[1:]))
    except Exception as error:
        log.debug("forward-mode autograd failed (%s); using double backward", error)
    leaf = y.clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(leaf)
        u = torch.zeros_like(out, requires_grad=True)
        pullback = torch.autograd.grad(out, leaf, u, create_graph=True)[0]  # J^T u, linear in u
        products = [torch.autograd.grad(pullback, u, t[None], retain_graph=True)[0][0] for t in tangents]
    return out.detach(), torch.stack(products).detach() if products else tangents.new_zeros((0, *y.shape[1:]))


def vjps(model, y, cotangents, chunk_size=None):
    """(f(y), J(y)^T u for each u): rows of the Jacobian when u picks output pixels. K x C x H x W in and out."""
    y = y.detach()
    cotangents = cotangents.detach().to(y)
    try:
        out, pullback = torch.func.vjp(model, y)
        rows = torch.func.vmap(lambda u: pullback(u[None])[0][0], chunk_size=chunk_size)(cotangents)
        return out.detach(), rows.detach()
    except Exception as error:
        log.debug("torch.func.vjp failed (%s); falling back to torch.autograd.grad", error)
        leaf = y.clone().requires_grad_(True)
        with torch.enable_grad():
            out = model(leaf)
            rows = [torch.autograd.grad(out, leaf, u[None], retain_graph=True)[0][0] for u in cotangents]
        return out.detach(), torch.stack(rows) if rows else cotangents.clone()


def jacobian(model, y, chunk_size=256):
    """The full Jacobian of `model` at the 1 x C x H x W image y, as an N x N matrix (N = C H W), rows = outputs."""
    check_settings(chunk_size=chunk_size)
    model = resolve_model(model, y.device)
    n = y[0].numel()
    if n > EXACT_LIMIT:
        raise BfcnnError(f"a full Jacobian of {n} x {n} is too large (at most {EXACT_LIMIT} values per image); "
                         "crop the image or estimate with probes")
    with evaluation(model):
        rows = []
        for start in range(0, n, chunk_size):
            index = torch.arange(start, min(start + chunk_size, n), device=y.device)
            basis = torch.zeros(len(index), n, device=y.device, dtype=y.dtype)
            basis[torch.arange(len(index)), index] = 1
            rows.append(vjps(model, y, basis.view(-1, *y.shape[1:]))[1].reshape(len(index), n))
    return torch.cat(rows)


def net_bias(model, y) -> float:
    """||f(y) - J(y) y|| / ||f(y)||: rounding level for a bias-free model."""
    model = resolve_model(model, y.device)
    with evaluation(model):
        out, jy = jvps(model, y, y)
    return relative_residual(out[0], jy[0])


def relative_residual(out, jy) -> float:
    norm = out.double().norm()
    return float((out.double() - jy.double()).norm() / norm) if norm > 0 else float("nan")


def adaptive_filters(model, y, pixels, chunk_size=None) -> torch.Tensor:
    """K x C x H x W: the filter (row of J for the channel-mean output) of each (x, y) pixel, per input channel."""
    model = resolve_model(model, y.device)
    _, c, h, w = y.shape
    cotangents = y.new_zeros(len(pixels), c, h, w)
    for k, (px, py) in enumerate(pixels):
        cotangents[k, :, py, px] = 1.0 / c
    with evaluation(model):
        return vjps(model, y, cotangents, chunk_size)[1]


def coordinate_probes(y):
    """The 4 probe images 1, x, y, x^2 + y^2 (coordinates centred, divided by s) and the scale s."""
    _, c, h, w = y.shape
    scale = max(h, w) / 2.0
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    xx, yy = (xx - (w - 1) / 2) / scale, (yy - (h - 1) / 2) / scale
    planes = torch.stack([torch.ones_like(xx), xx, yy, xx * xx + yy * yy])
    return planes[:, None].expand(4, c, h, w).to(y), scale


def moments_to_spread(moments, h, w, scale):
    """From (J 1, J x, J y, J r^2) (4 x H x W, scaled coordinates) to the weight sum, centre (px) and spread (px)."""
    m0, m1x, m1y, m2 = (m.double() for m in moments)
    defined = m0 >= MIN_WEIGHT_SUM
    safe = torch.where(defined, m0, torch.ones_like(m0))
    cx, cy = m1x / safe, m1y / safe
    variance = (m2 / safe - cx * cx - cy * cy) * scale * scale
    tolerance = max(0.05, 1e-5 * scale * scale)  # float32 rounding of the moments, in pixels^2
    low_sum = ~defined
    sharpening = defined & (variance < -tolerance)  # negative lobes outweigh the positive ones away from the centre
    defined &= ~sharpening
    spread = torch.sqrt(variance.clamp(min=0))
    nan = torch.full_like(spread, float("nan"))
    centre_x = cx * scale + (w - 1) / 2
    centre_y = cy * scale + (h - 1) / 2
    return {
        "weight_sum": m0,
        "centre_x": torch.where(defined, centre_x, nan),
        "centre_y": torch.where(defined, centre_y, nan),
        "spread": torch.where(defined, spread, nan),
        "low_sum": low_sum,
        "sharpening": sharpening,
    }


def spread_map(model, y, with_net_bias=True, chunk_size=None) -> dict:
    """Every pixel's filter: weight sum, centre and spread (H x W maps, float64), from 4 Jacobian-vector products.

    With `with_net_bias` the product J y rides along in the same batch and `net_bias` is added to the result.
    """
    model = resolve_model(model, y.device)
    _, c, h, w = y.shape
    probes, scale = coordinate_probes(y)
    if with_net_bias:
        probes = torch.cat([probes, y])
    with evaluation(model):
        out, products = jvps(model, y, probes, chunk_size)
    moments = products[:4].mean(dim=1)  # average the moments over the output channels
    result = moments_to_spread(moments, h, w, scale)
    result["denoised"] = out
    if with_net_bias:
        result["net_bias"] = relative_residual(out[0], products[4])
    return result


def rademacher(n, shape, generator, device, dtype):
    signs = torch.randint(0, 2, (n, *shape), generator=generator, dtype=torch.int8)
    return (signs.to(dtype) * 2 - 1).to(device)


def effective_dimensionality(model, y, probes=None, seed=0, chunk_size=None) -> dict:
    """||J(y)||_F^2 and trace J(y): exact from the full Jacobian when `probes` is None, else Hutchinson's estimate.

    Returns {"frobenius", "trace", "method", "probes", "frobenius_stderr", "trace_stderr"} (stderr 0 when exact).
    """
    model = resolve_model(model, y.device)
    if probes is None:
        jac = jacobian(model, y, chunk_size or 256).double()
        return {"method": "exact", "probes": 0, "frobenius": float(jac.pow(2).sum()), "frobenius_stderr": 0.0,
                "trace": float(torch.diagonal(jac).sum()), "trace_stderr": 0.0}
    if probes < 2:
        raise BfcnnError(f"probes: Hutchinson's estimate needs at least 2 probes, got {probes}")
    generator = torch.Generator().manual_seed(seed)
    vectors = rademacher(probes, y.shape[1:], generator, y.device, y.dtype)
    with evaluation(model):
        _, products = vjps(model, y, vectors, chunk_size)  # J^T v: E ||J^T v||^2 = ||J||_F^2, E v.J^T v = tr J
    squares = products.double().flatten(1).pow(2).sum(1)
    traces = (products.double() * vectors.double()).flatten(1).sum(1)
    return {"method": "hutchinson", "probes": probes,
            "frobenius": float(squares.mean()), "frobenius_stderr": float(squares.std() / math.sqrt(probes)),
            "trace": float(traces.mean()), "trace_stderr": float(traces.std() / math.sqrt(probes))}
