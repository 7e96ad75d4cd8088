"""Built-in datasets. A dataset has `batches(seed, rank=0, world_size=1)`, an endless iterator of clean
float32 N x C x H x W crops in [0, 1], `validation_images()`, a list of 1 x C x H x W tensors, `channels`,
`batch_size`, `len()` (training images) and `summary()` (counts for the run summary).

Images are decoded once (in threads) and held in memory in their own integer type (uint8: a quarter of
float32), in one flat buffer that worker processes share. Crops and augmentations are albumentations
pipelines run per crop; batch b of (seed, rank) is made from its own random stream, so the batches are the
same whatever the number of DataLoader workers, and the same on every run.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from bfcnn.registry import hookimpl
from bfcnn.errors import BfcnnError, ConfigError, RunError
from bfcnn.images import COLOR_CHANNELS, COLOR_SAMPLE_PHOTOS, find_images, read_pixels, sample_photo, to_float

log = logging.getLogger("bfcnn")
CHANNELS = COLOR_CHANNELS
MAX_LISTED_SKIPS = 20


# ---------------------------------------------------------------------------------------------- augmentation

def crop_shape(input_shape):
    if input_shape is None:
        return 64, 64
    if len(input_shape) < 2 or not all(isinstance(v, int) and v > 0 for v in input_shape[:2]):
        raise ConfigError(f"dataset.input_shape: random crops need a whole height and width, got {list(input_shape)}")
    return int(input_shape[0]), int(input_shape[1])


def rotation_margin(h, w, max_radians):
    """Size of the region that still covers an h x w crop after a rotation by up to max_radians."""
    if max_radians <= 0:
        return h, w
    angles = np.linspace(0, min(max_radians, math.pi / 2), 64)
    c, s = np.abs(np.cos(angles)), np.abs(np.sin(angles))
    return int(math.ceil((h * c + w * s).max())) + 2, int(math.ceil((w * c + h * s).max())) + 2


def albumentation(spec, where):
    """An albumentations transform from {type: ClassName, **params}; `transforms` lists nest (OneOf, ...)."""
    import albumentations as A

    from bfcnn.registry import did_you_mean

    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise ConfigError(f"{where}: an augmentation is a mapping {{type: AlbumentationsName, ...params}}")
    name = spec["type"]
    cls = getattr(A, name, None)
    known = [n for n in dir(A) if isinstance(getattr(A, n), type)  # transforms, not their base classes
             and issubclass(getattr(A, n), (A.BasicTransform, A.BaseCompose))
             and getattr(A, n).__module__ != "albumentations.core.transforms_interface" and n != "BaseCompose"]
    if name not in known:
        raise ConfigError(f"{where}.type: {name!r} is not an albumentations transform{did_you_mean(name, known)} "
                          f"(known: {', '.join(known)})")
    params = {k: v for k, v in spec.items() if k != "type"}
    if "transforms" in params:
        params["transforms"] = [albumentation(s, f"{where}.transforms[{i}]")
                                for i, s in enumerate(params["transforms"])]
    try:
        return cls(**params)
    except Exception as error:  # albumentations validates its params with pydantic
        raise ConfigError(f"{where}: {name}: {error}".splitlines()[0] + " " + " ".join(
            line.strip() for line in str(error).splitlines()[1:3]))


def leaves(specs, where="dataset.augmentations"):
    """(spec, config path) of every transform that acts on pixels, inside OneOf/SomeOf/... lists too."""
    for i, spec in enumerate(specs):
        here = f"{where}[{i}]"
        if isinstance(spec.get("transforms"), list):
            yield from leaves(spec["transforms"], f"{here}.transforms")
        else:
            yield spec, here


# Values outside [0, 1]: on the check's random crop, interpolation rings past [0, 1] by up to about 0.3 (cubic,
# Lanczos); further out, a transform rescales the values (Normalize), which is an error. In training, float crops
# (from 16-bit images) are clamped to [0, 1]: ringing at hard edges is not a mistake, and uint8 crops cannot leave.
FLOAT_SLACK = 0.5
OTHER_TARGETS = re.compile(r"\b(bboxes|masks?|keypoints|cropping_bbox)\b")


def crop_problem(out, shape, dtype, slack=None):
    """What makes an augmented crop unusable, or None: bfcnn needs a NumPy image of the crop's size, channels
    and pixel type (H x W for one channel is fine), and with `slack`, float values within it of [0, 1]."""
    if not isinstance(out, np.ndarray):
        return f"returns a {type(out).__name__}, not a NumPy image (bfcnn makes the tensors itself)"
    h, w, c = shape
    if out.ndim not in (2, 3):
        return f"returns an array of shape {out.shape}, not an H x W x C image"
    if out.shape[:2] != (h, w):
        return (f"changes the crop size from {h} x {w} to {out.shape[0]} x {out.shape[1]} "
                "(dataset.input_shape sets the crop size)")
    channels = out.shape[2] if out.ndim == 3 else 1
    if channels != c:
        return f"changes the channels from {c} to {channels} (dataset.color_mode sets the channels)"
    problems = []
    if out.dtype != dtype:
        problems.append(f"changes the pixel type from {np.dtype(dtype)} to {out.dtype}")
    if slack is not None and out.dtype.kind == "f" and out.size:
        low, high = float(out.min()), float(out.max())
        if low < -slack or high > 1 + slack:
            problems.append(f"moves values outside [0, 1] (to [{low:.3g}, {high:.3g}])")
    if problems:
        return " and ".join(problems) + "; crops must keep their pixel type and range (bfcnn scales them itself)"
    return None


def run_failure(error):
    """Why a transform failed on a plain image crop, in words."""
    target = OTHER_TARGETS.search(f"{error} {error!r}")
    if target:
        return f"needs {target.group(1)}, which bfcnn does not supply (it passes only the image)"
    return f"fails on a test crop: {type(error).__name__}: {error}"


class Augmenter:
    """Random crop (with room for the rotation), rotation, flips, inversion, then any extra albumentations."""

    def __init__(self, crop, channels=3, random_rotate=0.0, random_up_down=False, random_left_right=False,
                 random_invert=False, augmentations=()):
        self.crop = tuple(crop)
        self.channels = int(channels)
        self.random_rotate = float(random_rotate or 0)
        self.flags = (bool(random_up_down), bool(random_left_right), bool(random_invert))
        self.augmentations = list(augmentations or ())
        self.need = rotation_margin(*self.crop, self.random_rotate)
        self.pipeline = None
        self.build()  # names and parameters; each process builds its own copy when it needs one
        self.check(np.uint8)  # what the transforms do to a crop, before any image is read

    def __getstate__(self):
        return {**self.__dict__, "pipeline": None}

    def build(self):
        import albumentations as A
        import cv2

        h, w = self.crop
        steps = [A.RandomCrop(*self.need)]
        if self.random_rotate > 0:
            steps += [A.Rotate(limit=math.degrees(self.random_rotate), border_mode=cv2.BORDER_REFLECT_101, p=1.0),
                      A.CenterCrop(h, w)]
        up_down, left_right, invert = self.flags
        if up_down:
            steps.append(A.VerticalFlip(p=0.5))
        if left_right:
            steps.append(A.HorizontalFlip(p=0.5))
        steps += [albumentation(s, f"dataset.augmentations[{i}]") for i, s in enumerate(self.augmentations)]
        if invert:
            steps.append(A.InvertImg(p=0.5))
        self.pipeline = A.Compose(steps, seed=0)
        return self.pipeline

    def check(self, dtype):
        """Run every extra transform once, applied for sure (p: 1), on a random crop of `dtype`: a ConfigError
        names the first one that fails or gives back a crop that training cannot use."""
        import albumentations as A

        shape = (*self.crop, self.channels)
        r = np.random.default_rng(0)
        crop = (r.integers(0, 256, shape, dtype=np.uint8) if np.dtype(dtype) == np.uint8
                else r.random(shape, dtype=np.float32))
        for spec, where in leaves(self.augmentations):
            try:
                out = A.Compose([albumentation({**spec, "p": 1.0}, where)], seed=0)(image=crop.copy())["image"]
            except ConfigError:
                raise
            except Exception as error:  # albumentations raises many kinds; each becomes a message
                problem = run_failure(error)
            else:
                problem = crop_problem(out, shape, crop.dtype, FLOAT_SLACK)
            if problem:
                raise ConfigError(f"{where}: {spec['type']} {problem}")

    def __call__(self, images, seed):
        """Augmented crops of `images`, reproducible from `seed` (one reseed per batch: it is not free)."""
        pipeline = self.pipeline or self.build()
        pipeline.set_random_seed(seed)
        return [pipeline(image=image)["image"] for image in images]


# ---------------------------------------------------------------------------------------------- image store

def fit_for_crops(image, need, small_images):
    """Make an image at least `need` (h, w): reflect-pad it, or scale it up keeping its aspect ratio."""
    h, w = image.shape[:2]
    if h >= need[0] and w >= need[1]:
        return image, False
    if small_images == "upscale":
        import cv2
        scale = max(need[0] / h, need[1] / w)
        size = (max(need[1], math.ceil(w * scale)), max(need[0], math.ceil(h * scale)))
        out = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)
        return (out[..., None] if out.ndim == 2 else out), True
    pad = ((0, max(0, need[0] - h)), (0, max(0, need[1] - w)), (0, 0))
    mode = "symmetric" if min(h, w) == 1 else "reflect"
    return np.pad(image, pad, mode=mode), True


def resize(image, shape):
    import cv2

    h, w = int(shape[0]), int(shape[1])
    if image.shape[:2] == (h, w):
        return image
    shrink = h < image.shape[0] and w < image.shape[1]
    out = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    return out[..., None] if out.ndim == 2 else out


class ImageStore:
    """Images of one dtype in one flat tensor (shared with worker processes), addressed by index."""

    def __init__(self, arrays):
        if any(a.dtype != np.uint8 for a in arrays):
            arrays = [to_float(a) for a in arrays]
        self.dtype = arrays[0].dtype
        self.shapes = np.array([a.shape for a in arrays], dtype=np.int64)
        sizes = self.shapes.prod(axis=1)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        flat = np.empty(int(self.offsets[-1]), dtype=self.dtype)
        for array, start, size in zip(arrays, self.offsets[:-1], sizes):
            flat[start:start + size] = array.reshape(-1)
        self.flat = torch.from_numpy(flat)

    def __len__(self):
        return len(self.shapes)

    def __getitem__(self, i):
        start, end = self.offsets[i], self.offsets[i + 1]
        return self.flat.numpy()[start:end].reshape(self.shapes[i])


class CropStream(torch.utils.data.IterableDataset):
    """Endless batches of one (seed, rank): batch b is made from random stream (seed, rank, b); DataLoader
    worker k of K makes batches k, k + K, ..., which the DataLoader hands out in order."""

    def __init__(self, store, groups, weights, augmenter, batch_size, seed, rank, start=0):
        super().__init__()
        self.store, self.groups, self.weights = store, groups, weights
        self.augmenter, self.batch_size, self.seed, self.rank, self.start = augmenter, batch_size, seed, rank, start

    def batch(self, b):
        rng = np.random.default_rng([self.seed, self.rank, b])
        if len(self.groups) == 1:
            picks = self.groups[0][rng.integers(0, len(self.groups[0]), self.batch_size)]
        else:
            which = rng.choice(len(self.groups), size=self.batch_size, p=self.weights)
            picks = [self.groups[g][rng.integers(0, len(self.groups[g]))] for g in which]
        crops = self.augmenter([self.store[i] for i in picks], int(rng.integers(0, 2**31 - 1)))
        shape = (*self.augmenter.crop, self.augmenter.channels)
        for crop in crops:  # Augmenter.check saw each transform once; random ones may still differ later
            problem = crop_problem(crop, shape, self.store.dtype)
            if problem:
                raise RunError(f"dataset.augmentations: a transform {problem}")
        pixels = torch.from_numpy(np.stack(crops).reshape(len(crops), *shape)).permute(0, 3, 1, 2).contiguous()
        # float crops: interpolation overshoot clamped (see FLOAT_SLACK)
        return pixels.float().div_(255) if pixels.dtype == torch.uint8 else pixels.clamp_(0, 1)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        b, step = (info.id, info.num_workers) if info is not None else (0, 1)
        b += self.start
        while True:
            yield self.batch(b)
            b += step


def worker_init(_worker_id, fresh_process=True):
    torch.set_num_threads(1)
    if fresh_process:  # in a forked child, resizing OpenCV's inherited thread pool can deadlock
        import cv2
        cv2.setNumThreads(1)


def worker_context(method="forkserver"):
    """Worker processes start from a clean forkserver by default on Linux (spawn where there is none): a plain
    fork copies the state of OpenCV's thread pool, which can deadlock the child when the parent has used it.
    `fork` stays available (for code read from stdin, which a forkserver cannot re-import)."""
    import multiprocessing

    available = multiprocessing.get_all_start_methods()
    if method not in available:
        method = "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(["torch", "albumentations"])  # imported once, in the server
    return context


def started(iterator):
    """The loader's batches; a failure to start the workers becomes a RunError that says what to do."""
    try:
        first = next(iterator)
    except RuntimeError as error:
        raise RunError(f"the data loader's worker processes failed: {error}. Workers start by importing the "
                       "main script: a script that trains must call bfcnn under `if __name__ == \"__main__\":`; "
                       "code read from stdin needs dataset.worker_start: fork; "
                       "or set dataset.num_workers: 0") from error
    yield first
    yield from iterator


def auto_workers():
    """0 on CPU-only machines (the model competes for the same cores; first batch at once), else most cores."""
    if not torch.cuda.is_available():
        return 0
    return max(1, min(8, (os.cpu_count() or 2) - 2))


class CropDataset:
    """Training images in memory, random augmented crops; validation images kept whole."""

    def __init__(self, images, augmenter, groups=None, weights=None, batch_size=16, validation=(),
                 small_images="pad", num_workers="auto", prefetch_factor=2, pin_memory=False, summary=None,
                 worker_start="forkserver"):
        if not images:
            raise BfcnnError("the dataset holds no usable training image")
        self.augmenter = augmenter  # built, and checked on uint8 crops, before the images were read
        fitted = [fit_for_crops(image, self.augmenter.need, small_images) for image in images]
        self.enlarged = sum(changed for _, changed in fitted)
        self.store = ImageStore([image for image, _ in fitted])
        if self.store.dtype != np.uint8:  # 16-bit images are held as float32: check the transforms on those too
            self.augmenter.check(self.store.dtype)
        self.groups = [np.arange(len(images))] if groups is None else [np.asarray(g, dtype=np.int64) for g in groups]
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64) / float(np.sum(weights))
        self.channels = int(images[0].shape[2])
        self.batch_size = int(batch_size)
        self.validation = [to_float(v) for v in validation]
        self.num_workers = auto_workers() if num_workers in (None, "auto") else int(num_workers)
        self.prefetch_factor, self.pin_memory = int(prefetch_factor), bool(pin_memory)
        self.worker_start = worker_start
        self.extra_summary = dict(summary or {})

    def __len__(self):
        return len(self.store)

    def shard(self, rank, world_size):
        if not (0 <= rank < world_size):
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
        groups = [g[rank::world_size] if len(g) >= world_size else g for g in self.groups]
        return groups

    def stream(self, seed, rank=0, world_size=1, start=0) -> CropStream:
        return CropStream(self.store, self.shard(rank, world_size), self.weights, self.augmenter, self.batch_size,
                          int(seed), int(rank), int(start))

    def batches(self, seed, rank=0, world_size=1, start=0):
        """Endless float32 N x C x H x W CPU batches in [0, 1]; the same for the same (seed, rank, world_size).
        `start` skips that many batches at no cost (batch b depends only on seed, rank and b)."""
        stream = self.stream(seed, rank, world_size, start)
        if self.num_workers <= 0:
            return iter(stream)
        loader = torch.utils.data.DataLoader(
            stream, batch_size=None, num_workers=self.num_workers,
            worker_init_fn=functools.partial(worker_init, fresh_process=self.worker_start != "fork"),
            prefetch_factor=self.prefetch_factor, pin_memory=self.pin_memory and torch.cuda.is_available(),
            multiprocessing_context=worker_context(self.worker_start))
        return started(iter(loader))

    def validation_images(self):
        return [torch.from_numpy(np.ascontiguousarray(v.transpose(2, 0, 1)))[None] for v in self.validation]

    def summary(self):
        return {"images": len(self.store), "validation_images": len(self.validation), "skipped_files": 0,
                "enlarged_images": self.enlarged, "crop": list(self.augmenter.crop), "channels": self.channels,
                **self.extra_summary}


# ---------------------------------------------------------------------------------------------- loading

def check_folder(folder):
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise BfcnnError(f"dataset folder not found: {folder}")
    if not folder.is_dir():
        raise BfcnnError(f"dataset folder is not a folder: {folder}")
    return folder


def load_folder(folder, color_mode, prepare=None, threads=None):
    """(images, skipped [(path, reason)]) of a folder; every bad file is logged once and skipped."""
    folder = check_folder(folder)
    paths = find_images(folder)

    def load(path):
        try:
            array = read_pixels(path, color_mode)
            return (prepare(array) if prepare else array), None
        except Exception as error:  # read_pixels raises ImageReadError; prepare may fail on odd shapes
            return None, str(error) or type(error).__name__

    threads = threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=threads) as pool:  # decoders release the GIL
        results = list(pool.map(load, paths))
    images, skipped = [], []
    for path, (array, reason) in zip(paths, results):
        if array is None:
            log.warning("skipping %s: %s", path, reason)
            skipped.append((str(path), reason))
        else:
            images.append(array)
    if not images:
        what = f"{len(skipped)} unreadable image file(s)" if skipped else "no image files (PNG, JPEG, TIFF, BMP, WebP)"
        raise BfcnnError(f"no usable image in {folder}: {what}")
    return images, skipped


def resolve_color_mode(color_mode, input_shape):
    if input_shape is not None and len(input_shape) == 3 and isinstance(input_shape[2], int):
        from_shape = {1: "grayscale", 3: "rgb", 4: "rgba"}.get(input_shape[2])
        if from_shape is None:
            raise ConfigError(f"dataset.input_shape: {input_shape[2]} channels; use 1, 3 or 4")
        if color_mode is None:
            return from_shape
        if CHANNELS[color_mode] != input_shape[2]:
            raise ConfigError(f"dataset.input_shape: {input_shape[2]} channel(s) but dataset.color_mode "
                              f"{color_mode!r} gives {CHANNELS[color_mode]}")
    return color_mode or "rgb"


def evenly_spaced(n, count):
    """`count` indices spread evenly over range(n)."""
    return sorted(set(np.linspace(0, n - 1, count).round().astype(int).tolist())) if count else []


def image_folder(directory, color_mode=None, batch_size=16, input_shape=(64, 64, 3), weights=None,
                 validation_split=0.0, validation_directory=None, min_value=0, max_value=255, dataset_shape=None,
                 random_rotate=0.0, random_up_down=True, random_left_right=True, random_invert=False,
                 augmentations=(), small_images="pad", num_workers="auto", prefetch_factor=2, pin_memory=False,
                 worker_start="forkserver"):
    folders = directory if isinstance(directory, list) else [directory]
    if weights is not None and len(weights) != len(folders):
        raise ConfigError(f"dataset.weights: {len(weights)} weights for {len(folders)} folders")
    if weights is not None and not sum(weights) > 0:
        raise ConfigError("dataset.weights: at least one must be above 0")
    if validation_directory and validation_split:
        raise ConfigError("dataset: give validation_split or validation_directory, not both")
    if not max_value > min_value:
        raise ConfigError(f"dataset.max_value ({max_value}) must be above dataset.min_value ({min_value})")
    color_mode = resolve_color_mode(color_mode, input_shape)
    # a bad augmentation is reported in a moment, not after every image was decoded
    augmenter = Augmenter(crop_shape(input_shape), CHANNELS[color_mode], random_rotate, random_up_down,
                          random_left_right, random_invert, augmentations)
    for folder in folders + ([validation_directory] if validation_directory else []):
        check_folder(folder)  # every folder checked before anything is decoded
    prepare = (lambda a: resize(a, dataset_shape)) if dataset_shape else None

    per_folder, skipped = [], []
    for folder in folders:
        found, bad = load_folder(folder, color_mode, prepare)
        per_folder.append(found)
        skipped += bad
    validation = []
    if validation_directory:
        validation, bad = load_folder(validation_directory, color_mode)
        skipped += bad
    elif validation_split > 0:
        total = sum(len(f) for f in per_folder)
        held = set(evenly_spaced(total, min(total, max(1, round(total * validation_split)))))
        flat = [(k, image) for k, found in enumerate(per_folder) for image in found]
        validation = [image for i, (_, image) in enumerate(flat) if i in held]
        per_folder = [[image for i, (k, image) in enumerate(flat) if i not in held and k == f]
                      for f in range(len(per_folder))]
    images, groups, kept_weights = [], [], []
    for k, found in enumerate(per_folder):
        if not found:
            log.warning("dataset folder %s has no training image left after the validation split", folders[k])
            continue
        groups.append(list(range(len(images), len(images) + len(found))))
        kept_weights.append(1.0 if weights is None else weights[k])
        images += found
    if not images:
        raise BfcnnError("no training image left: the validation split took them all")
    summary = {"skipped_files": len(skipped), "skipped": [f"{p}: {r}" for p, r in skipped[:MAX_LISTED_SKIPS]],
               "folders": {str(f): len(found) for f, found in zip(folders, per_folder)},
               "color_mode": color_mode}
    return CropDataset(images, augmenter, groups if weights is not None else None,
                       kept_weights if weights is not None else None, batch_size, validation, small_images,
                       num_workers, prefetch_factor, pin_memory, summary, worker_start)


def sample_images(color_mode=None, batch_size=8, input_shape=(64, 64, 3), validation_images=1, random_rotate=0.0,
                  random_up_down=True, random_left_right=True, random_invert=False, augmentations=(),
                  num_workers=0, worker_start="forkserver"):
    """Real photos that scikit-image ships (astronaut, chelsea, coffee, rocket, motorcycle): no download."""
    color_mode = resolve_color_mode(color_mode, input_shape)
    count = len(COLOR_SAMPLE_PHOTOS)
    if validation_images >= count:
        raise ConfigError(f"dataset.validation_images: at most {count - 1} of the {count} photos")
    augmenter = Augmenter(crop_shape(input_shape), CHANNELS[color_mode], random_rotate, random_up_down,
                          random_left_right, random_invert, augmentations)  # before any photo is decoded
    arrays = [sample_photo(name, color_mode) for name in COLOR_SAMPLE_PHOTOS]
    return CropDataset(arrays[validation_images:], augmenter, batch_size=batch_size,
                       validation=arrays[:validation_images], num_workers=num_workers,
                       summary={"photos": list(COLOR_SAMPLE_PHOTOS), "color_mode": color_mode},
                       worker_start=worker_start)


MAX_SIDE = 1 << 16  # pixels: a larger crop or image size is a typo, said by the config check
SHAPE = {"type": "array", "minItems": 2, "maxItems": 3,
         "items": {"anyOf": [{"type": "integer", "maximum": MAX_SIDE}, {"type": "string"}]}}
AUGMENTATION = {"type": "object", "required": ["type"], "properties": {"type": {"type": "string"}},
                "description": "an albumentations transform: {type: ClassName, ...its own parameters}"}
COMMON = {
    "color_mode": {"enum": ["rgb", "grayscale", "gray", "rgba"],
                   "description": "channels of the crops (default: from input_shape, else rgb)"},
    "batch_size": {"type": "integer", "minimum": 1, "maximum": 1 << 16},
    "input_shape": {**SHAPE, "description": "random crop size (height, width[, channels])"},
    "random_rotate": {"type": "number", "minimum": 0, "description": "largest rotation, radians (reflect borders)"},
    "random_up_down": {"type": "boolean", "description": "flip upside down with probability 0.5"},
    "random_left_right": {"type": "boolean", "description": "mirror with probability 0.5"},
    "random_invert": {"type": "boolean", "description": "x -> 1 - x with probability 0.5"},
    "augmentations": {"type": "array", "items": AUGMENTATION,
                      "description": "extra albumentations transforms applied to every crop, in order"},
    "num_workers": {"oneOf": [{"type": "integer", "minimum": 0, "maximum": 64}, {"const": "auto"}],
                    "description": "DataLoader worker processes (at most 64); 0: in the training process; auto: 0 "
                                   "without CUDA, else min(8, cores - 2)"},
    "worker_start": {"enum": ["forkserver", "spawn", "fork"], "default": "forkserver",
                     "description": "how workers start (forkserver and spawn import the main script: guard it)"},
}


def declared_channels(section: dict, section_name: str):
    """(key path, channel count) that a model or dataset section declares, or None."""
    shape = section.get("input_shape")
    if isinstance(shape, list) and len(shape) == 3 and isinstance(shape[-1], int) and not isinstance(shape[-1], bool):
        return f"{section_name}.input_shape", shape[-1]
    if isinstance(section.get("channels"), int) and not isinstance(section["channels"], bool):
        return f"{section_name}.channels", section["channels"]
    if isinstance(section.get("color_mode"), str) and section["color_mode"] in CHANNELS:
        return f"{section_name}.color_mode", CHANNELS[section["color_mode"]]
    return None


def model_channels_of(model, registries):
    """(where, channels) of the config's model section: what it declares, else its schema's default."""
    if not isinstance(model, dict):
        return None
    found = declared_channels(model, "model")
    if found or model.get("type") not in registries["model"]:
        return found
    default = registries["model"].get(model["type"]).schema.get("properties", {}).get("channels", {}).get("default")
    return (f"model {model['type']!r} (by default)", default) if isinstance(default, int) else None


def check_channels(spec, config, registries):
    """The crops' channels (color_mode, input_shape) are the ones the config's model takes."""
    model = model_channels_of(config.get("model"), registries)
    found = [declared_channels({"color_mode": spec["color_mode"]}, "dataset")] if "color_mode" in spec else []
    found.append(declared_channels({"input_shape": spec.get("input_shape")}, "dataset"))
    return [f"{model[0]}: the model takes {model[1]} channel(s) but {where} gives {channels}"
            for where, channels in filter(None, found) if model and channels != model[1]]


@hookimpl
def register_datasets(register):
    register("image_folder", image_folder, {
        "type": "object", "additionalProperties": False, "required": ["directory"],
        "examples": [{"directory": "images", "batch_size": 2, "input_shape": [32, 32, 3]}],
        "properties": {
            **COMMON,
            "directory": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}],
                          "description": "a folder, or several, searched recursively"},
            "weights": {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 1,
                        "description": "sampling weight of each folder (default: every image equally likely)"},
            "validation_split": {"type": "number", "minimum": 0, "exclusiveMaximum": 1,
                                 "description": "share of the images held out for validation (evenly spaced)"},
            "validation_directory": {"type": "string", "description": "a separate folder of validation images"},
            "min_value": {"type": "number", "description": "the seed's pixel scale; crops are always in [0, 1]"},
            "max_value": {"type": "number", "description": "the seed's pixel scale; crops are always in [0, 1]"},
            "dataset_shape": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": MAX_SIDE},
                              "minItems": 2,
                              "maxItems": 2, "description": "resize every image to (height, width) when loading"},
            "small_images": {"enum": ["pad", "upscale"], "default": "pad",
                             "description": "images smaller than the crop: reflect-pad, or scale up"},
            "prefetch_factor": {"type": "integer", "minimum": 1, "description": "batches queued per worker"},
            "pin_memory": {"type": "boolean", "description": "page-locked batches (with workers and CUDA)"},
        },
    }, "images from folders (PNG, JPEG, TIFF, BMP, WebP), random augmented crops", check=check_channels)
    register("sample_images", sample_images, {
        "type": "object", "additionalProperties": False,
        "properties": {**COMMON, "validation_images": {"type": "integer", "minimum": 0}},
    }, "real photos shipped by scikit-image: the embedded default, no download", check=check_channels)
