"""Tiled inference in bounded memory, with numpy only (the torch-free runtime uses it too).

Each tile is processed with `margin` pixels of context on every side that are thrown away, so a fully
convolutional model whose receptive field fits in the margin gives the whole-image result; neighbouring kept
regions also overlap by `blend` pixels and are mixed with linear ramps, which hides any residual seam.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


def ramp(length, blend_before, blend_after):
    w = np.ones(length, dtype=np.float32)
    if blend_before:
        w[:blend_before] = (np.arange(blend_before, dtype=np.float32) + 0.5) / blend_before
    if blend_after:
        w[length - blend_after:] = np.minimum(w[length - blend_after:], (np.arange(blend_after, 0, -1, dtype=np.float32) - 0.5) / blend_after)
    return w


def split(size, n, blend=0):
    """(start, length) of `n` regions of one length that cover a side of `size` pixels, each overlapping the
    next by `blend` pixels (or one more where the sizes do not divide evenly)."""
    if n <= 1:
        return [(0, size)]
    length = min(size, -(-(size + (n - 1) * blend) // n))  # n * length - (n - 1) * blend >= size
    return [(i * (size - length) // (n - 1), length) for i in range(n)]


def spans(size, tile, blend=0):
    """(start, length) of the kept regions along a side of `size` pixels: the fewest regions of one length, at
    most tile + blend, that cover the side with each overlapping the next by `blend` pixels (or one more where
    the sizes do not divide evenly). So the pixels processed twice are only the blend bands (and the margins
    around them), whatever the size: a 1024-pixel side in tiles of 512 is two regions of 520."""
    return split(size, -(-(size - blend) // tile) if tile > 0 else 1, blend)


def grid(height, width, tile, margin=0, blend=0):
    """(row spans, column spans) of the tile grid: a tile is a budget of (tile + blend)^2 kept pixels (the
    memory of a square tile), not a side, so an image of at most that many pixels is one whole window whatever
    its shape (a 1155 x 866 photo in tiles of 1024), and of the grids whose regions fit the budget the one whose
    windows (regions and their margins) hold the fewest pixels wins: the least work done twice."""
    if tile <= 0:
        return [(0, height)], [(0, width)]
    budget = (tile + blend) ** 2

    def cost(rows, columns):  # window pixels, then windows
        return ((sum(min(height, y + h + margin) - max(0, y - margin) for y, h in rows)
                 * sum(min(width, x + w + margin) - max(0, x - margin) for x, w in columns)),
                len(rows) * len(columns))
    square = spans(height, tile, blend), spans(width, tile, blend)  # always fits: no grid needs more rows
    candidates = [square]
    for ny in range(1, len(square[0]) + 1):
        rows = split(height, ny, blend)
        across = budget // rows[0][1]
        if across <= blend:
            continue
        nx = max(1, -(-(width - blend) // (across - blend)))
        columns = split(width, nx, blend)
        while columns[0][1] * rows[0][1] > budget:  # rounding: one more column
            nx += 1
            columns = split(width, nx, blend)
        candidates.append((rows, columns))
    return min(candidates, key=lambda grid: cost(*grid))


class Tile(NamedTuple):
    window: tuple  # (rows, columns) slices of the image the model sees: the kept region and its context
    keep: tuple  # (rows, columns) slices of the image this tile writes
    inner: tuple  # the kept region inside the model's output for `window`
    weight: np.ndarray  # h x w float32 blending weights of the kept region


def tiles(height, width, tile=512, margin=32, blend=16, align=1):
    """The tiles that cover an H x W image, for tiled_apply here and Denoiser's on-device loop alike.

    `align`: each window starts at a multiple of it, so a model that downsamples by `align` sees the same
    pixel grid as on the whole image. Kept regions are nearly equal (spans()); a window is its kept region
    plus `margin` on each side that is not the image's border (plus up to align - 1 pixels).
    """
    rows, columns = grid(height, width, tile, margin, blend)
    for y, h in rows:
        for x, w in columns:
            y0, x0 = max(0, y - margin), max(0, x - margin)
            y0, x0 = y0 - y0 % align, x0 - x0 % align
            y1, x1 = min(height, y + h + margin), min(width, x + w + margin)
            wy = ramp(h, blend if y > 0 else 0, blend if y + h < height else 0)
            wx = ramp(w, blend if x > 0 else 0, blend if x + w < width else 0)
            yield Tile((slice(y0, y1), slice(x0, x1)), (slice(y, y + h), slice(x, x + w)),
                       (slice(y - y0, y - y0 + h), slice(x - x0, x - x0 + w)), wy[:, None] * wx[None, :])


def tiled_apply(image, fn, tile=512, margin=32, blend=16, out=None, align=1):
    """Apply fn (N x C x h x w float32 -> same shape) to an H x W x C float image, tile by tile.

    `out` may be a preallocated H x W x C float32 array (e.g. a memory map) to bound memory further;
    `align` as in tiles().
    """
    height, width, channels = image.shape
    parts = list(tiles(height, width, tile, margin, blend, align))
    if len(parts) == 1:  # one window, the whole image: no weights to blend
        result = fn(np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32))[0].transpose(1, 2, 0)
        result = result.astype(np.float32, copy=False)
        if out is None:
            return result
        out[...] = result
        return out
    out = np.zeros((height, width, channels), dtype=np.float32) if out is None else out
    norm = np.zeros((height, width, 1), dtype=np.float32)
    for t in parts:
        patch = np.ascontiguousarray(image[t.window].transpose(2, 0, 1)[None], dtype=np.float32)
        result = fn(patch)[0].transpose(1, 2, 0)[t.inner]
        out[t.keep] += result * t.weight[..., None]
        norm[t.keep] += t.weight[..., None]
    out /= norm
    return out
