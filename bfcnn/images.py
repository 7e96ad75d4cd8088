"""Reading and writing images as float arrays in [0, 1] (Pillow for 8-bit formats, tifffile for 16-bit TIFF)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

log = logging.getLogger("bfcnn")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}
PIL_MODES = {"rgb": "RGB", "grayscale": "L", "gray": "L", "rgba": "RGBA"}


def find_images(folder) -> list[Path]:
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path, color_mode="rgb") -> np.ndarray:
    """H x W x C float32 in [0, 1]; EXIF orientation applied; 16-bit kept at full precision."""
    with Image.open(path) as image:
        image.load()
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I") and color_mode in ("grayscale", "gray"):
            array = np.asarray(image, dtype=np.float32) / 65535.0
            return array[..., None]
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            array = np.asarray(image, dtype=np.float32) / 65535.0
            return np.repeat(array[..., None], len(PIL_MODES[color_mode]), axis=2)
        array = np.asarray(image.convert(PIL_MODES[color_mode]), dtype=np.float32) / 255.0
    return array[..., None] if array.ndim == 2 else array


def write_image(path, array: np.ndarray, bit_depth=8):
    """Save H x W x C float in [0, 1] as 8-bit, or 16-bit where the format supports it (PNG, TIFF)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.clip(array, 0, 1)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if bit_depth == 16 and path.suffix.lower() in (".tif", ".tiff"):
        import tifffile
        tifffile.imwrite(path, np.round(array * 65535).astype(np.uint16))
        return
    if bit_depth == 16 and path.suffix.lower() == ".png" and array.ndim == 2:
        Image.fromarray(np.round(array * 65535).astype(np.uint16)).save(path)
        return
    Image.fromarray(np.round(array * 255).astype(np.uint8)).save(path)
