"""bfcnn.denoise: the Denoiser (dtype in = dtype out, tiled = whole image), file IO and `bfcnn denoise`."""

import sys
import types

import numpy as np
import pytest
import torch

import bfcnn
from bfcnn.checkpoint import save_model
from bfcnn.cli import main
from bfcnn.denoise import Denoiser, receptive_radius
from bfcnn.images import read_pixels, write_pixels

SPEC = {"type": "dncnn", "channels": 3, "depth": 4, "filters": 8}


def tiny_model(spec=SPEC, seed=0):
    torch.manual_seed(seed)
    model = bfcnn.build("model", spec)
    with torch.no_grad():  # a non-trivial eval-mode batch norm, with scales of a trained model's size
        for module in model.modules():
            if hasattr(module, "running_var"):
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(path, tiny_model(), SPEC)
    return path


def photo(height=150, width=190):
    from skimage import data
    return data.astronaut()[100:100 + height, 120:120 + width].copy()


def psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


def whole_image(model, x, iterations=1):
    with torch.no_grad():
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
        for _ in range(iterations):
            t = model(t)
    return t[0].numpy().transpose(1, 2, 0)


def test_receptive_radius_of_a_conv_stack():
    assert receptive_radius(tiny_model()) == 4
    assert receptive_radius(tiny_model({**SPEC, "kernel_size": 5})) == 8


class Multiscale(torch.nn.Module):
    """A model that resamples (its receptive field is not a sum of kernel radii) and needs sizes divisible by 4."""

    size_multiple = 4

    def __init__(self):
        super().__init__()
        self.pool, self.conv = torch.nn.AvgPool2d(2), torch.nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.up = torch.nn.Upsample(scale_factor=2)
        self.sizes = []

    def forward(self, x):
        self.sizes.append(tuple(x.shape[2:]))
        return x - self.up(self.conv(self.pool(x)))


def test_models_that_resample_get_a_wide_margin_and_their_size_multiple():
    model = Multiscale()
    assert receptive_radius(model) is None
    denoiser = Denoiser(model)
    assert denoiser.radius == 64 and not denoiser.exact
    image = photo(200, 230).astype(np.float32) / 255
    out = denoiser.denoise(image, tile=40, blend=8, clip=False)
    assert out.shape == image.shape
    assert model.sizes and all(h % 4 == 0 and w % 4 == 0 for h, w in model.sizes)
    whole = denoiser.denoise(image, tile=0, clip=False)
    assert abs(psnr(out, image) - psnr(whole, image)) < 0.01  # tiles start on the model's 4-pixel grid
    np.testing.assert_allclose(denoiser.denoise(image, tile=40, blend=8, clip=False, on_device=True), out, atol=1e-5)


def test_a_model_with_a_wide_view_states_a_smaller_cpu_tile_and_an_explicit_tile_wins():
    """A UNet whose context is 100+ pixels makes a 1024 tile's memory large: it states a smaller one for the CPU."""
    from bfcnn.denoise import DEFAULT_TILE

    wide = bfcnn.build("model", {"type": "drunet", "channels": 3, "filters": 4, "blocks": 2, "scales": 4})
    narrow = bfcnn.build("model", {"type": "drunet", "channels": 3, "filters": 4, "blocks": 1, "scales": 2})
    assert wide.receptive_radius > 64 >= narrow.receptive_radius
    assert Denoiser(wide).tile == wide.default_tile["cpu"] < DEFAULT_TILE["cpu"]
    assert Denoiser(narrow).tile == Denoiser(tiny_model()).tile == DEFAULT_TILE["cpu"]
    assert Denoiser(wide, tile=300).tile == 300


MULTISCALE = {
    "resnet, 3 levels, shared": {"type": "resnet", "levels": 3, "filters": 4, "no_layers": 1, "shared_weights": True},
    "gatenet, 2 levels": {"type": "gatenet", "levels": 2, "filters": 4, "no_layers": 1},
    "sparse_resnet, local normalization": {"type": "sparse_resnet", "filters": 4, "no_layers": 1,
                                          "local_normalization": 5},
    "unet, 2 levels": {"type": "unet", "levels": 2, "filters": 4, "no_layers": 1, "downsamplings": 2},
}


def randomized(spec, seed=0):
    """A model whose every weight and running statistic is random: residual branches start at zero and would
    otherwise hide what a block adds to the context."""
    torch.manual_seed(seed)
    model = bfcnn.build("model", spec)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.5 if "running" in name else torch.randn_like(tensor) * 0.3)
    return model.eval()


@pytest.mark.parametrize("name", MULTISCALE)
def test_multiscale_models_state_a_context_bound_that_holds(name):
    """The stated radius bounds the pixels an output pixel depends on (its gradient's support)."""
    model = randomized(MULTISCALE[name])
    radius = receptive_radius(model)
    size = 2 * radius + 41
    x = (torch.rand(1, 3, size, size) + 0.1).requires_grad_()
    model(x)[0, :, size // 2, size // 2].sum().backward()
    rows, cols = np.nonzero(x.grad[0].abs().sum(0).numpy())
    reach = max(np.abs(rows - size // 2).max(), np.abs(cols - size // 2).max())
    assert 0 < reach <= radius, (reach, radius)


@pytest.mark.parametrize("name", MULTISCALE)
def test_multiscale_models_tile_exactly_on_odd_sizes(name):
    """Tiles start on the pyramid's (and the pooling's) grid, with the stated context: the result is the whole
    image's. Before the up-sampling used a fixed factor of 2, odd sizes shifted the levels against each other."""
    model = randomized(MULTISCALE[name])
    denoiser = Denoiser(model)
    assert denoiser.exact and denoiser.align == model.grid
    image = photo(75, 91).astype(np.float32) / 255
    whole = whole_image(model, image)
    np.testing.assert_allclose(denoiser.denoise(image, tile=37, blend=8, clip=False), whole, atol=1e-5)
    np.testing.assert_allclose(denoiser.denoise(image, tile=37, blend=8, clip=False, on_device=True), whole, atol=1e-5)


@pytest.mark.parametrize("tile,blend", [(32, 0), (48, 8), (64, 16), (0, 16)])
def test_tiled_equals_whole_image_within_a_hundredth_of_a_db(weights, tile, blend):
    clean = photo().astype(np.float32) / 255
    noisy = clean + np.random.default_rng(0).normal(0, 25 / 255, clean.shape).astype(np.float32)
    denoiser = bfcnn.load_model(weights)
    whole = np.clip(whole_image(denoiser.module, noisy), 0, 1)
    tiled = denoiser.denoise(noisy, tile=tile, blend=blend)
    assert tiled.shape == noisy.shape and tiled.dtype == np.float32
    assert abs(psnr(tiled, clean) - psnr(whole, clean)) < 0.01
    np.testing.assert_allclose(tiled, whole, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_blending_on_the_device_equals_the_numpy_path(weights, dtype):
    """The GPU path (tiles blended with torch on the device) gives the numpy path's result; checked on the CPU."""
    rgb = photo(70, 90)
    image = {np.uint8: rgb, np.uint16: rgb.astype(np.uint16) * 257, np.float32: rgb.astype(np.float32) / 255}[dtype]
    denoiser = bfcnn.load_model(weights)
    numpy_path = denoiser.denoise(image, tile=32, on_device=False)
    device_path = denoiser.denoise(image, tile=32, on_device=True)
    assert device_path.dtype == numpy_path.dtype == dtype
    np.testing.assert_allclose(device_path.astype(np.float64), numpy_path.astype(np.float64),
                               atol=1e-5 if dtype == np.float32 else 1)


def test_too_small_a_margin_is_visible(weights):
    """The comparison above can fail: tiles without context differ from the whole image."""
    noisy = photo().astype(np.float32) / 255
    denoiser = bfcnn.load_model(weights)
    whole = whole_image(denoiser.module, noisy)
    assert np.abs(denoiser.denoise(noisy, tile=32, margin=0, blend=0, clip=False) - whole).max() > 1e-3


def test_iterations_apply_the_model_repeatedly(weights):
    noisy = photo(90, 70).astype(np.float32) / 255
    denoiser = bfcnn.load_model(weights)
    twice = denoiser.denoise(noisy, iterations=2, tile=32, clip=False)
    np.testing.assert_allclose(twice, whole_image(denoiser.module, noisy, 2), atol=1e-4)
    assert np.abs(twice - denoiser.denoise(noisy, tile=32, clip=False)).max() > 1e-3


def test_dtypes_and_shapes_are_kept(weights):
    denoiser = bfcnn.load_model(weights)
    rgb8 = photo(40, 50)
    reference = denoiser.denoise(rgb8.astype(np.float32) / 255, tile=0)
    out8 = denoiser.denoise(rgb8)
    assert out8.dtype == np.uint8 and out8.shape == rgb8.shape
    np.testing.assert_array_equal(out8, np.round(reference * 255).astype(np.uint8))
    rgb16 = rgb8.astype(np.uint16) * 257
    out16 = denoiser.denoise(rgb16)
    assert out16.dtype == np.uint16
    assert np.abs(out16.astype(float) / 65535 - reference).max() < 1e-4
    assert len(np.unique(out16 % 257)) > 1  # full 16-bit precision, not 8-bit values scaled up
    out64 = denoiser.denoise(rgb8.astype(np.float64) / 255)
    assert out64.dtype == np.float64
    gray = denoiser.denoise(rgb8[..., 0])
    assert gray.shape == rgb8.shape[:2] and gray.dtype == np.uint8
    rgba = np.concatenate([rgb8, np.full(rgb8.shape[:2] + (1,), 77, np.uint8)], axis=2)
    out = denoiser.denoise(rgba)
    assert out.shape == rgba.shape and (out[..., 3] == 77).all()
    np.testing.assert_array_equal(out[..., :3], out8)
    with pytest.raises(bfcnn.BfcnnError):
        denoiser.denoise(rgb8.astype(np.int32))


def test_gray_model_denoises_color_channel_by_channel():
    model = tiny_model({**SPEC, "channels": 1})
    denoiser = Denoiser(model)
    rgb = photo(30, 40).astype(np.float32) / 255
    out = denoiser.denoise(rgb, clip=False)
    for c in range(3):
        np.testing.assert_allclose(out[..., c:c + 1], whole_image(model, rgb[..., c:c + 1]), atol=1e-5)


def test_load_model_gives_a_denoiser_that_is_still_the_module(weights):
    denoiser = bfcnn.load_model(weights)
    assert isinstance(denoiser.module, torch.nn.Module) and denoiser.module.bias_free
    x = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(denoiser(x), denoiser.module(x))
    assert set(denoiser.state_dict()) == set(denoiser.module.state_dict())
    with pytest.raises(bfcnn.BfcnnError, match="no model"):
        bfcnn.load_model(weights.parent / "missing.safetensors")


@pytest.mark.parametrize("name,dtype,channels", [
    ("a.tif", np.uint16, 3), ("b.tiff", np.uint8, 1), ("c.png", np.uint16, 3), ("d.png", np.uint8, 4),
    ("e.png", np.uint16, 1), ("f.jpg", np.uint8, 3), ("g.tif", np.float32, 3), ("h.png", np.uint8, 2),
    ("i.tif", np.uint16, 4), ("j.webp", np.uint8, 3)])
def test_read_write_round_trip(tmp_path, name, dtype, channels):
    rng = np.random.default_rng(0)
    if dtype == np.float32:
        array = rng.random((12, 17, channels), dtype=np.float32)
    else:
        array = rng.integers(0, np.iinfo(dtype).max + 1, (12, 17, channels)).astype(dtype)
    if name.endswith((".jpg", ".webp")):
        array = np.repeat(np.repeat(photo(6, 9), 2, 0), 2, 1)[:12, :17]
    write_pixels(tmp_path / name, array)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left beside it
    back = read_pixels(tmp_path / name, None)
    assert back.dtype == array.dtype and back.shape == array.shape
    if name.endswith((".jpg", ".webp")):
        assert np.abs(back.astype(int) - array).mean() < 6
    else:
        np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_cli_turns_exif_rotated_photos_upright_and_keeps_their_metadata(tmp_path, weights, suffix):
    from PIL import Image, ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the camera was turned, the viewer turns the pixels 90 degrees clockwise
    exif[0x010F] = "bfcnn-test-camera"  # Make
    source = tmp_path / f"turned{suffix}"
    Image.fromarray(photo(24, 40)).save(source, exif=exif.tobytes(), icc_profile=icc, dpi=(300, 300))
    out = tmp_path / "out"
    assert main(["denoise", str(source), "-o", str(out), "--model", str(weights), "-q"]) == 0
    assert read_pixels(out / source.name, None).shape == (40, 24, 3)  # upright, as every viewer shows it
    with Image.open(out / source.name) as result:
        assert result.size == (24, 40)
        assert result.info["icc_profile"] == icc
        assert result.getexif().get(0x010F) == "bfcnn-test-camera"
        assert 0x0112 not in result.getexif()  # turned already: a viewer must not turn it again
        assert tuple(round(v) for v in result.info["dpi"]) == (300, 300)


# ----------------------------------------------------------------------------------------------- CLI

@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    base = photo(40, 56)
    write_pixels(folder / "one.png", base)
    write_pixels(folder / "sub" / "two.jpg", base[::-1])
    write_pixels(folder / "deep16.tif", base.astype(np.uint16) * 257)
    return folder


def test_cli_files_folders_and_globs(tmp_path, images, weights, capsys):
    out = tmp_path / "out"
    assert main(["denoise", str(images), "-o", str(out), "--model", str(weights), "-q"]) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["deep16.tif", "one.png", "sub/two.jpg"]
    tif = read_pixels(out / "deep16.tif", None)
    assert tif.dtype == np.uint16 and tif.shape == (40, 56, 3)
    expected = bfcnn.load_model(weights).denoise(read_pixels(images / "one.png", None))
    np.testing.assert_array_equal(read_pixels(out / "one.png", None), expected)
    out2 = tmp_path / "out2"
    assert main(["denoise", str(images / "**" / "*.jpg"), str(images / "one.png"), "-o", str(out2), "--model",
                 str(weights), "--suffix", "_dn", "--format", "png", "--tile", "16", "--iterations", "2", "-q"]) == 0
    assert sorted(p.relative_to(out2).as_posix() for p in out2.rglob("*.png")) == ["one_dn.png", "sub/two_dn.png"]
    assert "denoised 2 of 2" in capsys.readouterr().out


def test_cli_reports_bad_files_and_carries_on(tmp_path, images, weights, capsys):
    (images / "broken.png").write_bytes(b"not an image at all")
    out = tmp_path / "out"
    assert main(["denoise", str(images), "-o", str(out), "--model", str(weights), "-q"]) == 1
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "3 of 4" in captured.out
    assert (out / "one.png").is_file() and (out / "deep16.tif").is_file() and not (out / "broken.png").exists()


def test_cli_skips_earlier_results_inside_the_input_folder(tmp_path, images, weights):
    assert main(["denoise", str(images), "-o", str(images / "denoised"), "--model", str(weights), "-q"]) == 0
    assert main(["denoise", str(images), "-o", str(images / "denoised"), "--model", str(weights), "-q"]) == 0
    assert not (images / "denoised" / "denoised").exists()
    assert sorted(p.name for p in (images / "denoised").rglob("*") if p.is_file()) == ["deep16.tif", "one.png", "two.jpg"]


def test_cli_bad_arguments_exit_2(tmp_path, images, weights, monkeypatch, capsys):
    out = str(tmp_path / "out")
    monkeypatch.setattr("bfcnn.denoise.DEFAULT_MODEL", "no_such_shipped_model")
    assert main(["denoise", str(images), "-o", out]) == 2
    assert "default model 'no_such_shipped_model' is not installed" in capsys.readouterr().err
    assert main(["denoise", str(tmp_path / "nothing_here.png"), "-o", out, "--model", str(weights)]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["denoise", str(images), "-o", str(images), "--model", str(weights)]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert main(["denoise", str(images), "-o", out, "--model", str(weights), "--iterations", "0"]) == 2
    (images / "sub" / "one.png").write_bytes((images / "one.png").read_bytes())
    assert main(["denoise", str(images / "one.png"), str(images / "sub" / "one.png"), "-o", out, "--model",
                 str(weights)]) == 2
    assert "both be written" in capsys.readouterr().err
    assert main(["denoise", str(images), "-o", out, "--model", str(weights), "--device", "nonsense"]) == 2
    assert main(["denoise", str(images), "-o", out, "--backend", "caffe"]) == 2
    assert main(["denoise", str(images), "-o", str(images / "one.png"), "--model", str(weights)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(["denoise", str(images), "-o", str(images / "one.png" / "below"), "--model", str(weights)]) == 2
    assert "a folder above it is a file" in capsys.readouterr().err  # once, not once per image
    for flag in ("--margin", "--blend", "--tile"):
        assert main(["denoise", str(images), "-o", out, "--model", str(weights), flag, "-3"]) == 2
        assert f"{flag} must be" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_onnx_backend_without_runtime_is_a_clear_error(tmp_path, images, monkeypatch, capsys):
    model_file = tmp_path / "m.onnx"
    model_file.write_bytes(b"placeholder")
    monkeypatch.setitem(sys.modules, "bfcnn.runtime", None)  # import fails as if the module were absent
    assert main(["denoise", str(images), "-o", str(tmp_path / "o"), "--backend", "onnx", "--model",
                 str(model_file), "-q"]) == 2
    assert "bfcnn.runtime" in capsys.readouterr().err
    assert main(["denoise", str(images), "-o", str(tmp_path / "o"), "--backend", "onnx"]) == 2


def test_cli_onnx_backend_calls_the_runtime(tmp_path, images, monkeypatch):
    calls = []

    def denoise_file_array(array, model_file, backend, tile=512, margin=None, blend=16):
        calls.append((array.dtype, array.shape, model_file, backend, tile, margin, blend))
        return 1 - array
    fake_runtime = types.SimpleNamespace(denoise_file_array=denoise_file_array,
                                         cached_load=lambda path, backend: types.SimpleNamespace(channels=None))
    monkeypatch.setitem(sys.modules, "bfcnn.runtime", fake_runtime)
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "model.onnx").write_bytes(b"placeholder")
    out = tmp_path / "o"
    assert main(["denoise", str(images / "one.png"), str(images / "deep16.tif"), "-o", str(out), "--backend",
                 "onnx", "--model", str(tmp_path), "--tile", "256", "--margin", "40", "--blend", "8", "-q"]) == 0
    assert {(c[0], c[3], c[4], c[5], c[6]) for c in calls} == {(np.dtype(np.float32), "onnx", 256, 40, 8)}
    assert calls[0][2].endswith("model.onnx")
    original = read_pixels(images / "deep16.tif", None)
    inverted = read_pixels(out / "deep16.tif", None)
    assert inverted.dtype == np.uint16
    np.testing.assert_array_equal(inverted, 65535 - original)


def test_folders_say_which_files_they_leave_out_and_named_files_are_tried(tmp_path, images, weights, caplog):
    from PIL import Image
    Image.fromarray(photo(32, 40)).save(images / "anim.gif")
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    with caplog.at_level("INFO", logger="bfcnn"):
        assert main(["denoise", str(images), "-o", str(out), "--model", str(weights), "-q"]) == 0
    assert not (out / "anim.gif").exists() and (out / "one.png").is_file()
    assert ".gif, .txt left out" in caplog.text
    assert main(["denoise", str(images / "anim.gif"), "-o", str(out), "--model", str(weights), "-q"]) == 0
    assert read_pixels(out / "anim.gif", None).shape == (32, 40, 3)


def test_hidden_folders_are_neither_denoised_nor_reported_as_left_out(tmp_path, images, weights, caplog):
    (images / ".git").mkdir()
    (images / ".git" / "config").write_text("[core]")
    with caplog.at_level("INFO", logger="bfcnn"):
        assert main(["denoise", str(images), "-o", str(tmp_path / "out"), "--model", str(weights), "-q"]) == 0
    assert "left out" not in caplog.text


def png_16bit_gray_alpha(path, array):
    """Write H x W x 2 uint16 as a 16-bit gray + alpha PNG (colour type 4), which neither Pillow nor OpenCV write."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    h, w, _ = array.shape
    rows = b"".join(b"\0" + array[y].astype(">u2").tobytes() for y in range(h))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 4, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_16_bit_gray_alpha_png_reads_as_two_channels(tmp_path):
    array = np.random.default_rng(0).integers(0, 65536, (5, 7, 2)).astype(np.uint16)
    png_16bit_gray_alpha(tmp_path / "la.png", array)
    np.testing.assert_array_equal(read_pixels(tmp_path / "la.png", None), array)
    assert read_pixels(tmp_path / "la.png", "rgb").shape == (5, 7, 3)


def test_a_cmyk_photo_loses_its_cmyk_profile_when_written_as_rgb(tmp_path, weights):
    from PIL import Image, ImageCms

    from bfcnn.images import write_back_info
    cmyk = Image.fromarray(photo(16, 20)).convert("CMYK")
    cmyk.save(tmp_path / "c.jpg", icc_profile=b"not really a CMYK profile")
    assert write_back_info(tmp_path / "c.jpg").get("icc_profile") is None
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(photo(16, 20)).save(tmp_path / "r.jpg", icc_profile=srgb)
    assert write_back_info(tmp_path / "r.jpg")["icc_profile"] == srgb
