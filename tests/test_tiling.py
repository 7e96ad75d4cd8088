"""bfcnn.tiling: tiled inference equals whole-image inference when the margin covers the receptive field."""

import numpy as np
import pytest

from bfcnn.tiling import ramp, starts, tiled_apply


def box_filter(radius):
    """A numpy 'model' (N x C x h x w -> same) whose output pixel sees `radius` pixels around it, zero padded."""
    def fn(x):
        padded = np.pad(x, ((0, 0), (0, 0), (radius, radius), (radius, radius)))
        out = np.zeros_like(x)
        h, w = x.shape[2:]
        for dy in range(2 * radius + 1):
            for dx in range(2 * radius + 1):
                out += padded[:, :, dy:dy + h, dx:dx + w] * (1 + dy + 2 * dx)
        return out / (2 * radius + 1) ** 3
    return fn


@pytest.mark.parametrize("shape", [(37, 53, 3), (64, 64, 1), (5, 90, 2), (100, 31, 3)])
@pytest.mark.parametrize("tile,blend", [(16, 0), (16, 4), (24, 8), (200, 16)])
def test_tiled_equals_whole_image(shape, tile, blend):
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    fn = box_filter(2)
    whole = fn(image.transpose(2, 0, 1)[None])[0].transpose(1, 2, 0)
    tiled = tiled_apply(image, fn, tile=tile, margin=2, blend=blend)
    assert tiled.shape == image.shape and tiled.dtype == np.float32
    np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-5)


def test_too_small_a_margin_shows_seams():
    """The check above can fail: without enough context the tiles' borders differ from the whole image."""
    image = np.random.default_rng(1).random((60, 60, 1), dtype=np.float32)
    fn = box_filter(3)
    whole = fn(image.transpose(2, 0, 1)[None])[0].transpose(1, 2, 0)
    tiled = tiled_apply(image, fn, tile=20, margin=0, blend=0)
    assert np.abs(tiled - whole).max() > 1e-3


@pytest.mark.parametrize("tile,blend", [(7, 3), (10, 0), (13, 6), (64, 16)])
def test_blend_weights_sum_to_one(tile, blend):
    image = np.random.default_rng(2).random((41, 29, 3), dtype=np.float32)
    out = tiled_apply(image, lambda x: x.copy(), tile=tile, margin=1, blend=blend)
    np.testing.assert_allclose(out, image, rtol=1e-6, atol=1e-6)


def test_preallocated_output_memmap(tmp_path):
    image = np.random.default_rng(3).random((33, 47, 3), dtype=np.float32)
    out = np.lib.format.open_memmap(tmp_path / "out.npy", mode="w+", dtype=np.float32, shape=image.shape)
    result = tiled_apply(image, lambda x: 2 * x, tile=16, margin=0, blend=4, out=out)
    assert result is out
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), 2 * image, rtol=1e-6)


def test_uint8_input_is_read_as_float_tiles():
    image = np.random.default_rng(4).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    seen = []

    def fn(x):
        seen.append(x.dtype)
        return x / 255.0
    out = tiled_apply(image, fn, tile=8, margin=2, blend=2)
    assert set(seen) == {np.dtype(np.float32)}
    np.testing.assert_allclose(out, image / 255.0, atol=1e-6)


def test_tile_starts_cover_the_image():
    for size in (1, 15, 16, 17, 100, 513):
        points = starts(size, 16, 12)
        assert points[0] == 0 and points[-1] == max(0, size - 16)
        assert all(b - a <= 12 for a, b in zip(points, points[1:]))
    w = ramp(10, 4, 4)
    assert w.min() > 0 and w.max() == 1


def test_aligned_tiles_start_on_the_grid():
    image = np.arange(50 * 70, dtype=np.float32).reshape(50, 70, 1)  # a pixel's value names its position
    corners = []

    def fn(x):
        corners.append(divmod(int(x[0, 0, 0, 0]), 70))
        return x
    out = tiled_apply(image, fn, tile=16, margin=5, blend=4, align=8)
    np.testing.assert_allclose(out, image, rtol=1e-6)
    assert len(corners) > 4 and all(y % 8 == 0 and x % 8 == 0 for y, x in corners)
    corners.clear()
    tiled_apply(image, fn, tile=16, margin=5, blend=4)
    assert any(y % 8 or x % 8 for y, x in corners)  # without align they do not
