"""The inputs of an explanation: the model, the settings, the output folder, the pixels to draw (picked on edges,
texture and flat areas by the structure tensor) and the noisy image."""

from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import BfcnnError, output_folder

MIN_PICK_SIZE = 2  # the structure tensor that picks pixels needs at least 2 pixels along each axis
MIN_WEIGHT_SUM = 0.05  # spread is undefined where a filter's weights sum to less than this


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
    from ..checkpoint import load_model
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
