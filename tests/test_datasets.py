"""Datasets and image files: the contract for every registered dataset, formats, bad files, augmentations."""

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bfcnn
from bfcnn.errors import BfcnnError, ConfigError, RunError
from bfcnn.images import bit_depth, find_images, read_image, read_pixels, write_image

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BFCNN_DATA", REPO / "../shared/data"))
needs_data = pytest.mark.skipif(not DATA.joinpath("train").exists(), reason=f"real images not found at {DATA}")


def rng(seed=0):
    return np.random.default_rng(seed)


def make_folder(path, count=4, size=(40, 50), mode="RGB", suffix=".png", seed=0):
    path.mkdir(parents=True, exist_ok=True)
    r = rng(seed)
    for i in range(count):
        shape = size + ((3,) if mode == "RGB" else ())
        Image.fromarray(r.integers(0, 256, shape, dtype=np.uint8)).convert(mode).save(path / f"img{i}{suffix}")
    return path


def spec_of(name, tmp_path):
    if name == "image_folder":
        return {"type": "image_folder", "directory": str(make_folder(tmp_path / "imgs")), "num_workers": 0}
    from bfcnn.registry import default_registries
    schema = default_registries()["dataset"].get(name).schema
    if schema.get("required"):
        pytest.skip(f"dataset {name!r} needs parameters {schema['required']} this test does not know")
    return {"type": name}


@pytest.mark.parametrize("name", bfcnn.names("dataset"))
def test_contract(name, tmp_path):
    spec = {**spec_of(name, tmp_path), "batch_size": 3, "input_shape": [24, 20, 3]}
    dataset = bfcnn.build("dataset", spec)
    batch = next(dataset.batches(0))
    assert batch.shape == (3, dataset.channels, 24, 20) and dataset.batch_size == 3 and dataset.channels == 3
    assert batch.dtype == torch.float32 and batch.device.type == "cpu"
    assert batch.min() >= 0 and batch.max() <= 1
    first = dataset.batches(5)
    second = bfcnn.build("dataset", spec).batches(5)
    for _ in range(3):
        assert torch.equal(next(first), next(second)), "same seed, same batches"
    assert not torch.equal(next(dataset.batches(5)), next(dataset.batches(6)))
    rank0, rank1 = dataset.batches(5, rank=0, world_size=2), dataset.batches(5, rank=1, world_size=2)
    assert not torch.equal(next(rank0), next(rank1))
    assert len(dataset) >= 1
    for image in dataset.validation_images():
        assert image.ndim == 4 and image.shape[:2] == (1, 3) and image.dtype == torch.float32
        assert image.min() >= 0 and image.max() <= 1
    summary = dataset.summary()
    assert summary["images"] == len(dataset) and "skipped_files" in summary


@pytest.mark.parametrize("name", bfcnn.names("dataset"))
def test_contract_grayscale(name, tmp_path):
    spec = {**spec_of(name, tmp_path), "batch_size": 2, "input_shape": [16, 16, 1]}
    dataset = bfcnn.build("dataset", spec)
    assert dataset.channels == 1 and next(dataset.batches(0)).shape == (2, 1, 16, 16)


def test_sample_images_are_real_photos():
    dataset = bfcnn.build("dataset", {"type": "sample_images", "input_shape": [32, 32, 3], "batch_size": 64})
    batch = next(dataset.batches(0))
    assert len(dataset) == 4 and len(dataset.validation_images()) == 1
    # photos: neighbouring pixels are strongly correlated, unlike noise
    a, b = batch[..., :-1].flatten(), batch[..., 1:].flatten()
    assert np.corrcoef(a.numpy(), b.numpy())[0, 1] > 0.8


# ------------------------------------------------------------------------------------------------ image files

def test_read_formats_and_modes(tmp_path):
    r = rng(1)
    rgb = r.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb).save(tmp_path / "a.bmp")
    Image.fromarray(rgb).save(tmp_path / "a.tif")
    Image.fromarray(rgb).save(tmp_path / "a.webp", lossless=True)
    for suffix in ("png", "bmp", "tif", "webp"):
        assert np.array_equal(read_pixels(tmp_path / f"a.{suffix}"), rgb), suffix
    yy, xx = np.mgrid[0:12, 0:10]
    smooth = np.stack([yy * 20, xx * 25, 255 - yy * 20], axis=2).astype(np.uint8)  # JPEG-friendly
    Image.fromarray(smooth).save(tmp_path / "a.jpg", quality=95)
    assert np.abs(read_image(tmp_path / "a.jpg") - smooth / 255).mean() < 0.03
    gray = read_image(tmp_path / "a.png", "grayscale")
    assert gray.shape == (12, 10, 1) and gray.dtype == np.float32
    expected = (rgb @ np.array([0.299, 0.587, 0.114])) / 255
    assert np.abs(gray[..., 0] - expected).max() < 1 / 255 + 1e-6
    Image.fromarray(rgb).convert("L").save(tmp_path / "g.png")
    assert read_image(tmp_path / "g.png", "rgb").shape == (12, 10, 3)
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "rgba.png")
    assert read_image(tmp_path / "rgba.png", "rgba").shape == (12, 10, 4)
    assert np.array_equal(read_pixels(tmp_path / "rgba.png", "rgb"), rgb)
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    assert read_pixels(tmp_path / "p.png").shape == (12, 10, 3)
    Image.fromarray(smooth).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    cmyk = read_image(tmp_path / "cmyk.jpg")
    assert cmyk.shape == (12, 10, 3) and np.abs(cmyk - smooth / 255).mean() < 0.05


def test_16_bit_precision_kept(tmp_path):
    r = rng(2)
    gray16 = r.integers(0, 65536, (9, 11), dtype=np.uint16)
    rgb16 = r.integers(0, 65536, (9, 11, 3), dtype=np.uint16)
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    write_image(tmp_path / "c16.png", rgb16 / 65535, bit_depth=16)
    write_image(tmp_path / "c16.tif", rgb16 / 65535, bit_depth=16)
    write_image(tmp_path / "g16.tif", gray16[..., None] / 65535, bit_depth=16)
    assert np.array_equal(read_pixels(tmp_path / "g16.png", "grayscale")[..., 0], gray16)
    assert np.array_equal(read_pixels(tmp_path / "c16.png"), rgb16)
    assert np.array_equal(read_pixels(tmp_path / "c16.tif"), rgb16)
    assert np.array_equal(read_pixels(tmp_path / "g16.tif", "grayscale")[..., 0], gray16)
    assert np.allclose(read_image(tmp_path / "c16.png"), rgb16 / 65535, atol=1e-7)
    assert [bit_depth(tmp_path / f) for f in ("g16.png", "c16.png", "c16.tif")] == [16, 16, 16]
    write_image(tmp_path / "c8.png", rgb16 / 65535)
    assert bit_depth(tmp_path / "c8.png") == 8
    gray_as_rgb = read_pixels(tmp_path / "g16.png", "rgb")
    assert gray_as_rgb.dtype == np.uint16 and gray_as_rgb.shape == (9, 11, 3)


def test_16_bit_images_train_at_full_precision(tmp_path):
    folder = tmp_path / "deep"
    make_folder(folder, count=1, size=(20, 20))  # an 8-bit image beside the 16-bit one
    levels = np.full((20, 20, 3), 1000, dtype=np.uint16)  # 1000/65535 lies between two 8-bit levels
    write_image(folder / "deep.png", levels / 65535, bit_depth=16)
    dataset = bfcnn.build("dataset", {"type": "image_folder", "directory": str(folder), "input_shape": [8, 8, 3],
                                      "batch_size": 32, "num_workers": 0})
    batch = next(dataset.batches(0))
    deep = batch[(batch - 1000 / 65535).abs().amax(dim=(1, 2, 3)) < 1e-6]
    assert len(deep) > 4  # about half the crops come from the 16-bit image, exact to float precision
    assert bit_depth(folder / "img0.png") == 8 and bit_depth(folder / "deep.png") == 16


def test_exif_orientation_applied(tmp_path):
    array = np.zeros((20, 30, 3), dtype=np.uint8)
    array[:5, :5] = 255  # a white top-left corner
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # the camera was turned: rotate 90 degrees clockwise to display
    image.save(tmp_path / "o.jpg", exif=exif, quality=100)
    read = read_image(tmp_path / "o.jpg")
    assert read.shape == (30, 20, 3)
    assert read[:5, -5:].mean() > 0.9 and read[:5, :5].mean() < 0.1  # the corner is now top-right


def test_find_images_recursive_and_filtered(tmp_path):
    make_folder(tmp_path / "a" / "b", count=2, suffix=".JPG")
    make_folder(tmp_path / "c", count=1, suffix=".tiff")
    (tmp_path / "notes.txt").write_text("not an image")
    make_folder(tmp_path / ".hidden", count=1)
    found = find_images(tmp_path)
    assert [p.name for p in found] == ["img0.JPG", "img1.JPG", "img0.tiff"]


# ------------------------------------------------------------------------------------------------ bad input

def refuse_to_open(monkeypatch, name):
    """Opening a file called `name` fails as a file without read permission does, also for root (chmod 0 does
    not stop root, and the tests may run as root)."""
    import builtins
    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and Path(file).name == name:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", guarded)


def make_bad_files(folder, monkeypatch):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero.png").write_bytes(b"")
    (folder / "text.jpg").write_text("this is not an image")
    good = Image.fromarray(rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    good.save(folder / "whole.png")
    data = (folder / "whole.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    corrupt = bytearray(data)
    corrupt[200:260] = bytes(60)  # zeroed bytes inside the compressed data: CRC mismatch
    (folder / "corrupt.png").write_bytes(bytes(corrupt))
    good.save(folder / "whole.jpg", quality=90)
    jpeg = (folder / "whole.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "locked.png").write_bytes(data)  # a whole PNG that cannot be opened
    (folder / "locked.png").chmod(0)
    refuse_to_open(monkeypatch, "locked.png")
    return ["zero.png", "text.jpg", "truncated.png", "corrupt.png", "truncated.jpg", "locked.png"]


def test_bad_files_skipped_with_one_warning_each(tmp_path, caplog, monkeypatch):
    bad = make_bad_files(tmp_path / "mixed", monkeypatch)
    with caplog.at_level(logging.WARNING, logger="bfcnn"):
        dataset = bfcnn.build("dataset", {"type": "image_folder", "directory": str(tmp_path / "mixed"),
                                          "input_shape": [32, 32, 3], "batch_size": 2, "num_workers": 0})
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == len(bad)
    for name in bad:
        assert sum(name in message for message in warned) == 1, name
    assert any("locked.png" in message and "PermissionError" in message for message in warned)
    assert len(dataset) == 2 and dataset.summary()["skipped_files"] == len(bad)
    assert next(dataset.batches(0)).shape == (2, 3, 32, 32)


def test_each_bad_file_raises_a_read_error(tmp_path, monkeypatch):
    from bfcnn.images import ImageReadError
    for name in make_bad_files(tmp_path, monkeypatch):
        with pytest.raises(ImageReadError):
            read_pixels(tmp_path / name)


def test_folder_without_usable_image_is_an_error(tmp_path, monkeypatch):
    folder = tmp_path / "bad"
    make_bad_files(folder, monkeypatch)
    for good in ("whole.png", "whole.jpg"):
        (folder / good).unlink()
    with pytest.raises(BfcnnError, match="no usable image"):
        bfcnn.build("dataset", {"type": "image_folder", "directory": str(folder)})
    (tmp_path / "empty").mkdir()
    with pytest.raises(BfcnnError, match="no usable image"):
        bfcnn.build("dataset", {"type": "image_folder", "directory": str(tmp_path / "empty")})
    with pytest.raises(BfcnnError, match="not found"):
        bfcnn.build("dataset", {"type": "image_folder", "directory": str(tmp_path / "missing")})


def test_missing_folder_stops_a_run_before_training(tmp_path):
    config = {"seed": 0, "device": "cpu", "model": {"type": "dncnn", "channels": 3, "depth": 2, "filters": 4},
              "dataset": {"type": "image_folder", "directory": str(tmp_path / "missing")},
              "train": {"total_steps": 2}}
    with pytest.raises(BfcnnError, match="not found"):
        bfcnn.run(config, tmp_path / "run")
    assert not list((tmp_path / "run").glob("*.safetensors")) and not (tmp_path / "run" / "metrics.jsonl").exists()


def test_bad_configs_are_config_errors(tmp_path):
    folder = str(make_folder(tmp_path / "imgs", count=2))
    base = {"type": "image_folder", "directory": folder}
    with pytest.raises(ConfigError, match="channel"):
        bfcnn.build("dataset", {**base, "input_shape": [32, 32, 1], "color_mode": "rgb"})
    with pytest.raises(ConfigError, match="weights"):
        bfcnn.build("dataset", {**base, "weights": [1, 2]})
    with pytest.raises(ConfigError, match=r"did you mean 'GaussianBlur'\? \(known: .*\bGaussianBlur, ") as error:
        bfcnn.build("dataset", {**base, "augmentations": [{"type": "GausianBlur"}]})
    assert "BasicTransform" not in str(error.value)  # base classes are not transforms to name
    with pytest.raises(ConfigError, match="GaussianBlur"):
        bfcnn.build("dataset", {**base, "augmentations": [{"type": "GaussianBlur", "blur_limit": "wide"}]})
    with pytest.raises(ConfigError, match="input_shape"):
        bfcnn.build("dataset", {**base, "input_shape": ["?", "?", 3]})


# ------------------------------------------------------------------------------------------------ crops

def constant_folder(path, value, count=2, size=(60, 70)):
    path.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(np.full(size + (3,), value, dtype=np.uint8)).save(path / f"c{i}.png")
    return str(path)


def test_small_images_padded_or_upscaled(tmp_path):
    folder = tmp_path / "small"
    make_folder(folder, count=2, size=(10, 7))
    Image.fromarray(np.full((1, 1, 3), 200, np.uint8)).save(folder / "dot.png")
    for policy in ("pad", "upscale"):
        dataset = bfcnn.build("dataset", {"type": "image_folder", "directory": str(folder), "small_images": policy,
                                          "input_shape": [32, 48, 3], "batch_size": 6, "random_rotate": 0.3,
                                          "num_workers": 0})
        batch = next(dataset.batches(0))
        assert batch.shape == (6, 3, 32, 48) and dataset.summary()["enlarged_images"] == 3


def test_rotation_leaves_no_empty_corners(tmp_path):
    dataset = bfcnn.build("dataset", {"type": "image_folder", "directory": constant_folder(tmp_path / "c", 153),
                                      "input_shape": [40, 40, 3], "random_rotate": 0.6, "batch_size": 8,
                                      "num_workers": 0})
    batch = next(dataset.batches(0))
    assert torch.allclose(batch, torch.full_like(batch, 153 / 255), atol=1.5 / 255)  # no black corners


@pytest.mark.parametrize("h, w, radians", [(40, 40, 0.314), (128, 64, 0.6), (32, 96, 1.2), (50, 50, 3.0)])
def test_rotation_margin_covers_every_angle(h, w, radians):
    from bfcnn.plugins.datasets import rotation_margin
    need_h, need_w = rotation_margin(h, w, radians)
    corners = np.array([[w / 2, h / 2], [-w / 2, h / 2]])
    for angle in np.linspace(-radians, radians, 101):
        c, s = np.cos(angle), np.sin(angle)
        turned = corners @ np.array([[c, s], [-s, c]])
        assert np.abs(turned[:, 0]).max() <= need_w / 2 + 1e-9 and np.abs(turned[:, 1]).max() <= need_h / 2 + 1e-9
    assert need_h < h + w + 3 and need_w < h + w + 3


def test_rotation_flips_and_invert_change_crops(tmp_path):
    folder = str(make_folder(tmp_path / "imgs", count=1, size=(64, 64)))
    base = {"type": "image_folder", "directory": folder, "input_shape": [64, 64, 3], "batch_size": 16,
            "random_up_down": False, "random_left_right": False, "num_workers": 0}
    plain = next(bfcnn.build("dataset", base).batches(0))
    assert torch.equal(plain, plain[:1].expand_as(plain))  # a 64 x 64 crop of a 64 x 64 image: always the image
    flipped = next(bfcnn.build("dataset", {**base, "random_left_right": True}).batches(0))
    assert any(torch.equal(f, plain[0].flip(-1)) for f in flipped) and any(torch.equal(f, plain[0]) for f in flipped)
    inverted = next(bfcnn.build("dataset", {**base, "random_invert": True}).batches(0))
    assert any(torch.allclose(f, 1 - plain[0]) for f in inverted) and any(torch.equal(f, plain[0]) for f in inverted)


def test_extra_albumentations_by_their_own_names(tmp_path):
    base = {"type": "image_folder", "directory": constant_folder(tmp_path / "c", 51), "input_shape": [16, 16, 3],
            "batch_size": 4, "num_workers": 0}
    batch = next(bfcnn.build("dataset", {**base, "augmentations": [{"type": "InvertImg", "p": 1.0}]}).batches(0))
    assert torch.allclose(batch, torch.full_like(batch, 204 / 255))
    nested = {"type": "OneOf", "transforms": [{"type": "InvertImg", "p": 1.0}], "p": 1.0}
    batch = next(bfcnn.build("dataset", {**base, "augmentations": [nested]}).batches(0))
    assert torch.allclose(batch, torch.full_like(batch, 204 / 255))
    gray_as_rgb = {"type": "ToGray", "num_output_channels": 3, "p": 1.0}  # keeps the 3 channels: allowed
    assert next(bfcnn.build("dataset", {**base, "augmentations": [gray_as_rgb]}).batches(0)).shape == (4, 3, 16, 16)


def count_calls(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)
    monkeypatch.setattr(module, name, counted)
    return calls


@pytest.mark.parametrize("augmentation, message", [
    ({"type": "GausianBlur"}, r"augmentations\[0\]\.type: 'GausianBlur' .* did you mean 'GaussianBlur'"),
    ({"type": "GaussianBlur", "blur_limit": "wide"}, r"augmentations\[0\]: GaussianBlur: .*blur_limit"),
    ({"type": "OneOf", "transforms": [{"type": "Blur"}, {"type": "Blurr"}]}, r"transforms\[1\]\.type: 'Blurr'"),
])
def test_bad_augmentation_reported_before_any_image_is_read(tmp_path, monkeypatch, augmentation, message):
    from bfcnn.plugins import datasets
    folder = tmp_path / "onebad"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"not a png")  # alone, it would be "no usable image in ..."
    reads = count_calls(monkeypatch, datasets, "read_pixels")
    with pytest.raises(ConfigError, match=message):
        bfcnn.build("dataset", {"type": "image_folder", "directory": str(folder), "augmentations": [augmentation]})
    assert reads == []
    photos = count_calls(monkeypatch, datasets, "sample_photo")
    with pytest.raises(ConfigError, match=message):
        bfcnn.build("dataset", {"type": "sample_images", "augmentations": [augmentation]})
    assert photos == []


@pytest.mark.parametrize("augmentation, message", [
    ({"type": "ToGray", "num_output_channels": 1}, r"\[0\]: ToGray changes the channels from 3 to 1"),
    ({"type": "OneOf", "transforms": [{"type": "Blur"}, {"type": "ToGray", "num_output_channels": 1}]},
     r"\[0\]\.transforms\[1\]: ToGray changes the channels from 3 to 1"),
    ({"type": "RandomSizedBBoxSafeCrop", "height": 16, "width": 16}, "RandomSizedBBoxSafeCrop needs bboxes, which "
                                                                     "bfcnn does not supply"),
    ({"type": "MaskDropout", "p": 0.1}, "MaskDropout needs mask, which bfcnn does not supply"),
    ({"type": "ToTensorV2"}, "ToTensorV2 returns a Tensor, not a NumPy image"),
    ({"type": "Normalize"}, r"Normalize changes the pixel type from uint8 to float32 and moves values outside "
                            r"\[0, 1\] \(to \[-2.12, 2.64\]\)"),
    ({"type": "Resize", "height": 8, "width": 8}, "Resize changes the crop size from 16 x 16 to 8 x 8"),
])
def test_augmentations_that_break_crops_are_config_errors_before_reading(tmp_path, monkeypatch, augmentation,
                                                                         message):
    from bfcnn.plugins import datasets
    folder = constant_folder(tmp_path / "c", 51)
    reads = count_calls(monkeypatch, datasets, "read_pixels")
    with pytest.raises(ConfigError, match=message):
        bfcnn.build("dataset", {"type": "image_folder", "directory": folder, "input_shape": [16, 16, 3],
                                "augmentations": [augmentation], "num_workers": 0})
    assert reads == []


def test_16_bit_data_checks_augmentations_on_float_crops(tmp_path, monkeypatch):
    import albumentations as A

    class ScaleFloats(A.ImageOnlyTransform):
        """Leaves 8-bit crops alone and quadruples float ones: only 16-bit data shows it wrong."""

        def apply(self, img, **params):
            return img * 4 if img.dtype.kind == "f" else img
    monkeypatch.setattr(A, "ScaleFloats", ScaleFloats, raising=False)
    eight = constant_folder(tmp_path / "eight", 51)
    spec = {"type": "image_folder", "input_shape": [16, 16, 3], "augmentations": [{"type": "ScaleFloats"}],
            "num_workers": 0}
    assert next(bfcnn.build("dataset", {**spec, "directory": eight}).batches(0)).shape == (16, 3, 16, 16)
    deep = tmp_path / "deep"
    deep.mkdir()
    write_image(deep / "deep.png", rng(4).random((30, 30, 3)), bit_depth=16)
    with pytest.raises(ConfigError, match=r"ScaleFloats moves values outside \[0, 1\]"):
        bfcnn.build("dataset", {**spec, "directory": str(deep)})


def test_float_interpolation_overshoot_is_clamped(tmp_path):
    # cubic interpolation of a noisy 16-bit image rings past [0, 1] by about 0.1: clamped, not an error
    deep = tmp_path / "deep"
    deep.mkdir()
    write_image(deep / "deep.png", (rng(5).random((40, 40, 3)) > 0.5).astype(float), bit_depth=16)
    cubic = {"type": "Affine", "rotate": [10, 30], "interpolation": 2, "p": 1.0}
    dataset = bfcnn.build("dataset", {"type": "image_folder", "directory": str(deep), "input_shape": [32, 32, 3],
                                      "augmentations": [cubic], "batch_size": 8, "num_workers": 0})
    batch = next(dataset.batches(0))
    assert batch.min() == 0 and batch.max() == 1 and ((batch > 0) & (batch < 1)).any()


def test_augmentation_gone_wrong_mid_training_is_a_run_error(tmp_path):
    import albumentations as A
    dataset = bfcnn.build("dataset", {"type": "image_folder", "directory": constant_folder(tmp_path / "c", 51),
                                      "input_shape": [16, 16, 3], "num_workers": 0})
    # what a random transform that the check saw behave could still do on a later draw
    dataset.augmenter.pipeline = A.Compose([A.RandomCrop(16, 16), A.ToGray(num_output_channels=1, p=1.0)])
    with pytest.raises(RunError, match="dataset.augmentations: a transform changes the channels from 3 to 1"):
        next(dataset.batches(0))


def test_folder_weights(tmp_path):
    white, black = constant_folder(tmp_path / "white", 255), constant_folder(tmp_path / "black", 0, count=6)
    dataset = bfcnn.build("dataset", {"type": "image_folder", "directory": [white, black], "weights": [3, 1],
                                      "input_shape": [8, 8, 3], "batch_size": 400, "num_workers": 0})
    share = next(dataset.batches(0)).mean(dim=(1, 2, 3)).gt(0.5).float().mean().item()
    assert abs(share - 0.75) < 0.07
    unweighted = bfcnn.build("dataset", {"type": "image_folder", "directory": [white, black],
                                         "input_shape": [8, 8, 3], "batch_size": 400, "num_workers": 0})
    share = next(unweighted.batches(0)).mean(dim=(1, 2, 3)).gt(0.5).float().mean().item()
    assert abs(share - 0.25) < 0.07  # 2 of 8 images are white
    assert dataset.summary()["folders"] == {white: 2, black: 6}


def test_validation_split_and_folder(tmp_path):
    folder = str(make_folder(tmp_path / "imgs", count=10))
    split = bfcnn.build("dataset", {"type": "image_folder", "directory": folder, "validation_split": 0.2})
    assert len(split) == 8 and len(split.validation_images()) == 2
    assert split.validation_images()[0].shape == (1, 3, 40, 50)
    other = str(make_folder(tmp_path / "val", count=3, size=(20, 30), seed=5))
    separate = bfcnn.build("dataset", {"type": "image_folder", "directory": folder, "validation_directory": other})
    assert len(separate) == 10 and [v.shape for v in separate.validation_images()] == [(1, 3, 20, 30)] * 3
    with pytest.raises(ConfigError):
        bfcnn.build("dataset", {"type": "image_folder", "directory": folder, "validation_directory": other,
                                "validation_split": 0.5})


def test_dataset_shape_resizes_every_image(tmp_path):
    folder = tmp_path / "sizes"
    make_folder(folder, count=1, size=(30, 40))
    make_folder(folder / "big", count=1, size=(90, 20), seed=1)
    dataset = bfcnn.build("dataset", {"type": "image_folder", "directory": str(folder), "dataset_shape": [12, 16],
                                      "input_shape": [12, 16, 3], "batch_size": 4, "random_up_down": False,
                                      "random_left_right": False, "validation_split": 0.5, "num_workers": 0})
    assert dataset.validation_images()[0].shape == (1, 3, 12, 16)
    assert dataset.summary()["enlarged_images"] == 0


def test_sharding_by_rank(tmp_path):
    folder = tmp_path / "levels"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((16, 16, 3), 40 * (i + 1), np.uint8)).save(folder / f"{i}.png")
    dataset = bfcnn.build("dataset", {"type": "image_folder", "directory": str(folder), "input_shape": [8, 8, 3],
                                      "batch_size": 64, "num_workers": 0})
    levels = [set((next(dataset.batches(0, rank, 2))[:, 0, 0, 0] * 255).round().int().tolist()) for rank in (0, 1)]
    assert levels == [{40, 120}, {80, 160}]


def test_workers_give_the_same_batches(tmp_path):
    spec = {"type": "image_folder", "directory": str(make_folder(tmp_path / "imgs", count=6)), "batch_size": 4,
            "input_shape": [24, 24, 3], "random_rotate": 0.3}
    inline = bfcnn.build("dataset", {**spec, "num_workers": 0}).batches(9)
    workers = bfcnn.build("dataset", {**spec, "num_workers": 2}).batches(9)
    expected = [next(inline) for _ in range(5)]
    for batch in expected:
        assert torch.equal(batch, next(workers))
    workers.close()
    skipped = bfcnn.build("dataset", {**spec, "num_workers": 2}).batches(9, start=3)
    assert torch.equal(next(skipped), expected[3]) and torch.equal(next(skipped), expected[4])
    skipped.close()
    assert torch.equal(next(bfcnn.build("dataset", {**spec, "num_workers": 0}).batches(9, start=2)), expected[2])


def test_seed_dataset_section_loads(tmp_path):
    folder = str(make_folder(tmp_path / "imgs", count=3, size=(80, 90)))
    config = bfcnn.load_config({"dataset": {
        "batch_size": 4, "min_value": 0, "max_value": 255, "clip_value": True, "random_blur": True,
        "color_mode": "rgb", "subsample_size": -1, "random_invert": False, "random_rotate": 0.314,
        "random_up_down": True, "random_left_right": True, "dataset_shape": [64, 96],
        "input_shape": [32, 32, 3], "additional_noise": [5, 10, 20], "multiplicative_noise": [0.1, 0.15, 0.2],
        "directory": folder}})
    dataset = bfcnn.build("dataset", {**config["dataset"], "num_workers": 0})
    assert next(dataset.batches(0)).shape == (4, 3, 32, 32)


# ------------------------------------------------------------------------------------------------ real images

@needs_data
def test_real_color_training_set():
    dataset = bfcnn.build("dataset", {"type": "image_folder", "directory": str(DATA / "train/CBSD432"),
                                      "input_shape": [128, 128, 3], "random_rotate": 0.314, "batch_size": 8,
                                      "num_workers": 0})
    assert len(dataset) == 432 and dataset.summary()["skipped_files"] == 0
    batch = next(dataset.batches(0))
    assert batch.shape == (8, 3, 128, 128) and 0.1 < batch.mean() < 0.9


@needs_data
def test_real_gray_training_set():
    dataset = bfcnn.build("dataset", {"type": "image_folder", "directory": str(DATA / "train/Train400"),
                                      "input_shape": [40, 40, 1], "batch_size": 8, "validation_split": 0.05,
                                      "num_workers": 0})
    assert len(dataset) == 380 and len(dataset.validation_images()) == 20
    assert next(dataset.batches(0)).shape == (8, 1, 40, 40)
