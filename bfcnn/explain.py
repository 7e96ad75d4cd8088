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

import copy
import json
import logging
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .denoise import DEFAULT_MODEL
from .errors import BfcnnError, output_folder
from .devices import resolve_device
from .layers import model_channels

log = logging.getLogger("bfcnn")

DEFAULT_SIGMAS = (10.0, 25.0, 50.0, 75.0)
EXACT_MAX_DIMENSIONS = 4800  # 40 x 40 colour: above this, dimensionality is estimated with probes
EXACT_LIMIT = 16384  # the largest image (C*H*W) whose full Jacobian (1 GiB in float32) we build
MIN_WEIGHT_SUM = 0.05  # spread is undefined where a filter's weights sum to less than this
MIN_PICK_SIZE = 2  # the structure tensor that picks pixels needs at least 2 pixels along each axis


# ----------------------------------------------------------------------------------------------------------------
# inputs

def resolve_model(model, device="cpu", dtype=None):
    """An nn.Module on `device` (and in `dtype` when given), a Denoiser's module (what bfcnn.load_model returns),
    or a run folder / .safetensors file / shipped name, loaded. The caller's module is never changed: one that
    is already on `device` in `dtype` is used as it is, any other is copied before it is moved or converted."""
    if not isinstance(model, nn.Module) and isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    if isinstance(model, nn.Module):
        if not already_there(model, torch.device(device), dtype):
            model = copy.deepcopy(model).to(device)
            if dtype is not None:
                model = model.to(dtype)
        return model
    from .checkpoint import load_model
    model = load_model(model, device)
    return model if dtype is None else model.to(dtype)


def already_there(model, device, dtype=None) -> bool:
    """Whether every parameter and buffer of `model` is on `device` (and, when given, floating ones in `dtype`)."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.device.type != device.type or (device.index is not None and tensor.device.index != device.index):
            return False
        if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
            return False
    return True


def check_settings(sigma=0.0, sigmas=(), probes=None, chunk_size=None):
    """Bad settings as one clear BfcnnError, before any computation (the CLI and explain() share it)."""
    for name, value in [("sigma", sigma), *(("sigmas", level) for level in sigmas)]:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise BfcnnError(f"{name}: noise levels are numbers, got {value!r}") from None
        if not math.isfinite(number) or number < 0:
            raise BfcnnError(f"{name}: noise levels must be finite and non-negative (0..255 scale), got {value!r}")
    if probes is not None and (not is_integer(probes) or probes < 2):
        raise BfcnnError(f"probes: Hutchinson's estimate needs an integer of at least 2 probes, got {probes!r}")
    if chunk_size is not None and (not is_integer(chunk_size) or chunk_size < 1):
        raise BfcnnError(f"chunk size: products per batch must be a positive integer, got {chunk_size!r}")


def is_integer(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def writable_folder(path) -> Path:
    """Create the output folder (parents too) and check a file can be written in it: bad input (exit 2) found
    before any computation, not an OSError after it."""
    path = output_folder(path)
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise BfcnnError(f"cannot write in the output folder {path}: {error.strerror}") from None
    return path


def check_pickable(h, w):
    """Automatic pixel picking (the structure tensor) needs an image of at least 2 x 2."""
    if min(h, w) < MIN_PICK_SIZE:
        raise BfcnnError(f"pixels are picked automatically only in images of at least {MIN_PICK_SIZE} x "
                         f"{MIN_PICK_SIZE} pixels, this one is {w} x {h}: give the pixels to explain "
                         "(--pixels X,Y) or a larger image")


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


# ----------------------------------------------------------------------------------------------------------------
# batched products

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


# ----------------------------------------------------------------------------------------------------------------
# the quantities

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


# ----------------------------------------------------------------------------------------------------------------
# picking pixels

def pick_pixels(image, per_kind=2, margin=None, min_distance=None):
    """(x, y, kind) triples on edges, texture and flat areas of an H x W x C image (the denoised one is best).

    The structure tensor (scikit-image) gives energy (lambda1 + lambda2) and coherence ((l1 - l2) / (l1 + l2))^2:
    edges have high energy and coherence, texture high energy and low coherence, flat areas the lowest energy.
    """
    from skimage.feature import structure_tensor, structure_tensor_eigenvalues

    gray = np.asarray(image, dtype=np.float64).mean(axis=2)
    h, w = gray.shape
    check_pickable(h, w)
    tensor = structure_tensor(gray, sigma=1.5, mode="reflect", order="rc")
    l1, l2 = structure_tensor_eigenvalues(tensor)
    energy = l1 + l2
    coherence = ((l1 - l2) / (energy + 1e-12)) ** 2
    margin = min(16, h // 6, w // 6) if margin is None else margin
    min_distance = max(2, min(h, w) // 8) if min_distance is None else min_distance
    allowed = np.zeros((h, w), bool)
    allowed[margin:h - margin, margin:w - margin] = True
    if not allowed.any():
        allowed[:] = True
    scores = {"edge": energy * coherence, "texture": energy * (1 - coherence), "flat": -energy}
    picked = []
    rows, cols = np.mgrid[0:h, 0:w]
    for _ in range(per_kind):
        for kind, score in scores.items():
            masked = np.where(allowed, score, -np.inf)
            if not np.isfinite(masked).any():
                break
            r, c = np.unravel_index(np.argmax(masked), masked.shape)
            picked.append((int(c), int(r), kind))
            allowed &= np.maximum(np.abs(rows - r), np.abs(cols - c)) >= min_distance
    order = {"edge": 0, "texture": 1, "flat": 2}
    return sorted(picked, key=lambda p: order[p[2]])


# ----------------------------------------------------------------------------------------------------------------
# the report

def filter_stats(gray_filter, px, py):
    """Centre, spread (signed moments, as in the spread map) and a window radius holding 99% of sum |w|."""
    h, w = gray_filter.shape
    weights = gray_filter.double()
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    total = float(weights.sum())
    stats = {"x": px, "y": py, "weight_sum": total, "self_weight": float(weights[py, px]),
             "centre": None, "spread": None}
    if total >= MIN_WEIGHT_SUM:
        cx, cy = float((weights * xx).sum() / total), float((weights * yy).sum() / total)
        variance = float((weights * ((xx - cx) ** 2 + (yy - cy) ** 2)).sum() / total)
        stats["centre"] = [cx, cy]
        stats["spread"] = math.sqrt(max(variance, 0.0)) if variance >= -0.05 else None  # as in the map
    magnitude = weights.abs().flatten()
    distance = torch.maximum((xx - px).abs(), (yy - py).abs()).long().flatten()
    by_distance = torch.zeros(int(distance.max()) + 1, dtype=torch.float64).index_add_(0, distance, magnitude)
    reached = torch.nonzero(torch.cumsum(by_distance, 0) >= 0.99 * float(magnitude.sum()))
    stats["radius_99"] = int(reached[0]) if len(reached) else 0
    return stats


def noisy_version(clean, sigma, seed):
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(clean.shape, generator=generator, dtype=torch.float32).to(clean)
    return noise, clean + sigma / 255.0 * noise


def explain(model, image, sigma=25.0, pixels=None, sigmas=DEFAULT_SIGMAS, probes=8, exact=None, seed=0,
            output_dir=None, device="cpu", dtype=torch.float32, chunk_size=None, figures=True) -> dict:
    """The whole report: filters of `pixels` (default: picked on edges, texture, flat areas), the spread map, the
    net bias at `sigma`, and the effective dimensionality at each of `sigmas` (exact when `exact`, or when None
    and the image has at most 4800 values; else Hutchinson with `probes`). Noise is added with `seed`
    (sigma on the 0..255 scale; 0 explains the image as given). Writes PNG figures, report.json and filters.npz
    into `output_dir` when given (created, and checked writable, before any computation). Returns the report (a
    JSON-able dict; an undefined quantity, such as the net bias of a zero output, is None and explained in
    "notes"). `model` is not changed: a copy is moved or converted when `device` or `dtype` asks for it."""
    timings = {}
    start = time.perf_counter()
    check_settings(sigma, sigmas, probes, chunk_size)
    device = resolve_device(device)
    model = resolve_model(model, device, dtype)
    clean = as_batch(image, device, dtype)
    expected = model_channels(model)
    if expected != clean.shape[1]:
        raise BfcnnError(f"the model takes {expected}-channel images, the image has {clean.shape[1]} channels")
    _, c, h, w = clean.shape
    if h * w == 0:
        raise BfcnnError(f"the image is empty ({w} x {h} pixels)")
    for item in pixels or ():
        if not (0 <= int(item[0]) < w and 0 <= int(item[1]) < h):
            raise BfcnnError(f"pixel ({item[0]}, {item[1]}) is outside the {w} x {h} image")
    if not pixels:
        check_pickable(h, w)
    n = c * h * w
    use_exact = exact if exact is not None else n <= EXACT_MAX_DIMENSIONS
    if use_exact and n > EXACT_LIMIT:
        raise BfcnnError(f"the full Jacobian of a {c} x {h} x {w} image has {n}^2 entries: too many for the "
                         f"exact dimensionality (at most {EXACT_LIMIT} values); use probes")
    if output_dir is not None:
        output_dir = writable_folder(output_dir)
    noise, noisy = noisy_version(clean, sigma, seed)
    timings["load"] = time.perf_counter() - start

    t = time.perf_counter()
    spread = spread_map(model, noisy, with_net_bias=True, chunk_size=chunk_size)
    denoised = spread["denoised"]
    timings["spread_map_and_net_bias"] = time.perf_counter() - t

    t = time.perf_counter()
    denoised_image = denoised[0].permute(1, 2, 0).float().cpu().numpy()
    if pixels:
        chosen = [(int(item[0]), int(item[1]), item[2] if len(item) > 2 else "given") for item in pixels]
    else:
        chosen = pick_pixels(denoised_image)
    rows = adaptive_filters(model, noisy, [(px, py) for px, py, _ in chosen], chunk_size)
    gray_filters = rows.sum(dim=1)  # K x H x W: weights on a grey change of the input
    filters = []
    for (px, py, kind), gray in zip(chosen, gray_filters):
        stats = filter_stats(gray.cpu(), px, py)
        stats["kind"] = kind
        filters.append(stats)
    timings["filters"] = time.perf_counter() - t

    t = time.perf_counter()
    levels = []
    for level in sigmas:
        y = clean + float(level) / 255.0 * noise
        result = effective_dimensionality(model, y, probes=None if use_exact else probes, seed=seed,
                                          chunk_size=chunk_size)
        levels.append({"sigma": float(level), **result, "fraction": result["frobenius"] / n})
    timings["dimensionality"] = time.perf_counter() - t

    maps = {k: spread[k] for k in ("weight_sum", "spread")}
    spread_values = maps["spread"][torch.isfinite(maps["spread"])]
    offset = torch.hypot(spread["centre_x"] - torch.arange(w, dtype=torch.float64, device=device),
                         spread["centre_y"] - torch.arange(h, dtype=torch.float64, device=device)[:, None])
    offset = offset[torch.isfinite(offset)]

    def quantiles(values):
        if values.numel() == 0:
            return {"median": None, "p10": None, "p90": None, "mean": None}
        q = torch.quantile(values.float().cpu(), torch.tensor([0.1, 0.5, 0.9]))
        return {"median": float(q[1]), "p10": float(q[0]), "p90": float(q[2]), "mean": float(values.mean())}

    notes = []
    bias = spread["net_bias"]
    if not math.isfinite(bias):
        bias = None
        if torch.isfinite(denoised).all():
            notes.append("net_bias is null: the denoised image f(y) is zero, so the relative residual "
                         "||f(y) - J(y) y|| / ||f(y)|| is undefined")
        else:
            notes.append("net_bias is null: the denoised image f(y) has NaN or infinite values")
    report = {
        "model": {"class": type(model).__name__, "bias_free": getattr(model, "bias_free", None),
                  "channels": expected},
        "image": {"channels": c, "height": h, "width": w},
        "sigma": float(sigma), "seed": seed, "device": str(device), "dtype": str(dtype).replace("torch.", ""),
        "net_bias": bias,
        "filters": filters,
        "spread_map": {"pixels": quantiles(spread_values),
                       "weight_sum": quantiles(maps["weight_sum"].flatten()),
                       "mean_offset": float(offset.mean()) if offset.numel() else None,
                       "undefined_fraction": 1.0 - spread_values.numel() / (h * w),
                       "low_weight_sum_fraction": float(spread["low_sum"].double().mean()),
                       "negative_second_moment_fraction": float(spread["sharpening"].double().mean())},
        "dimensionality": {"dimensions": n, "method": "exact" if use_exact else "hutchinson", "levels": levels},
        "timings_s": timings,
    }
    if output_dir is not None:
        t = time.perf_counter()
        files = ["report.json", "filters.npz"]
        windows = {}
        for k, stats in enumerate(filters):
            r = max(stats["radius_99"], 4)
            x0, x1, y0, y1 = max(stats["x"] - r, 0), stats["x"] + r + 1, max(stats["y"] - r, 0), stats["y"] + r + 1
            windows[f"filter_{k}"] = rows[k, :, y0:y1, x0:x1].float().cpu().numpy()
            windows[f"origin_{k}"] = np.array([x0, y0])
        np.savez_compressed(output_dir / "filters.npz", **windows)
        if figures:
            noisy_image = noisy[0].permute(1, 2, 0).float().cpu().numpy()
            files += draw_figures(output_dir, noisy_image, denoised_image, gray_filters.float().cpu().numpy(),
                                  filters, maps["spread"].float().cpu().numpy(),
                                  maps["weight_sum"].float().cpu().numpy(), report)
        timings["writing"] = time.perf_counter() - t
        report["files"] = files
    timings["total"] = time.perf_counter() - start
    json_safe(report, notes)  # strict JSON: NaN and infinity become null, each with a note
    if notes:
        report["notes"] = notes
    if output_dir is not None:
        (output_dir / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False))
    return report


def json_safe(value, notes, where="report"):
    """`value` with every NaN or infinity (which strict JSON cannot hold) replaced by None, each noted in `notes`;
    dicts and lists are changed in place."""
    if isinstance(value, dict):
        for key, item in value.items():
            value[key] = json_safe(item, notes, f"{where}.{key}")
    elif isinstance(value, list):
        for k, item in enumerate(value):
            value[k] = json_safe(item, notes, f"{where}[{k}]")
    if isinstance(value, float) and not math.isfinite(value):
        notes.append(f"{where.removeprefix('report.')} is null: it came out as {value} (undefined)")
        return None
    return value


# ----------------------------------------------------------------------------------------------------------------
# figures (matplotlib, Agg backend)

def show(ax, image, title):
    image = np.clip(image, 0, 1)
    if image.shape[2] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_figures(output_dir, noisy, denoised, gray_filters, filters, spread, weight_sum, report) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    k = len(filters)
    if k:
        fig, axes = plt.subplots(k, 3, figsize=(7.5, 2.4 * k), squeeze=False)
        for row, stats in enumerate(filters):
            px, py = stats["x"], stats["y"]
            r = max(stats["radius_99"], 6)
            y0, y1, x0, x1 = max(py - r, 0), py + r + 1, max(px - r, 0), px + r + 1
            show(axes[row, 0], noisy[y0:y1, x0:x1], f"noisy ({px}, {py}) {stats['kind']}")
            show(axes[row, 1], denoised[y0:y1, x0:x1], "denoised")
            weights = gray_filters[row, y0:y1, x0:x1]
            limit = float(np.abs(weights).max()) or 1.0
            image = axes[row, 2].imshow(weights, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
            for ax in axes[row]:
                ax.plot([px - x0], [py - y0], marker="+", color="lime", markersize=8)
            spread_text = f"{stats['spread']:.2f}" if stats["spread"] is not None else "n/a"
            axes[row, 2].set_title(f"filter: sum {stats['weight_sum']:.2f}, spread {spread_text} px", fontsize=8)
            axes[row, 2].set_xticks([])
            axes[row, 2].set_yticks([])
            fig.colorbar(image, ax=axes[row, 2], fraction=0.046, pad=0.04)
        fig.suptitle(f"adaptive filters at sigma {report['sigma']:g}", fontsize=10)
        fig.tight_layout()
        fig.savefig(output_dir / "filters.png", dpi=110)
        plt.close(fig)
        files.append("filters.png")

    fig, axes = plt.subplots(1, 4, figsize=(14, 3.8))
    show(axes[0], noisy, f"noisy (sigma {report['sigma']:g})")
    bias = report["net_bias"]
    show(axes[1], denoised, f"denoised (net bias {'undefined' if bias is None else f'{bias:.1e}'})")
    for stats in filters:
        axes[1].plot([stats["x"]], [stats["y"]], marker="+", color="lime", markersize=8)
    finite = spread[np.isfinite(spread)]
    vmax = float(np.quantile(finite, 0.99)) if finite.size else 1.0
    colours = matplotlib.colormaps["magma"].with_extremes(bad="#7fd3ff")
    image = axes[2].imshow(spread, cmap=colours, vmin=0, vmax=vmax or 1.0, interpolation="nearest")
    undefined = report["spread_map"]["undefined_fraction"]
    axes[2].set_title(f"filter spread (px); light blue: undefined ({100 * undefined:.0f}%)", fontsize=8)
    fig.colorbar(image, ax=axes[2], fraction=0.046, pad=0.04)
    image = axes[3].imshow(weight_sum, cmap="viridis", interpolation="nearest")
    axes[3].set_title("sum of filter weights", fontsize=8)
    fig.colorbar(image, ax=axes[3], fraction=0.046, pad=0.04)
    for ax in axes[2:]:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(output_dir / "spread.png", dpi=110)
    plt.close(fig)
    files.append("spread.png")

    levels = report["dimensionality"]["levels"]
    if levels:
        fig, ax = plt.subplots(figsize=(5, 3.6))
        sig = [lv["sigma"] for lv in levels]
        ax.errorbar(sig, [lv["frobenius"] for lv in levels], yerr=[2 * lv["frobenius_stderr"] for lv in levels],
                    marker="o", capsize=3, label=f"||J||_F^2 ({report['dimensionality']['method']})")
        ax.plot(sig, [lv["trace"] for lv in levels], marker="x", linestyle="--", label="trace J")
        ax.set_xlabel("noise sigma (0..255)")
        ax.set_ylabel("effective dimensionality")
        ax.set_title(f"of {report['dimensionality']['dimensions']} dimensions", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(output_dir / "dimensionality.png", dpi=110)
        plt.close(fig)
        files.append("dimensionality.png")
    return files


# ----------------------------------------------------------------------------------------------------------------
# command line

def parse_pixel(text):
    try:
        x, y = (int(v) for v in text.split(","))
    except ValueError:
        raise BfcnnError(f"--pixels takes x,y pairs of integers, got {text!r}") from None
    return x, y


def parse_crop(text):
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4 or values[2] <= 0 or values[3] <= 0 or min(values[:2]) < 0:
        raise BfcnnError(f"--crop takes x,y,width,height (non-negative integers), got {text!r}")
    return values


def add_arguments(parser):
    parser.add_argument("image", help="the image to explain (noise of --sigma is added to it)")
    parser.add_argument("--model", default=None, help="a run folder, a .safetensors file or a shipped model name "
                        f"(default: the shipped {DEFAULT_MODEL})")
    parser.add_argument("--sigma", type=float, default=25.0, help="noise level on the 0..255 scale (default 25; "
                        "0 explains the image as it is)")
    parser.add_argument("--pixels", nargs="+", metavar="X,Y", help="pixels whose filters to draw "
                        "(default: picked on edges, texture and flat areas)")
    parser.add_argument("-o", "--output-dir", required=True, help="folder for the PNG figures and report.json")
    parser.add_argument("--sigmas", type=float, nargs="+", default=list(DEFAULT_SIGMAS),
                        help="noise levels of the dimensionality curve (default: %(default)s)")
    parser.add_argument("--probes", type=int, default=8, help="random probes per level for the dimensionality "
                        "estimate (default 8)")
    parser.add_argument("--exact", choices=("auto", "yes", "no"), default="auto",
                        help=f"dimensionality from the full Jacobian (auto: when C*H*W <= {EXACT_MAX_DIMENSIONS})")
    parser.add_argument("--crop", metavar="X,Y,W,H", help="explain this crop of the image")
    parser.add_argument("--color-mode", choices=("auto", "rgb", "grayscale"), default="auto",
                        help="how to read the image (auto: from the model's channels)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise and the probes")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--double", action="store_true", help="compute in float64")
    parser.add_argument("--chunk-size", type=int, default=None, help="products per batch (bounds memory)")


def command(args):
    from .images import read_image

    path = Path(args.image)
    if not path.is_file():
        raise BfcnnError(f"image not found: {path}")
    if args.output_dir and Path(args.output_dir).exists() and not Path(args.output_dir).is_dir():
        raise BfcnnError(f"-o {args.output_dir}: is a file, not a folder")
    pixels = [parse_pixel(p) for p in args.pixels] if args.pixels else None
    crop = parse_crop(args.crop) if args.crop else None
    check_settings(args.sigma, args.sigmas, args.probes, args.chunk_size)

    device = str(resolve_device(args.device))  # auto, cpu, cuda[:N]; CUDA asked for on a machine without it
    try:
        model = resolve_model(args.model or DEFAULT_MODEL, device)
    except BfcnnError:
        raise
    except Exception as error:  # a file that is not a bfcnn weights file
        raise BfcnnError(f"cannot load model {args.model!r}: {type(error).__name__}: {error}") from None
    mode = args.color_mode
    if mode == "auto":
        mode = "grayscale" if model_channels(model) == 1 else "rgb"
    try:
        image = read_image(path, mode)
    except (OSError, ValueError) as error:
        raise BfcnnError(f"cannot read image {path}: {error}") from None
    if crop:
        x, y, w, h = crop
        if x + w > image.shape[1] or y + h > image.shape[0]:
            raise BfcnnError(f"--crop {args.crop} does not fit the {image.shape[1]} x {image.shape[0]} image")
        image = image[y:y + h, x:x + w]
    exact = {"auto": None, "yes": True, "no": False}[args.exact]
    report = explain(model, image, sigma=args.sigma, pixels=pixels, sigmas=args.sigmas, probes=args.probes,
                     exact=exact, seed=args.seed, output_dir=args.output_dir, device=device,
                     dtype=torch.float64 if args.double else torch.float32, chunk_size=args.chunk_size)
    def number(value, spec, unit=""):  # None: undefined (report.json's notes say why)
        return "n/a" if value is None else f"{value:{spec}}{unit}"

    levels = ", ".join(f"{lv['sigma']:g}: {number(lv['frobenius'], '.1f')}"
                       for lv in report["dimensionality"]["levels"])
    print(f"net bias {number(report['net_bias'], '.2e')}; median filter spread "
          f"{number(report['spread_map']['pixels']['median'], '.2f', ' px')}; effective dimensionality "
          f"({report['dimensionality']['method']}) {levels}")
    if report.get("notes"):
        print(f"n/a: undefined, see the notes in report.json ({len(report['notes'])})")
    print(f"wrote {', '.join(report['files'])} to {args.output_dir}")
