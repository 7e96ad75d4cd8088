"""denoise image files, folders or globs with a trained or shipped model (tiled, any size, 16-bit kept)

Python API: `Denoiser` (what `bfcnn.load_model` returns: `.denoise(array)` keeps the dtype, `.module` is the
torch model), `load_denoiser(name_or_path)`, `denoise_files(inputs, output_dir, ...)`. Files are read and
written by bfcnn.images (`read_pixels(path, None)` keeps the stored channels and sample type).
Images are processed tile by tile (bfcnn.tiling): each tile sees `margin` pixels of context on every side,
at least the model's receptive radius when it can be computed, so the result equals whole-image inference;
kept regions overlap by `blend` pixels mixed with linear ramps.
"""

from __future__ import annotations

import glob
import logging
import sys
from pathlib import Path

import numpy as np

from .engines import ENGINES
from .errors import BfcnnError, output_folder
from .images import IMAGE_SUFFIXES, find_images, read_pixels, visible_files, write_back_info, write_pixels
from .receptive import FALLBACK_MARGIN, receptive_radius, tiling_context  # noqa: F401 (they lived here)
from .tiling import tiled_apply, tiles

log = logging.getLogger("bfcnn")

# the shipped model `bfcnn denoise`, `bfcnn explain` and `bfcnn.load_model()` use without a name: the small
# bias-free UNet trained on one CPU thread (its card: bfcnn/pretrained/bf_drunet_small_cpu.md)
DEFAULT_MODEL = "bf_drunet_small_cpu"
DEFAULT_TILE = {"cpu": 1024, "cuda": 1024}  # on a CPU 512 ran at 0.71-0.79 of the whole image, 1024 at 0.87-0.98
DEFAULT_BLEND = 16
BACKENDS = ("torch", "onnx", "tflite")
MODEL_FILE_SUFFIXES = {"onnx": (".onnx",), "tflite": (".tflite",)}
GLOB_CHARS = set("*?[")


# ----------------------------------------------------------------------------------------------- models

class Denoiser:
    """A trained denoiser for arrays of any size: `denoise(array)` maps H x W x C (or H x W) uint8, uint16 or
    float (in [0, 1]) to the same shape and dtype, tile by tile in bounded memory.

    `module` is the torch model (N x C x H x W -> same); calling the Denoiser, or any attribute it does not
    have (parameters, state_dict, eval, ...), goes to the module, so code that wants the nn.Module keeps working.
    Channel mismatches are handled: a gray image through a color model is replicated and averaged back, a color
    image through a gray model is denoised channel by channel, an alpha channel is kept as it is.
    """

    def __init__(self, module, device="cpu", tile=None, margin=None, blend=DEFAULT_BLEND, iterations=1,
                 precision="fp32", source=None, engine="auto"):
        import torch

        from .devices import resolve_device  # torch only once a model is at hand
        from .engines import check_engine_name, make_engine

        check_tiling(tile, margin, blend)
        check_engine_name(engine)
        self.device = resolve_device(device) if not isinstance(device, torch.device) else device
        self.module = module.to(self.device).eval()
        self.channels_last = self.device.type == "cuda"  # the fast layout for convolutions on GPUs
        if self.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        from .layers import model_channels  # torch only once a model is at hand

        self.channels = model_channels(module)
        self.tile = tile or default_tile(module, self.device.type)
        context = tiling_context(module)  # tiles start on the model's grid with its radius of context
        self.radius, self.align, self.exact = context["margin"], context["align"], context["exact"]
        self.margin = margin
        self.blend = blend
        self.iterations = iterations
        self.precision = precision
        self.source = source
        self.size_multiple = int(getattr(module, "size_multiple", 1) or 1)  # sizes the model needs: padded to
        self.on_device = self.device.type == "cuda"  # blend tiles on the GPU; on a CPU numpy's path is leaner
        self.engine = make_engine(self.module, engine, self.device, precision)  # bfcnn.engines: auto on a CPU

    def denoise_on_device(self, image, scale, iterations, tile, margin, blend, clip):
        """tiling.tiled_apply's tiles and ramps with torch tensors on the device: one upload, one download."""
        import torch

        height, width, channels = image.shape
        source = torch.from_numpy(np.ascontiguousarray(image if image.dtype != np.uint16 else image.astype(np.int32)))
        source = source.to(self.device)
        out = torch.zeros((channels, height, width), dtype=torch.float32, device=self.device)
        norm = torch.zeros((1, height, width), dtype=torch.float32, device=self.device)
        every_channel = (slice(None),)
        for t in tiles(height, width, tile, margin, blend, self.align):
            patch = source[t.window].permute(2, 0, 1)[None].float()
            if scale != 1:
                patch = patch * (1.0 / scale)
            result = self.forward(patch, iterations)[0][every_channel + t.inner]
            weight = torch.from_numpy(t.weight).to(self.device)
            out[every_channel + t.keep] += result * weight
            norm[every_channel + t.keep] += weight
        del source
        out /= norm
        del norm
        if scale == 1.0:
            if clip:
                out.clamp_(0, 1)
            return out.permute(1, 2, 0).cpu().numpy()
        out.mul_(scale).round_().clamp_(0, scale)
        kind = torch.uint8 if scale == 255.0 else torch.int32
        result = out.to(kind).permute(1, 2, 0).contiguous().cpu().numpy()
        return result if scale == 255.0 else result.astype(np.uint16)

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def __getattr__(self, name):  # only called for attributes the Denoiser itself lacks
        if name == "module":
            raise AttributeError(name)
        return getattr(self.module, name)

    def __repr__(self):
        return (f"Denoiser({type(self.module).__name__}, source={self.source!r}, device={self.device}, tile={self.tile}, "
                f"engine={self.engine.name})")

    # -- the model on one tile ---------------------------------------------------------------------------
    def forward(self, x, iterations=1):
        """N x c x h x w float tensor in [0, 1] on self.device -> same shape (float32, unclamped)."""
        import torch
        import torch.nn.functional as F

        autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        n, c, h, w = x.shape
        if c == 1 and self.channels > 1:
            x = x.expand(n, self.channels, h, w)
        elif c > 1 and self.channels == 1:
            x = x.reshape(n * c, 1, h, w)
        elif c != self.channels:
            raise BfcnnError(f"the image has {c} channels, the model takes {self.channels}")
        m = self.size_multiple
        pad_h, pad_w = (-h) % m, (-w) % m
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect" if min(h, w) > max(pad_h, pad_w) else "replicate")
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=autocast, enabled=autocast is not None):
            for _ in range(iterations):
                x = self.engine(x)
        x = x[..., :h, :w].float()
        if c == 1 and self.channels > 1:
            x = x.mean(dim=1, keepdim=True)
        elif c > 1 and self.channels == 1:
            x = x.reshape(n, c, h, w)
        return x

    def tile_fn(self, scale, iterations):
        """fn for tiling.tiled_apply: 1 x c x h x w float32 numpy in `scale` units -> [0, 1] numpy (unclamped)."""
        import torch

        def fn(patch):
            x = torch.from_numpy(patch).to(self.device, non_blocking=True)
            return self.forward(x * (1.0 / scale) if scale != 1 else x, iterations).cpu().numpy()
        return fn

    def denoise(self, array, iterations=None, tile=None, margin=None, blend=None, clip=True, out=None,
                on_device=None):
        """Denoise one image. array: H x W x C or H x W; uint8, uint16 or float in [0, 1]. Same shape/dtype out.

        tile=0 (or an image of at most (tile + blend)^2 pixels: tiling.grid) is whole-image inference; `out` may be a preallocated
        H x W x C float32 buffer (e.g. a numpy memmap) for the float result, to bound memory further.
        on_device (default: on a GPU) blends the tiles on the device, the image uploaded once in its own dtype.
        """
        array = np.asarray(array)
        squeeze = array.ndim == 2
        image, alpha = split_alpha(array)
        dtype = image.dtype
        scale = pixel_scale(dtype)
        iterations = iterations or self.iterations
        tile = self.tile if tile is None else tile
        height, width = image.shape[:2]
        if not tile or tile <= 0:
            tile = max(height, width)
        margin = self.margin if margin is None else margin
        margin = (self.radius * iterations) if margin is None else margin
        blend = self.blend if blend is None else blend
        blend = min(blend, max(0, tile // 2))
        if (self.on_device if on_device is None else on_device) and out is None:  # converted on the device
            result = self.denoise_on_device(image, scale, iterations, tile, margin, blend, clip).astype(dtype, copy=False)
        else:
            result = tiled_apply(image, self.tile_fn(scale, iterations), tile=tile, margin=margin, blend=blend, out=out,
                                 align=self.align)
            result = self.to_dtype(result, scale, dtype, clip)
        if alpha is not None:
            result = np.concatenate([result, alpha.astype(result.dtype)], axis=2)
        return result[..., 0] if squeeze else result

    def estimate_sigma(self, image) -> float:
        """The noise level of an image (0..255 scale) read from the residual of the blind denoiser:
        |f(y) - y| / sqrt(N), the effective noise level of bfcnn.restore. image: as for `denoise`."""
        array = np.asarray(image)
        pixels, _ = split_alpha(array if array.ndim == 3 else array[..., None])
        if pixels.shape[2] == 1 and self.channels > 1:  # its noise would be equal in every channel: kept as detail
            raise BfcnnError("the noise level of a gray image cannot be read through a colour model (it keeps "
                             "noise that is equal in every channel): use a grayscale model")
        noisy = pixels.astype(np.float32) / np.float32(pixel_scale(pixels.dtype))
        residual = self.denoise(noisy, clip=False) - noisy
        return float(np.sqrt(np.mean(np.square(residual, dtype=np.float64))) * 255)

    @staticmethod
    def to_dtype(result, scale, dtype, clip):
        """float32 [0, 1] H x W x C -> the input's dtype, in place where it can."""
        if scale == 1.0:
            if clip:
                np.clip(result, 0, 1, out=result)
            result = result.astype(dtype, copy=False)
        else:
            np.multiply(result, scale, out=result)
            np.rint(result, out=result)
            np.clip(result, 0, scale, out=result)
            result = result.astype(dtype)
        return result


def default_tile(module, device_type) -> int:
    """Pixels per tile without --tile: the model's own where it states one for the device (an attribute
    `default_tile = {"cpu": 768}`, e.g. a UNet whose wide view makes a large tile's memory large), else
    DEFAULT_TILE's."""
    stated = getattr(module, "default_tile", None)
    if isinstance(stated, dict) and isinstance(stated.get(device_type), int) and stated[device_type] > 0:
        return stated[device_type]
    return DEFAULT_TILE.get(device_type, 512)


def check_tiling(tile=None, margin=None, blend=None):
    """Tile settings as one clear error: tile 0 (whole image) or positive, margin and blend not negative."""
    if tile is not None and tile < 0:
        raise BfcnnError(f"--tile must be 0 (whole image) or positive, got {tile}")
    if margin is not None and margin < 0:
        raise BfcnnError(f"--margin must be 0 or more pixels, got {margin}")
    if blend is not None and blend < 0:
        raise BfcnnError(f"--blend must be 0 or more pixels, got {blend}")


def split_alpha(array):
    """(H x W x C image, alpha H x W x 1 or None) of an H x W or H x W x C array: with 2 or 4 channels the
    last is alpha, which denoising keeps as it is."""
    if array.ndim not in (2, 3):
        raise BfcnnError(f"an image is H x W or H x W x C, got shape {array.shape}")
    image = array[..., None] if array.ndim == 2 else array
    if image.shape[2] in (2, 4):
        return image[..., :-1], image[..., -1:]
    return image, None


def pixel_scale(dtype) -> float:
    """The value of white: 255 for uint8, 65535 for uint16, 1 for float images."""
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    if np.issubdtype(dtype, np.floating):
        return 1.0
    raise BfcnnError(f"images are uint8, uint16 or float, got {dtype}")


def load_denoiser(name_or_path=None, device="auto", **options) -> Denoiser:
    """A Denoiser from a .safetensors file, a run folder, or a shipped model's name (default: DEFAULT_MODEL)."""
    from .checkpoint import find_weights, load_model

    if name_or_path is None:
        try:
            find_weights(DEFAULT_MODEL)
        except BfcnnError as error:
            raise BfcnnError(f"the default model {DEFAULT_MODEL!r} is not installed ({error}): pass --model with a "
                             ".safetensors file, a run folder or a pretrained model's name") from None
        name_or_path = DEFAULT_MODEL
    from .devices import resolve_device

    weights = find_weights(name_or_path)
    device = resolve_device(device)
    return Denoiser(load_model(weights, device=device), device=device, source=str(weights), **options)


# ----------------------------------------------------------------------------------------------- files

def expand_inputs(inputs) -> list[tuple[Path, Path]]:
    """(file, path relative to what was named) for files, folders (recursive) and globs; BfcnnError if any
    input names nothing."""
    found, missing = [], []
    for item in inputs:
        text = str(item)
        if GLOB_CHARS & set(text) and not Path(text).exists():
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
            files = [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
            for folder in (p for p in matches if p.is_dir()):
                files += find_images(folder)
            if not files:
                missing.append(f"{text} (no image matches)")
            base = glob_base(text)  # outputs keep the sub-folders below the pattern's fixed part
            found += [(p, p.relative_to(base) if p.is_relative_to(base) else Path(p.name)) for p in files]
            continue
        path = Path(text)
        if path.is_dir():
            files = visible_files(path)  # one walk for the images and for what is left out
            images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
            if not images:
                missing.append(f"{text} (a folder without images)")
            found += [(p, p.relative_to(path)) for p in images]
            left_out = sorted({p.suffix.lower() or p.name for p in files if p.suffix.lower() not in IMAGE_SUFFIXES})
            if left_out:  # e.g. GIFs: named one by one they are tried, in a folder only these formats are
                log.info("%s: files ending in %s left out; folders are scanned for %s (name a file to try it anyway)",
                         text, ", ".join(left_out[:6]) + (", ..." if len(left_out) > 6 else ""),
                         " ".join(sorted(IMAGE_SUFFIXES)))
        elif path.is_file():
            found.append((path, Path(path.name)))
        else:
            missing.append(f"{text} (not found)")
    if missing:
        raise BfcnnError("nothing to denoise at: " + ", ".join(missing))
    unique, seen = [], set()
    for path, relative in found:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((path, relative))
    return unique


def glob_base(pattern) -> Path:
    """The leading folders of a glob pattern that hold no wildcard."""
    parts = []
    for part in Path(pattern).parts[:-1]:
        if GLOB_CHARS & set(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def earlier_result(path, relative, output_dir) -> bool:
    """A file found by scanning a folder that holds the output folder (below it), e.g. photos/ -o photos/out."""
    root = path.resolve().parents[len(Path(relative).parts) - 1]
    out = Path(output_dir).resolve()
    return out != root and out.is_relative_to(root) and path.resolve().is_relative_to(out)


def output_path(output_dir, relative, suffix="", extension=None) -> Path:
    relative = Path(relative)
    ext = extension if extension else relative.suffix
    if ext and not ext.startswith("."):
        ext = "." + ext
    return Path(output_dir) / relative.parent / f"{relative.stem}{suffix}{ext}"


def runtime_function():
    """bfcnn.runtime.denoise_file_array, the torch-free runtime (written with the export issue), imported lazily."""
    try:
        from .runtime import denoise_file_array
    except ImportError as error:
        raise BfcnnError(f"this backend needs bfcnn.runtime (the torch-free runtime), which cannot be imported "
                         f"here ({error}); use --backend torch") from None
    return denoise_file_array


def runtime_channels(model_file, backend):
    """The channels an exported file takes (None where the file leaves it open)."""
    from .runtime import cached_load

    return cached_load(str(model_file), backend).channels


def denoise_array_with_runtime(array, model_file, backend, tile, runtime=None, channels=None, margin=None,
                               blend=DEFAULT_BLEND):
    """Through the torch-free runtime: `denoise_file_array(x, model_file, backend, tile=tile, margin=margin,
    blend=blend)` with x an H x W x C float32 array in [0, 1], expected to return the same shape (float); the
    dtype is restored here. `margin` None: the model's, from its export report.

    Gray images through a color model and color images through a gray one are handled as the torch path
    does: gray is repeated into every channel and the result averaged; color is denoised channel by channel.
    """
    if runtime is None:
        runtime = runtime_function()
        channels = channels or runtime_channels(model_file, backend)
    squeeze = np.ndim(array) == 2
    image, alpha = split_alpha(np.asarray(array))
    dtype, scale = image.dtype, pixel_scale(image.dtype)
    x = image.astype(np.float32) / scale if scale != 1.0 else image.astype(np.float32)

    def run(pixels):
        y = runtime(pixels, str(model_file), backend, tile=tile, margin=margin, blend=blend)
        return np.asarray(y, dtype=np.float32).reshape(pixels.shape)

    if x.shape[2] == 1 and channels and channels > 1:
        y = run(np.repeat(x, channels, axis=2)).mean(axis=2, keepdims=True)
    elif x.shape[2] > 1 and channels == 1:
        y = np.concatenate([run(x[..., i:i + 1]) for i in range(x.shape[2])], axis=2)
    else:
        y = run(x)
    y = Denoiser.to_dtype(y, scale, dtype, clip=True)
    y = y if alpha is None else np.concatenate([y, alpha], axis=2)
    return y[..., 0] if squeeze else y


def find_model_file(model, backend) -> Path:
    """An .onnx / .tflite file: the path itself, or the first one under a run (or export) folder."""
    if model is None:
        raise BfcnnError(f"--backend {backend} needs --model PATH to a {MODEL_FILE_SUFFIXES[backend][0]} file")
    path = Path(model)
    if path.is_file():
        if path.suffix.lower() not in MODEL_FILE_SUFFIXES[backend]:
            raise BfcnnError(f"--backend {backend} runs {MODEL_FILE_SUFFIXES[backend][0]} files, got {path}")
        return path
    if path.is_dir():
        candidates = sorted(p for s in MODEL_FILE_SUFFIXES[backend] for p in path.rglob(f"*{s}"))
        if candidates:
            return candidates[0]
        raise BfcnnError(f"no {MODEL_FILE_SUFFIXES[backend][0]} file under {path} (export the model first)")
    raise BfcnnError(f"--model {model}: not found")


def denoise_files(inputs, output_dir, model=None, backend="torch", device="auto", iterations=1, tile=None,
                  margin=None, blend=DEFAULT_BLEND, suffix="", extension=None, precision="fp32", progress=True,
                  report_sigma=False, engine="auto"):
    """Denoise files, folders and globs into output_dir; one bad file does not stop the batch.

    Returns {"written": [paths], "failed": {input: message}} (and "sigmas": {input: noise level or None} with
    report_sigma). `model`: a Denoiser, a path or a shipped name.
    """
    from tqdm import tqdm

    if backend not in BACKENDS:
        raise BfcnnError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if iterations < 1:
        raise BfcnnError(f"--iterations must be at least 1, got {iterations}")
    if report_sigma and backend != "torch":
        raise BfcnnError("--report-sigma needs --backend torch")
    check_tiling(tile, margin, blend)
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise BfcnnError(f"-o {output_dir}: is a file, not a folder (the results keep their names inside a folder)")
    files = [(p, r) for p, r in expand_inputs(inputs) if not earlier_result(p, r, output_dir)]
    if backend == "torch":
        denoiser = model if isinstance(model, Denoiser) else load_denoiser(
            model, device, tile=tile, margin=margin, blend=blend, precision=precision, engine=engine)

        def run(array):
            return denoiser.denoise(array, iterations=iterations)
    else:
        model_file = find_model_file(model, backend)
        if iterations != 1:
            raise BfcnnError(f"--iterations is not supported with --backend {backend}")
        runtime, channels = runtime_function(), runtime_channels(model_file, backend)

        def run(array):
            return denoise_array_with_runtime(array, model_file, backend, tile or DEFAULT_TILE["cpu"], runtime,
                                              channels, margin, blend)
    targets = [(path, output_path(output_dir, relative, suffix, extension)) for path, relative in files]
    sources = {path.resolve() for path, _ in files}
    clashes = [(path, target) for path, target in targets if target.resolve() in sources]
    if clashes:
        path, target = clashes[0]
        raise BfcnnError(f"the result of {path} would overwrite an input, {target} (an earlier result?): choose "
                         "another -o, another --suffix, or move the earlier results away")
    seen = {}
    for path, target in targets:
        if target in seen:
            raise BfcnnError(f"{seen[target]} and {path} would both be written to {target}: denoise them apart")
        seen[target] = path
    output_folder(output_dir)  # one clear error now, not one per file
    written, failed, sigmas = [], {}, {}
    bar = tqdm(targets, desc="denoise", unit="image", disable=not progress, file=sys.stderr)
    for path, target in bar:
        bar.set_postfix_str(path.name, refresh=False)
        try:
            array = read_pixels(path, None)
            if report_sigma:
                sigmas[str(path)] = sigma_of(denoiser, array, path)
            result = run(array)
            write_pixels(target, result, write_back_info(path))
            written.append(str(target))
        except KeyboardInterrupt:
            raise
        except Exception as error:  # one unreadable or odd file must not stop the batch
            known = isinstance(error, BfcnnError)  # unreadable images too: their messages say what is wrong
            failed[str(path)] = str(error) if known else f"{type(error).__name__}: {error}"
            tqdm.write(f"bfcnn: failed: {path}: {failed[str(path)]}", file=sys.stderr)
    return {"written": written, "failed": failed, **({"sigmas": sigmas} if report_sigma else {})}


def sigma_of(denoiser, array, path):
    """The noise level of one image (0..255), printed; None (and why) where it cannot be read."""
    from tqdm import tqdm

    try:
        sigma = denoiser.estimate_sigma(array)
    except BfcnnError as error:
        tqdm.write(f"{path}: noise level unknown: {error}", file=sys.stderr)
        return None
    tqdm.write(f"{path}: noise level {sigma:.2f} / 255")
    return round(sigma, 3)


# ----------------------------------------------------------------------------------------------- CLI

def add_arguments(parser):
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (recursive) or globs")
    parser.add_argument("-o", "--output-dir", required=True, help="folder for the results (same names)")
    parser.add_argument("--model", default=None,
                        help=f"a shipped model's name, a .safetensors file or a run folder (default: {DEFAULT_MODEL}); "
                             ".onnx/.tflite file (or folder holding one) with --backend onnx/tflite")
    parser.add_argument("--backend", choices=BACKENDS, default="torch",
                        help="torch (default) or the torch-free runtime for exported ONNX / TFLite files")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    parser.add_argument("--iterations", type=int, default=1, help="apply the model this many times (default 1)")
    parser.add_argument("--tile", type=int, default=None,
                        help="pixels per tile: at most (TILE + blend)^2, any shape (default 1024, or the model's own: 768 "
                             "for the wide-view UNet on a CPU; 0 = whole image)")
    parser.add_argument("--margin", type=int, default=None,
                        help="context pixels around each tile (default: the model's receptive radius)")
    parser.add_argument("--blend", type=int, default=DEFAULT_BLEND, help="overlap blended between tiles (default 16)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                        help="compute precision on GPU (default fp32)")
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="how the model runs on a CPU (default auto: the fastest that equals eager float32; "
                             "see bfcnn.engines)")
    parser.add_argument("--suffix", default="", help="added to each output name, e.g. _denoised")
    parser.add_argument("--format", dest="extension", default=None, choices=("png", "tif", "tiff", "jpg", "jpeg"),
                        help="output format (default: the input's)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--report-sigma", action="store_true",
                        help="print each image's noise level (0..255, from the model's residual) and write "
                             "noise_levels.json")


def command(args) -> int:
    result = denoise_files(args.inputs, args.output_dir, model=args.model, backend=args.backend,
                           device=args.device, iterations=args.iterations, tile=args.tile, margin=args.margin,
                           blend=args.blend, suffix=args.suffix, extension=args.extension,
                           precision=args.precision, progress=not args.quiet, report_sigma=args.report_sigma,
                           engine=args.engine)
    if args.report_sigma:
        import json

        (Path(args.output_dir) / "noise_levels.json").write_text(json.dumps(result["sigmas"], indent=2))
    total = len(result["written"]) + len(result["failed"])
    print(f"denoised {len(result['written'])} of {total} image(s) into {args.output_dir}"
          + (f"; {len(result['failed'])} failed" if result["failed"] else ""))
    return 1 if result["failed"] else 0
