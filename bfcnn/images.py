"""Reading and writing images: the one place the project decodes and encodes image files.

Pillow decodes 8-bit images of every supported format (gray, RGB, RGBA, palette, CMYK, ...) and 16-bit gray;
16-bit colour PNGs (which Pillow would cut to 8 bits) go through OpenCV, and 16-bit or float TIFFs through
tifffile. EXIF orientation is applied on every path. `read_pixels` keeps the file's own integer type
(uint8 or uint16), so that datasets can hold many images in memory at a quarter of the float size, and
`denoise` can write a result back in the type it came in; `write_pixels` is its counterpart.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .errors import BfcnnError

log = logging.getLogger("bfcnn")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".tif", ".tiff", ".bmp", ".webp"}
PIL_MODES = {"rgb": "RGB", "grayscale": "L", "gray": "L", "rgba": "RGBA"}
COLOR_CHANNELS = {"rgb": 3, "grayscale": 1, "gray": 1, "rgba": 4}
PIL_16BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
# real photos that scikit-image ships (no download): the quick start trains on the colour ones
COLOR_SAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle")
SAMPLE_PHOTOS = COLOR_SAMPLE_PHOTOS + ("camera",)
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, what Pillow's convert("L") uses
ORIENTATION_TAG = 0x0112


class ImageReadError(BfcnnError, OSError):
    """A file that is not a readable image (zero bytes, truncated, corrupt, not an image at all): bad input,
    so where nothing catches it the CLI says so in a line with exit code 2."""


def visible_files(folder) -> list[Path]:
    """Files under `folder`, recursively, sorted; hidden files and folders are left out."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def find_images(folder) -> list[Path]:
    """Image files under `folder` (by suffix), recursively, sorted; hidden files and folders are left out."""
    return [p for p in visible_files(folder) if p.suffix.lower() in IMAGE_SUFFIXES]


def png_header(path):
    """(bit depth, colour type) from a PNG's IHDR chunk, or None if the file is not a PNG."""
    with open(path, "rb") as f:
        head = f.read(29)
    if len(head) < 29 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def bit_depth(path) -> int:
    """Bits per sample of an image file: 8, 16 (16-bit PNG/TIFF/gray) or 32 (float TIFF)."""
    path = Path(path)
    header = png_header(path)
    if header is not None:
        return 16 if header[0] == 16 else 8
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            bits = page.bitspersample
            return 32 if page.dtype is not None and page.dtype.kind == "f" else (16 if bits > 8 else 8)
    with Image.open(path) as image:
        return 16 if image.mode in PIL_16BIT_MODES[:5] else 32 if image.mode == "F" else 8


def orient(array: np.ndarray, orientation) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an H x W x C array, as Pillow's exif_transpose does."""
    if orientation == 2:
        return array[:, ::-1]
    if orientation == 3:
        return array[::-1, ::-1]
    if orientation == 4:
        return array[::-1]
    if orientation == 5:
        return array.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(array, -1)
    if orientation == 7:
        return array.transpose(1, 0, 2)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(array, 1)
    return array


def exif_orientation(path) -> int:
    try:
        with Image.open(path) as image:
            return int(image.getexif().get(ORIENTATION_TAG, 1))
    except Exception:  # no EXIF, or a file Pillow cannot open at all: nothing to rotate
        return 1


def convert_channels(array: np.ndarray, color_mode) -> np.ndarray:
    """H x W x C (C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA) to the channels of `color_mode`, same dtype.
    color_mode None keeps the channels as they are."""
    if color_mode is None:
        return array
    wanted = COLOR_CHANNELS[color_mode]
    channels = array.shape[2]
    if channels == wanted:
        return array
    color = array[..., :3] if channels >= 3 else array[..., :1]
    alpha = array[..., channels - 1:] if channels in (2, 4) else None
    if wanted == 1:
        if color.shape[2] == 1:
            return color
        gray = color.astype(np.float32) @ LUMA
        if array.dtype.kind in "ui":
            gray = np.clip(np.round(gray), 0, np.iinfo(array.dtype).max)
        return gray.astype(array.dtype)[..., None]
    if color.shape[2] == 1:
        color = np.repeat(color, 3, axis=2)
    if wanted == 3:
        return color
    if alpha is None:
        alpha = np.full(color.shape[:2] + (1,), np.iinfo(array.dtype).max if array.dtype.kind in "ui" else 1,
                        dtype=array.dtype)
    return np.concatenate([color, alpha], axis=2)


def _as_hwc(array: np.ndarray) -> np.ndarray:
    return array[..., None] if array.ndim == 2 else array


def stored_mode(image) -> str:
    """The Pillow mode that keeps what a file holds: L, LA, RGB or RGBA (palette, CMYK, 1-bit, ... converted)."""
    if image.mode in ("L", "LA", "RGB", "RGBA"):
        return image.mode
    if image.mode == "1":
        return "L"
    if image.mode == "P":
        return "RGBA" if "transparency" in image.info else "RGB"
    return "RGBA" if "A" in image.mode or "a" in image.mode else "RGB"


def _read_pillow(path, color_mode) -> np.ndarray:
    with Image.open(path) as image:
        image.load()
        image = ImageOps.exif_transpose(image)
        if image.mode in PIL_16BIT_MODES:  # 16-bit (or 32-bit int / float) gray: keep the precision
            array = np.asarray(image)
            if image.mode == "F":
                array = np.clip(array.astype(np.float32), 0, 1)
            else:
                array = np.clip(array, 0, 65535).astype(np.uint16)
            return convert_channels(array[..., None], color_mode)
        wanted = PIL_MODES[color_mode] if color_mode else stored_mode(image)
        if image.mode != wanted:
            if image.mode == "P" and "transparency" in image.info:
                image = image.convert("RGBA")
            if image.mode == "LA" and color_mode == "rgba":
                image = image.convert("RGBA")
            image = image.convert(wanted)
        return _as_hwc(np.asarray(image))


def _read_png16(path, color_mode, colour_type) -> np.ndarray:
    import cv2

    with Image.open(path) as image:  # CRC check of every chunk: catches truncated and corrupt files
        image.verify()
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ImageReadError(f"OpenCV cannot decode {path}")
    array = _as_hwc(array)
    if colour_type == 4:  # gray + alpha, which OpenCV expands to BGRA
        array = array[..., [0, 3]]
    elif array.shape[2] >= 3:  # OpenCV gives BGR(A)
        array = np.concatenate([array[..., 2::-1], array[..., 3:]], axis=2)
    return convert_channels(np.ascontiguousarray(orient(array, exif_orientation(path))), color_mode)


def _read_tiff(path, color_mode):
    """16-bit and float TIFFs through tifffile; None when Pillow reads the file as well (8-bit, CMYK, ...)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        if page.bitspersample <= 8 and page.dtype is not None and page.dtype.kind != "f":
            return None
        if page.photometric not in (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB):
            return None
        array = page.asarray()
    if array.ndim == 3 and array.shape[0] in (1, 2, 3, 4) and array.shape[2] not in (1, 2, 3, 4):
        array = array.transpose(1, 2, 0)  # planar configuration
    array = _as_hwc(array)
    if array.dtype.kind == "f":
        array = np.clip(array.astype(np.float32), 0, 1)
    elif array.dtype != np.uint16:
        array = (array.astype(np.float64) / np.iinfo(array.dtype).max * 65535).round().astype(np.uint16)
    return convert_channels(np.ascontiguousarray(orient(array, exif_orientation(path))), color_mode)


def read_pixels(path, color_mode="rgb") -> np.ndarray:
    """H x W x C in the file's own type: uint8 for 8-bit images, uint16 for 16-bit ones, float32 in [0, 1]
    for float TIFFs. Channels converted to `color_mode` (None: as stored, 1 gray, 2 gray + alpha, 3 RGB or
    4 RGBA), EXIF orientation applied. Raises ImageReadError for anything that is not a readable image."""
    path = Path(path)
    if color_mode is not None and color_mode not in PIL_MODES:
        raise ValueError(f"color_mode must be one of {', '.join(PIL_MODES)}, got {color_mode!r}")
    try:
        if not path.is_file():
            raise ImageReadError("no such file" if not path.exists() else "not a file")
        if path.stat().st_size == 0:
            raise ImageReadError("empty file (0 bytes)")
        header = png_header(path)
        if header is not None and header[0] == 16 and header[1] in (2, 4, 6):
            return _read_png16(path, color_mode, header[1])
        if path.suffix.lower() in (".tif", ".tiff"):
            array = _read_tiff(path, color_mode)
            if array is not None:
                return array
        return _read_pillow(path, color_mode)
    except ImageReadError:
        raise
    except Exception as error:  # Pillow, OpenCV and tifffile raise many kinds for bad files
        raise ImageReadError(f"{type(error).__name__}: {error}") from error


def to_float(array: np.ndarray) -> np.ndarray:
    """uint8 / uint16 / float pixels to float32 in [0, 1]."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) * np.float32(1 / 255)
    if array.dtype == np.uint16:
        return array.astype(np.float32) * np.float32(1 / 65535)
    return array.astype(np.float32, copy=False)


def read_image(path, color_mode="rgb") -> np.ndarray:
    """H x W x C float32 in [0, 1]; EXIF orientation applied; 16-bit kept at full precision."""
    return to_float(read_pixels(path, color_mode))


def sample_photo(name, color_mode="rgb") -> np.ndarray:
    """One of SAMPLE_PHOTOS, H x W x C uint8 with the channels of `color_mode`."""
    from skimage import data

    array = getattr(data, name)()
    array = array[0] if isinstance(array, tuple) else array  # stereo_motorcycle is a (left, right, disparity)
    return convert_channels(np.ascontiguousarray(_as_hwc(array)[..., :3], dtype=np.uint8), color_mode)


def write_back_info(path) -> dict:
    """What a processed copy of an image file keeps of its metadata: ICC profile, DPI and EXIF, the EXIF
    orientation left out (read_pixels has turned the pixels upright). Empty where Pillow cannot read the file."""
    try:
        with Image.open(path) as image:
            info = {key: image.info[key] for key in ("icc_profile", "dpi") if image.info.get(key)}
            exif = image.getexif()
            if image.mode in ("CMYK", "YCbCr", "LAB", "HSV"):  # read as RGB: the file's profile describes other
                info.pop("icc_profile", None)  # numbers, and a colour-managed viewer would misread the copy
    except Exception:  # e.g. a float TIFF only tifffile reads: nothing to keep
        return {}
    exif.pop(ORIENTATION_TAG, None)
    if len(exif):
        info["exif"] = exif.tobytes()
    return info


def write_pixels(path, array: np.ndarray, info=None):
    """Write H x W x C (or H x W) pixels, uint8, uint16 or float in [0, 1], in the format the suffix names,
    atomically: a temporary file beside it, then a rename, so a failure leaves no half-written image.

    16-bit samples stay 16-bit in PNG (gray, RGB, RGBA; gray + alpha gets 8 bits) and TIFF (float samples become
    16-bit PNG or float TIFF); other formats get 8 bits. `info` (from write_back_info) is kept where Pillow writes the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        _write(tmp, _as_hwc(np.asarray(array)), info or {}, path.suffix.lower())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write(path, array, info, suffix):
    if suffix in (".tif", ".tiff"):  # TIFF holds every sample type as it is
        import tifffile

        if array.shape[2] == 1:
            tifffile.imwrite(path, array[..., 0], photometric="minisblack")
        else:
            tifffile.imwrite(path, array, photometric="rgb" if array.shape[2] in (3, 4) else "minisblack",
                             planarconfig="contig", extrasamples=(2,) if array.shape[2] in (2, 4) else ())
        return
    if array.dtype.kind == "f":
        array = quantize(array, np.uint16 if suffix == ".png" else np.uint8)
    if array.dtype == np.uint16 and suffix == ".png" and array.shape[2] in (3, 4):
        import cv2  # Pillow cannot write 16-bit colour PNGs; OpenCV can (it wants BGR order), without metadata

        pixels = np.concatenate([array[..., 2::-1], array[..., 3:]], axis=2)
        if not cv2.imwrite(str(path), np.ascontiguousarray(pixels)):
            raise OSError(f"cannot write {path}")
        return
    if array.dtype == np.uint16 and not (suffix == ".png" and array.shape[2] == 1):
        array = np.round(array / 257.0).astype(np.uint8)  # formats (and modes) without 16-bit samples get 8
    image = Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)
    if suffix in (".jpg", ".jpeg", ".jpe", ".jfif"):
        info = {"quality": 95, **info}
        if image.mode in ("RGBA", "LA"):  # JPEG has no alpha
            image = image.convert("RGB" if image.mode == "RGBA" else "L")
    image.save(path, **info)


def quantize(array: np.ndarray, dtype) -> np.ndarray:
    """Float pixels in [0, 1] (clipped) to whole uint8 or uint16 values."""
    return np.round(np.clip(array, 0, 1) * np.iinfo(dtype).max).astype(dtype)


def write_image(path, array: np.ndarray, bit_depth=8):
    """Save H x W x C float in [0, 1] as 8-bit, or 16-bit where the format supports it (PNG, TIFF)."""
    write_pixels(path, quantize(array, np.uint16 if bit_depth == 16 else np.uint8))
