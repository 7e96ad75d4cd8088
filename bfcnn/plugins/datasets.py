"""Built-in datasets. A dataset has `batches(seed, rank=0, world_size=1)`, an endless iterator of clean
float32 N x C x H x W crops in [0, 1], `validation_images()`, a list of 1 x C x H x W tensors, `channels`,
`batch_size`, `len()` (training images) and `summary()` (counts for the run summary)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from bfcnn import hookimpl
from bfcnn.errors import BfcnnError
from bfcnn.images import find_images, read_image

log = logging.getLogger("bfcnn")
CHANNELS = {"rgb": 3, "grayscale": 1, "gray": 1, "rgba": 4}
SAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle")


class InMemoryCrops:
    """Images held in memory, random crops with flips drawn from a seeded numpy generator."""

    def __init__(self, images, batch_size=16, input_shape=(64, 64), validation=(), random_up_down=True,
                 random_left_right=True, skipped=0):
        self.images, self.validation = list(images), list(validation)
        if not self.images:
            raise BfcnnError("the dataset holds no usable training image")
        self.channels = self.images[0].shape[2]
        self.batch_size, self.crop = batch_size, tuple(input_shape[:2])
        self.flips = (random_up_down, random_left_right)
        self.skipped = skipped

    def __len__(self):
        return len(self.images)

    def crop_one(self, image, rng):
        h, w = self.crop
        if image.shape[0] < h or image.shape[1] < w:  # too small: reflect-pad up to the crop
            pad = ((0, max(0, h - image.shape[0])), (0, max(0, w - image.shape[1])), (0, 0))
            image = np.pad(image, pad, mode="reflect" if min(image.shape[:2]) > 1 else "edge")
        top = rng.integers(0, image.shape[0] - h + 1)
        left = rng.integers(0, image.shape[1] - w + 1)
        crop = image[top:top + h, left:left + w]
        if self.flips[0] and rng.random() < 0.5:
            crop = crop[::-1]
        if self.flips[1] and rng.random() < 0.5:
            crop = crop[:, ::-1]
        return crop

    def batches(self, seed, rank=0, world_size=1):
        rng = np.random.default_rng([seed, rank])
        mine = self.images[rank::world_size] or self.images
        while True:
            picks = rng.integers(0, len(mine), self.batch_size)
            batch = np.stack([self.crop_one(mine[i], rng) for i in picks])
            yield torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))

    def validation_images(self):
        return [torch.from_numpy(np.ascontiguousarray(v.transpose(2, 0, 1)))[None] for v in self.validation]

    def summary(self):
        return {"images": len(self.images), "validation_images": len(self.validation), "skipped_files": self.skipped}


def load_folder(folder, color_mode):
    folder = Path(folder)
    if not folder.is_dir():
        raise BfcnnError(f"dataset folder not found: {folder}")
    images, skipped = [], 0
    for path in find_images(folder):
        try:
            images.append(read_image(path, color_mode))
        except Exception as error:  # unreadable, truncated or not an image at all
            log.warning("skipping %s: %s", path, error)
            skipped += 1
    if not images:
        raise BfcnnError(f"no usable image in {folder}")
    return images, skipped


def image_folder(directory, color_mode="rgb", batch_size=16, input_shape=(64, 64, 3), validation_split=0.0,
                 validation_directory=None, min_value=0, max_value=255, random_up_down=True, random_left_right=True):
    folders = directory if isinstance(directory, list) else [directory]
    images, skipped = [], 0
    for folder in folders:
        found, bad = load_folder(folder, color_mode)
        images += found
        skipped += bad
    validation = []
    if validation_directory:
        validation, bad = load_folder(validation_directory, color_mode)
        skipped += bad
    elif validation_split > 0:
        count = max(1, int(len(images) * validation_split))
        validation, images = images[-count:], images[:-count]
    return InMemoryCrops(images, batch_size, input_shape, validation, random_up_down, random_left_right, skipped)


def sample_images(color_mode="rgb", batch_size=8, input_shape=(64, 64, 3), validation_images=1):
    """Real photos that scikit-image ships: the embedded default, no download."""
    from skimage import data

    arrays = []
    for name in SAMPLE_PHOTOS:
        array = getattr(data, name)()
        array = (array[0] if isinstance(array, tuple) else array).astype(np.float32) / 255.0
        array = array[..., None] if array.ndim == 2 else array[..., :3]
        if color_mode in ("grayscale", "gray"):
            array = array.mean(axis=2, keepdims=True)
        elif array.shape[2] == 1:
            array = np.repeat(array, 3, axis=2)
        arrays.append(array)
    return InMemoryCrops(arrays[validation_images:], batch_size, input_shape, arrays[:validation_images])


SHAPE = {"type": "array", "minItems": 2, "maxItems": 3, "items": {"type": ["integer", "string"]}}
COMMON = {
    "color_mode": {"enum": ["rgb", "grayscale", "gray", "rgba"], "default": "rgb"},
    "batch_size": {"type": "integer", "minimum": 1},
    "input_shape": {**SHAPE, "description": "random crop size (height, width[, channels])"},
}


@hookimpl
def register_datasets(register):
    register("image_folder", image_folder, {
        "type": "object", "additionalProperties": False, "required": ["directory"],
        "properties": {
            **COMMON,
            "directory": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]},
            "validation_split": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
            "validation_directory": {"type": "string"},
            "min_value": {"type": "number"}, "max_value": {"type": "number"},
            "random_up_down": {"type": "boolean"}, "random_left_right": {"type": "boolean"},
        },
    }, "images from folders (PNG, JPEG, TIFF, BMP, WebP), random crops")
    register("sample_images", sample_images, {
        "type": "object", "additionalProperties": False,
        "properties": {**COMMON, "validation_images": {"type": "integer", "minimum": 0}},
    }, "real photos shipped by scikit-image: the embedded default, no download")
