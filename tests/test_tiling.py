"""bfcnn.tiling: tiled inference equals whole-image inference when the margin covers the receptive field."""

import numpy as np
import pytest

from bfcnn.tiling import grid, ramp, spans, tiled_apply, tiles


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


def test_spans_are_equal_and_overlap_by_the_blend_band():
    for tile, blend in ((16, 4), (7, 3), (10, 0), (13, 6), (512, 16), (20, 19)):
        for size in range(1, 1200):
            points = spans(size, tile, blend)
            lengths = {length for _, length in points}
            assert points[0][0] == 0 and sum(points[-1]) == size and len(lengths) == 1
            assert len(points) == 1 or lengths.pop() <= tile + blend
            overlaps = [a + n - b for (a, n), (b, _) in zip(points, points[1:])]
            assert all(blend <= o <= blend + 1 for o in overlaps), (size, tile, blend, points)
            assert len(points) == max(1, -(-(size - blend) // tile))  # the fewest regions of at most tile + blend
    assert spans(1024, 512, 16) == [(0, 520), (504, 520)]
    w = ramp(10, 4, 4)
    assert w.min() > 0 and w.max() == 1


def processed(height, width, tile, margin, blend, align=1):
    """Pixels the model sees over all windows, per image pixel."""
    return sum((t.window[0].stop - t.window[0].start) * (t.window[1].stop - t.window[1].start)
               for t in tiles(height, width, tile, margin, blend, align)) / (height * width)


def test_windows_overlap_only_by_margins_and_blend_bands():
    """Tiles of 512 with the shipped model's context (10 px) and the default blend (16 px): at most 15% more
    pixels than the image at any size from 600 px up (the old grid's 1024 x 1024 was 2.4 times its pixels)."""
    sizes = list(range(600, 5200, 173)) + [1024, 1025, 1040, 1041, 1536, 1553, 2048, 3634, 6000]
    worst = max(processed(h, w, 512, 10, 16) for h in sizes for w in sizes[::4])
    assert worst <= 1.15
    assert processed(1024, 1024, 512, 10, 16) < 1.08
    for tile, margin, blend, align in ((64, 7, 8, 1), (100, 20, 16, 8), (512, 40, 0, 4)):
        for h, w in ((333, 517), (1000, 250), (129, 2000)):
            ny, nx = (len(part) for part in grid(h, w, tile, margin, blend))
            bound = (1 + (ny - 1) * (blend + 1 + 2 * margin + align) / h) * (1 + (nx - 1) * (blend + 1 + 2 * margin + align) / w)
            assert processed(h, w, tile, margin, blend, align) <= bound + 1e-9


def square_grid_pixels(height, width, tile, margin, blend):
    """Window pixels of the square grid (spans() along each axis), the grid before tiles became a pixel budget."""
    def side(size):
        return sum(min(size, a + n + margin) - max(0, a - margin) for a, n in spans(size, tile, blend))
    return side(height) * side(width)


def test_a_tile_is_a_pixel_budget_not_a_side():
    """An image of at most (tile + blend)^2 pixels is one window whatever its shape; bigger ones get the grid
    whose regions fit that budget with the fewest window pixels: never more than the square grid's."""
    assert grid(866, 1155, 1024, 10, 16) == ([(0, 866)], [(0, 1155)])  # a 1 MP 4:3 photo: whole (was 2 tiles)
    assert grid(100, 9000, 1024, 10, 16) == ([(0, 100)], [(0, 9000)])  # a 0.9 MP panorama strip: whole
    assert len(list(tiles(1040, 1040, 1024, 10, 16))) == 1 and len(list(tiles(1041, 1040, 1024, 10, 16))) > 1
    rng = np.random.default_rng(3)
    for tile, margin, blend in ((512, 10, 16), (1024, 10, 16), (64, 7, 8), (33, 0, 0), (20, 5, 19)):
        for height, width in rng.integers(1, 12 * tile, (60, 2)):
            rows, columns = grid(int(height), int(width), tile, margin, blend)
            for part, size in ((rows, height), (columns, width)):  # covers the side, overlaps by the band
                assert part[0][0] == 0 and sum(part[-1]) == size and len({n for _, n in part}) == 1
                assert all(blend <= a + n - b <= blend + 1 for (a, n), (b, _) in zip(part, part[1:]))
            assert len(rows) * len(columns) == 1 or rows[0][1] * columns[0][1] <= (tile + blend) ** 2
            window_pixels = processed(int(height), int(width), tile, margin, blend) * height * width
            assert window_pixels <= square_grid_pixels(int(height), int(width), tile, margin, blend) + 1e-6


@pytest.mark.parametrize("tile,blend,margin", [(16, 4, 2), (23, 5, 3), (9, 0, 2)])
def test_tiled_equals_whole_image_at_many_sizes(tile, blend, margin):
    rng = np.random.default_rng(5)
    fn = box_filter(margin)
    for height, width in rng.integers(1, 80, (12, 2)):
        image = rng.random((height, width, 2), dtype=np.float32)
        whole = fn(image.transpose(2, 0, 1)[None])[0].transpose(1, 2, 0)
        np.testing.assert_allclose(tiled_apply(image, fn, tile=tile, margin=margin, blend=blend), whole,
                                   rtol=1e-5, atol=1e-5)


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
