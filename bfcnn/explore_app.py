"""The web app behind `bfcnn explore` (Starlette; uvicorn serves it): one static page and a small JSON API.

Every number comes from bfcnn.explain: a click asks `adaptive_filters` for one row of the Jacobian (one
vector-Jacobian product), on a crop holding the model's whole receptive field when the model states it (the
same row as on the whole image, which tiled denoising relies on too), else on the whole image; `spread_map`
gives the whole-image spread and weight-sum maps with the net bias, `effective_dimensionality` the curve
against sigma. Results are cached: per view (image x noise level x model) the noisy and denoised images, the
filters of pixels already clicked, the spread map.

State is shared by every browser: images and models get ids, views are keyed by (image, sigma, model), all
behind locks, so two browsers at once each see their own choices. Uploads are written into the app's temporary
folder (and nothing anywhere else); the download of a denoised image is written there too before it is sent.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import math
import re
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .errors import BfcnnError

log = logging.getLogger("bfcnn")

PAGE = Path(__file__).parent / "explore_static" / "index.html"
MAX_VIEWS = 8  # views (noisy + denoised images of one image x sigma x model) kept in memory ...
MAX_VIEW_BYTES = 3 << 30  # ... while they hold less than this (the newest is always kept)
MAX_UPLOADS = 8  # uploaded images kept (older ones are forgotten and their files deleted)
MAX_FILTERS_PER_VIEW = 512  # clicked pixels remembered per view
WHOLE_IMAGE_FILTER_MAX = 1 << 20  # models without a known receptive field: whole-image VJP up to 1 MP
SPREAD_MAX_PIXELS = 4 << 20  # the spread map (4 JVPs over the whole image) up to 4 MP
DIMENSIONALITY_CROP = 64  # the dimensionality curve is measured on a crop this size around the clicked pixel
DIMENSIONALITY_SIGMAS = (5.0, 10.0, 15.0, 25.0, 35.0, 50.0, 75.0, 100.0)
DIMENSIONALITY_PROBES = 16
MAX_SIGMA = 100.0
MIN_WINDOW = 8  # the filter window shown around a pixel is at least this radius ...
MAX_WINDOW = 64  # ... and at most this one


def b64(array) -> str:
    """Little-endian float32 bytes, base64: what the page decodes into a Float32Array."""
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode("ascii")


def png_bytes(array) -> bytes:
    """H x W x C (C = 1 or 3) float in [0, 1] (clipped), or uint8 H x W x 3/4, as PNG bytes (fast compression)."""
    from PIL import Image

    if array.dtype != np.uint8:
        array = np.round(np.clip(np.nan_to_num(array), 0, 1) * 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def colour_map(values, name, bad=(127, 211, 255, 255), limits=None):
    """H x W floats through a matplotlib colour map to RGBA uint8 (NaN: `bad`); returns (rgba, (lo, hi))."""
    import matplotlib

    finite = values[np.isfinite(values)]
    if limits is None:
        lo, hi = (float(np.quantile(finite, 0.01)), float(np.quantile(finite, 0.99))) if finite.size else (0.0, 1.0)
    else:
        lo, hi = limits
    hi = hi if hi > lo else lo + 1.0
    rgba = matplotlib.colormaps[name]((np.nan_to_num(values, nan=lo) - lo) / (hi - lo), bytes=True)
    rgba[~np.isfinite(values)] = bad
    return rgba, (lo, hi)


def safe_suffix(filename) -> str:
    suffix = Path(str(filename)).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,12}", suffix) else ""


class ImageEntry:
    def __init__(self, id, name, source, path=None, sample=None, pixels=None):
        self.id, self.name, self.source, self.path, self.sample = id, name, source, path, sample
        self._pixels = pixels
        self.lock = threading.Lock()

    def pixels(self):
        """H x W x C in the file's own type (uint8, uint16 or float32), channels as stored; loaded once."""
        from .images import read_pixels, sample_photo

        with self.lock:
            if self._pixels is None:
                if self.sample is not None:
                    self._pixels = sample_photo(self.sample, None)
                else:
                    self._pixels = read_pixels(self.path, None)
            return self._pixels

    def info(self):
        info = {"id": self.id, "name": self.name, "source": self.source}
        if self._pixels is not None:
            info.update(width=int(self._pixels.shape[1]), height=int(self._pixels.shape[0]))
        return info


class ModelEntry:
    def __init__(self, id, name, denoiser):
        from .denoise import tiling_context
        from .layers import model_channels

        self.id, self.name, self.denoiser = id, name, denoiser
        self.module = denoiser.module
        self.channels = model_channels(self.module)
        self.context = tiling_context(self.module)
        self.bias_free = bool(getattr(self.module, "bias_free", False))

    def warm_up(self):
        """One small vector-Jacobian product, so that the first click does not pay torch.func's first-call cost."""
        import torch

        from .explain import adaptive_filters

        y = torch.full((1, self.channels, 16, 16), 0.5, device=self.denoiser.device)
        adaptive_filters(self.module, y, [(8, 8)])

    def info(self):
        return {"id": self.id, "name": self.name, "channels": self.channels, "bias_free": self.bias_free,
                "receptive_radius": self.context["margin"] if self.context["exact"] else None}


class View:
    """One image at one noise level through one model: noisy and denoised images, cached filters and maps."""

    def __init__(self, id, image, model, sigma, seed):
        self.id, self.image, self.model, self.sigma, self.seed = id, image, model, sigma, seed
        self.lock = threading.Lock()  # computing this view's parts
        self.ready = False
        self.filters = OrderedDict()
        self.spread = None
        self.pngs = {}
        self.download = None

    def compute(self):
        """The clean image in the model's channels, the noisy one (seeded noise of sigma on the 0..255 scale, as
        bfcnn explain adds it) and the denoised one (tiled, as bfcnn denoise does it)."""
        import torch

        from .explain import noisy_version
        from .images import convert_channels, to_float

        with self.lock:
            if self.ready:
                return
            pixels = self.image.pixels()
            if self.model.channels not in (1, 3):
                raise BfcnnError(f"model {self.model.name} takes {self.model.channels}-channel images: explore "
                                 "shows gray (1) and colour (3) models")
            mode = "grayscale" if self.model.channels == 1 else "rgb"
            self.bit_depth = 16 if pixels.dtype == np.uint16 else 8
            clean = to_float(convert_channels(pixels, mode))
            start = time.perf_counter()
            self.clean = torch.from_numpy(np.ascontiguousarray(clean.transpose(2, 0, 1)))[None]
            self.noisy = noisy_version(self.clean, self.sigma, self.seed)[1] if self.sigma > 0 else self.clean
            noisy_image = self.noisy[0].permute(1, 2, 0).numpy()
            self.denoised = self.model.denoiser.denoise(noisy_image, clip=False)
            self.denoise_seconds = time.perf_counter() - start
            self.height, self.width = clean.shape[:2]
            self.nbytes = self.clean.nbytes + self.denoised.nbytes + (self.noisy.nbytes if self.sigma > 0 else 0)
            self.ready = True

    def info(self):
        return {"id": self.id, "image": self.image.id, "model": self.model.id, "sigma": self.sigma,
                "seed": self.seed, "width": self.width, "height": self.height, "channels": self.model.channels,
                "denoise_seconds": self.denoise_seconds,
                "noisy": f"api/views/{self.id}/noisy.png", "denoised": f"api/views/{self.id}/denoised.png",
                "download": f"api/views/{self.id}/download"}

    # -- the images --------------------------------------------------------------------------------------
    def png(self, which):
        with self.lock:
            if which not in self.pngs:
                if which == "noisy":
                    self.pngs[which] = png_bytes(self.noisy[0].permute(1, 2, 0).numpy())
                elif which == "denoised":
                    self.pngs[which] = png_bytes(self.denoised)
                elif which in ("spread", "weight_sum") and self.spread is not None:
                    self.pngs[which] = png_bytes(self.spread[which + "_rgba"])
                else:
                    raise KeyError(which)
            return self.pngs[which]

    def download_file(self, workdir):
        """The denoised image as PNG (16-bit when the image was), written into the app's folder."""
        from .images import write_image

        with self.lock:
            if self.download is None:
                stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(self.image.name).stem)[:60] or "image"
                tag = f"sigma{self.sigma:g}" if self.sigma > 0 else "as_given"
                folder = Path(workdir) / "downloads" / self.id
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / f"{stem}_{tag}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', self.model.name)}.png"
                write_image(path, self.denoised, bit_depth=self.bit_depth)
                self.download = path
            return self.download

    # -- a pixel's filter ----------------------------------------------------------------------------------
    def filter(self, x, y):
        """The adaptive filter of pixel (x, y) (row of J for the channel-mean output, per input channel)."""
        from .explain import adaptive_filters, filter_stats

        if not (0 <= x < self.width and 0 <= y < self.height):
            raise BfcnnError(f"pixel ({x}, {y}) is outside the {self.width} x {self.height} image")
        with self.lock:
            if (x, y) in self.filters:
                self.filters.move_to_end((x, y))
                return {**self.filters[(x, y)], "cached": True, "seconds": 0.0}
        start = time.perf_counter()
        context, device = self.model.context, self.model.denoiser.device
        if context["exact"] or self.width * self.height > WHOLE_IMAGE_FILTER_MAX:
            # the output pixel sees only its receptive field: the crop that holds it gives the same row
            x0, x1 = self.crop_range(x, self.width, context)
            y0, y1 = self.crop_range(y, self.height, context)
            rows = adaptive_filters(self.model.module, self.noisy[:, :, y0:y1, x0:x1].to(device),
                                    [(x - x0, y - y0)])[0].cpu()
            support = "receptive field" if context["exact"] else "approximate: crop of the 64 px fallback margin"
        else:
            rows = adaptive_filters(self.model.module, self.noisy.to(device), [(x, y)])[0].cpu()
            x0 = y0 = 0
            support = "whole image"
        gray = rows.sum(dim=0)
        stats = filter_stats(gray, x - x0, y - y0)
        # the window sent and shown: the radius holding 99% of sum |w| and 2 pixels more (within limits)
        r = min(max(stats["radius_99"] + 2, MIN_WINDOW), MAX_WINDOW)
        wx0, wy0 = max(x - x0 - r, 0), max(y - y0 - r, 0)
        wx1, wy1 = min(x - x0 + r + 1, gray.shape[1]), min(y - y0 + r + 1, gray.shape[0])
        window = rows[:, wy0:wy1, wx0:wx1].float().numpy()
        centre = stats["centre"]
        result = {
            "x": x, "y": y, "view": self.id, "model": self.model.id,
            "origin": [x0 + wx0, y0 + wy0], "width": wx1 - wx0, "height": wy1 - wy0, "channels": int(rows.shape[0]),
            "gray": b64(window.sum(axis=0)), "per_channel": b64(window),
            "weight_sum": stats["weight_sum"], "self_weight": stats["self_weight"],
            "channel_sums": [float(v) for v in rows.double().sum(dim=(1, 2))],
            "centre": None if centre is None else [centre[0] + x0, centre[1] + y0],
            "spread": stats["spread"], "radius_99": stats["radius_99"], "support": support,
            "noisy_value": [float(v) for v in self.noisy[0, :, y, x]],
            "denoised_value": [float(v) for v in self.denoised[y, x]],
        }
        result["seconds"] = time.perf_counter() - start
        with self.lock:
            self.filters[(x, y)] = result
            while len(self.filters) > MAX_FILTERS_PER_VIEW:
                self.filters.popitem(last=False)
        return {**result, "cached": False}

    @staticmethod
    def crop_range(p, size, context):
        """[start, end) of the crop around p along one axis: the receptive radius each side, the start on the
        model's grid (as bfcnn.tiling starts its tiles), the length a multiple of it where the image allows."""
        margin, align = context["margin"], max(int(context["align"]), 1)
        start = max(p - margin, 0)
        start -= start % align
        end = min(p + margin + 1, size)
        extra = (-(end - start)) % align
        if end + extra <= size:
            end += extra
        return start, end

    # -- the whole image -----------------------------------------------------------------------------------
    def spread_maps(self):
        """Spread map, weight-sum map and net bias (bfcnn.explain.spread_map: 4 JVPs + J y), computed once."""
        from .explain import spread_map

        with self.lock:
            if self.spread is None:
                pixels = self.width * self.height
                if pixels > SPREAD_MAX_PIXELS:
                    raise BfcnnError(f"the spread map is computed for images up to {SPREAD_MAX_PIXELS / 2**20:g} MP "
                                     f"(4 Jacobian-vector products over the whole image); this one is "
                                     f"{pixels / 1e6:.1f} MP")
                start = time.perf_counter()
                result = spread_map(self.model.module, self.noisy.to(self.model.denoiser.device), with_net_bias=True,
                                    chunk_size=None if pixels <= (1 << 20) else 1)
                spread = result["spread"].float().cpu().numpy()
                weight_sum = result["weight_sum"].float().cpu().numpy()
                spread_rgba, spread_range = colour_map(spread, "magma")
                sum_rgba, sum_range = colour_map(weight_sum, "viridis")
                finite = spread[np.isfinite(spread)]
                bias = result["net_bias"]
                self.spread = {
                    "spread_rgba": spread_rgba, "weight_sum_rgba": sum_rgba,
                    "info": {
                        "net_bias": bias if math.isfinite(bias) else None,
                        "spread_range": spread_range, "weight_sum_range": sum_range,
                        "median_spread": float(np.median(finite)) if finite.size else None,
                        "undefined_fraction": 1.0 - finite.size / spread.size,
                        "median_weight_sum": float(np.median(weight_sum)),
                        "spread": f"api/views/{self.id}/spread.png",
                        "weight_sum": f"api/views/{self.id}/weight_sum.png",
                        "seconds": time.perf_counter() - start,
                    },
                }
            return self.spread["info"]

    def dimensionality(self, x, y):
        """||J||_F^2 (Hutchinson, bfcnn.explain.effective_dimensionality) against sigma on a crop around (x, y),
        with the view's noise field scaled to each level."""
        from .explain import effective_dimensionality, noisy_version

        start = time.perf_counter()
        half = DIMENSIONALITY_CROP // 2
        x0 = min(max(x - half, 0), max(self.width - DIMENSIONALITY_CROP, 0))
        y0 = min(max(y - half, 0), max(self.height - DIMENSIONALITY_CROP, 0))
        x1, y1 = min(x0 + DIMENSIONALITY_CROP, self.width), min(y0 + DIMENSIONALITY_CROP, self.height)
        device = self.model.denoiser.device
        noise = noisy_version(self.clean, 0.0, self.seed)[0][:, :, y0:y1, x0:x1].to(device)
        base = self.clean[:, :, y0:y1, x0:x1].to(device)
        n = base[0].numel()
        levels = []
        for sigma in sorted({*DIMENSIONALITY_SIGMAS, float(self.sigma)}):
            result = effective_dimensionality(self.model.module, base + sigma / 255.0 * noise,
                                              probes=DIMENSIONALITY_PROBES, seed=self.seed)
            levels.append({"sigma": sigma, "frobenius": result["frobenius"], "stderr": result["frobenius_stderr"],
                           "trace": result["trace"], "fraction": result["frobenius"] / n})
        return {"crop": [x0, y0, x1 - x0, y1 - y0], "dimensions": n, "method": "hutchinson",
                "probes": DIMENSIONALITY_PROBES, "levels": levels, "seconds": time.perf_counter() - start}


class Explorer:
    """Images, models and views, shared by every request (thread-safe)."""

    def __init__(self, models, images=(), workdir=None, max_megapixels=24.0, seed=0, device="auto"):
        from .denoise import DEFAULT_MODEL
        from .devices import resolve_device
        from .images import SAMPLE_PHOTOS

        if workdir is None:
            raise BfcnnError("Explorer needs a folder of its own (workdir) to write uploads in")
        self.workdir = Path(workdir)
        (self.workdir / "uploads").mkdir(parents=True, exist_ok=True)
        self.max_pixels = int(max_megapixels * 1e6)
        self.max_bytes = max(64 << 20, self.max_pixels * 8)  # a 16-bit RGBA file of max_pixels, uncompressed
        self.seed = seed
        self.device = resolve_device(device)
        self.lock = threading.Lock()
        self.models = OrderedDict()
        self.images = OrderedDict()
        self.views = OrderedDict()
        self.uploads = []
        for k, spec in enumerate(models):
            entry = self.load_model(spec, f"m{k}", spec or DEFAULT_MODEL)
            self.models[entry.id] = entry
        for k, path in enumerate(images):
            path = Path(path)
            if not path.is_file():
                raise BfcnnError(f"image not found: {path}")
            entry = ImageEntry(f"f{k}", path.name, "file", path=path)
            self.check_image(path, path.name)
            entry.pixels()
            self.images[entry.id] = entry
        for name in SAMPLE_PHOTOS:
            self.images[f"s-{name}"] = ImageEntry(f"s-{name}", name, "sample", sample=name)

    # -- loading -------------------------------------------------------------------------------------------
    def load_model(self, spec, id, name):
        from .denoise import load_denoiser

        try:
            denoiser = load_denoiser(spec, device=self.device)
        except Exception as error:  # not a bfcnn weights file (safetensors header, spec in metadata, weights)
            text = str(error).replace(f"{spec}: ", "").replace(str(spec), name)
            if not isinstance(error, BfcnnError):
                text = f"{type(error).__name__}: {text}"
            raise BfcnnError(f"{name} is not a bfcnn model: {text}") from None
        entry = ModelEntry(id, name, denoiser)
        entry.warm_up()
        return entry

    def check_image(self, path, name):
        """A clear error for a file that is not an image or has more pixels than allowed (read from the header,
        before decoding); the reader then reports files that are broken beyond the header."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                width, height = image.size
        except UnidentifiedImageError:
            width = height = None  # maybe a 16-bit TIFF or PNG Pillow cannot identify: the reader decides
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            raise BfcnnError(f"{name} is not a readable image ({str(error).replace(str(path), name)})") from None
        if width is not None and width * height > self.max_pixels:
            raise BfcnnError(f"{name} is {width} x {height} = {width * height / 1e6:.1f} MP, over the limit of "
                             f"{self.max_pixels / 1e6:g} MP (bfcnn explore --max-megapixels)")

    def add_upload(self, filename, data: bytes) -> dict:
        from .images import ImageReadError

        name = Path(str(filename or "upload")).name or "upload"
        if not data:
            raise BfcnnError(f"{name} is empty (0 bytes)")
        path = self.workdir / "uploads" / f"{uuid.uuid4().hex}{safe_suffix(name)}"
        path.write_bytes(data)
        try:
            self.check_image(path, name)
            entry = ImageEntry(f"u-{path.stem[:16]}", name, "upload", path=path)
            try:
                pixels = entry.pixels()
            except ImageReadError as error:
                raise BfcnnError(f"{name} is not a readable image ({str(error).replace(str(path), name)})") from None
            if pixels.shape[0] * pixels.shape[1] > self.max_pixels:
                raise BfcnnError(f"{name} is {pixels.shape[1]} x {pixels.shape[0]}, over the limit of "
                                 f"{self.max_pixels / 1e6:g} MP (bfcnn explore --max-megapixels)")
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        with self.lock:
            self.images[entry.id] = entry
            self.uploads.append(entry.id)
            while len(self.uploads) > MAX_UPLOADS:
                old = self.images.pop(self.uploads.pop(0), None)
                if old is not None and old.path is not None:
                    old.path.unlink(missing_ok=True)
        return entry.info()

    def add_model_upload(self, filename, data: bytes) -> dict:
        name = Path(str(filename or "model")).name or "model"
        if not data:
            raise BfcnnError(f"{name} is empty (0 bytes)")
        if safe_suffix(name) != ".safetensors":
            raise BfcnnError(f"{name} is not a bfcnn model: models are .safetensors files (bfcnn writes them as "
                             "model.safetensors in a run folder)")
        path = self.workdir / "uploads" / f"{uuid.uuid4().hex}.safetensors"
        path.write_bytes(data)
        try:
            with self.lock:
                id = f"m{len(self.models)}-{path.stem[:8]}"
            entry = self.load_model(path, id, name)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        with self.lock:
            self.models[entry.id] = entry
        return entry.info()

    # -- queries -------------------------------------------------------------------------------------------
    def model_names(self):
        return [m.name for m in self.models.values()]

    def state(self) -> dict:
        with self.lock:
            return {"models": [m.info() for m in self.models.values()],
                    "images": [i.info() for i in self.images.values()],
                    "max_megapixels": self.max_pixels / 1e6, "max_sigma": MAX_SIGMA, "seed": self.seed}

    def view(self, image_id, sigma, model_id) -> View:
        try:
            sigma = 0.0 if sigma is None else float(sigma)
        except (TypeError, ValueError):
            raise BfcnnError(f"sigma must be a number, got {sigma!r}") from None
        if not (0 <= sigma <= MAX_SIGMA):
            raise BfcnnError(f"sigma must be between 0 and {MAX_SIGMA:g} (0..255 scale), got {sigma:g}")
        with self.lock:
            if image_id not in self.images:
                raise BfcnnError(f"no image {image_id!r} (it may have been forgotten: choose or upload it again)")
            if model_id not in self.models:
                raise BfcnnError(f"no model {model_id!r}")
            key = f"{image_id}|{sigma:g}|{model_id}|{self.seed}"
            id = "v" + hashlib.sha1(key.encode()).hexdigest()[:16]
            view = self.views.get(id)
            if view is None:
                view = self.views[id] = View(id, self.images[image_id], self.models[model_id], sigma, self.seed)
            self.views.move_to_end(id)
        view.compute()
        with self.lock:  # forget the views used longest ago, by number and by memory
            while len(self.views) > 1 and (len(self.views) > MAX_VIEWS or sum(
                    getattr(v, "nbytes", 0) for v in self.views.values()) > MAX_VIEW_BYTES):
                self.views.popitem(last=False)
        return view

    def get_view(self, id) -> View:
        with self.lock:
            view = self.views.get(id)
        if view is None or not view.ready:
            raise LookupError(id)
        return view


# ----------------------------------------------------------------------------------------------------------------
# the Starlette app

def create_app(explorer: Explorer):
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    def error(message, status=400):
        return JSONResponse({"error": message}, status_code=status)

    def view_or_404(request):
        try:
            return explorer.get_view(request.path_params["view"])
        except LookupError:
            raise HTTPException(404, "this view is no longer cached: choose the image or the noise level again")

    def pixel(request):
        try:
            return int(request.query_params["x"]), int(request.query_params["y"])
        except (KeyError, ValueError):
            raise BfcnnError("give the pixel as ?x=...&y=... (integers)") from None

    async def body(request):
        """The request's body, refused (413) past the upload limit without reading all of it."""
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > explorer.max_bytes:
            raise HTTPException(413, f"the file is {int(declared) / 2**20:.0f} MB, over the upload limit of "
                                f"{explorer.max_bytes / 2**20:.0f} MB")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > explorer.max_bytes:
                raise HTTPException(413, f"the file is over the upload limit of {explorer.max_bytes / 2**20:.0f} MB")
            chunks.append(chunk)
        return b"".join(chunks)

    def filename(request):
        from urllib.parse import unquote

        return unquote(request.headers.get("x-filename", ""))

    async def page(request):
        return HTMLResponse(PAGE.read_text())

    async def state(request):
        return JSONResponse(explorer.state())

    async def upload_image(request):
        data = await body(request)
        return JSONResponse(await run_in_threadpool(explorer.add_upload, filename(request), data))

    async def upload_model(request):
        data = await body(request)
        return JSONResponse(await run_in_threadpool(explorer.add_model_upload, filename(request), data))

    async def make_view(request):
        try:
            spec = await request.json()
        except ValueError:
            raise BfcnnError("the request is not JSON") from None
        if not isinstance(spec, dict):
            raise BfcnnError("the request is a JSON object {image, sigma, model}")
        view = await run_in_threadpool(explorer.view, spec.get("image"), spec.get("sigma"), spec.get("model"))
        return JSONResponse(view.info())

    def image(request):
        view = view_or_404(request)
        try:
            data = view.png(request.path_params["which"])
        except KeyError:
            raise HTTPException(404, "no such image (the spread maps exist once computed)") from None
        return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=600"})

    def filter_(request):
        view = view_or_404(request)
        return JSONResponse(view.filter(*pixel(request)))

    def spread(request):
        return JSONResponse(view_or_404(request).spread_maps())

    def dimensionality(request):
        view = view_or_404(request)
        return JSONResponse(view.dimensionality(*pixel(request)))

    def download(request):
        view = view_or_404(request)
        path = view.download_file(explorer.workdir)
        return FileResponse(path, media_type="image/png", filename=path.name)

    async def bad_input(request, exc):
        return error(str(exc), 400)

    async def http_error(request, exc):
        return error(exc.detail, exc.status_code)

    async def disconnected(request, exc):
        return Response(status_code=499)

    async def failure(request, exc):  # a bug: the page says so, the log keeps the traceback, the server goes on
        log.error("bfcnn explore: %s %s failed", request.method, request.url.path, exc_info=exc)
        return error(f"internal error: {type(exc).__name__}: {exc}", 500)

    routes = [
        Route("/", page),
        Route("/api/state", state),
        Route("/api/images", upload_image, methods=["POST"]),
        Route("/api/models", upload_model, methods=["POST"]),
        Route("/api/views", make_view, methods=["POST"]),
        Route("/api/views/{view}/{which}.png", image),
        Route("/api/views/{view}/filter", filter_),
        Route("/api/views/{view}/spread", spread),
        Route("/api/views/{view}/dimensionality", dimensionality),
        Route("/api/views/{view}/download", download),
    ]
    handlers = {BfcnnError: bad_input, HTTPException: http_error, ClientDisconnect: disconnected, Exception: failure}
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.explorer = explorer
    return app
