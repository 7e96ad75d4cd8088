"""explain a denoiser: each output pixel as an adaptive linear filter (filters, spread map, net bias, dimensionality)

The explanation's maths (Jacobian products, spread map, net bias, effective dimensionality) is in
bfcnn.explain.maths, its inputs (model, settings, pixels) in bfcnn.explain.inputs, its figures in
bfcnn.explain.figures; this module puts them together (`explain`) and is the `bfcnn explain` command.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile  # noqa: F401 (bfcnn.explain.tempfile: where the output folder is probed)
import time
from pathlib import Path

import numpy as np
import torch

from ..denoise import DEFAULT_MODEL
from ..devices import resolve_device
from ..errors import BfcnnError
from ..layers import model_channels
from .figures import draw_figures, show
from .inputs import (MIN_PICK_SIZE, already_there, check_pickable, check_settings, filter_stats, is_integer,
                     noisy_version, pick_pixels, resolve_model, writable_folder)
from .maths import (EXACT_LIMIT, MIN_WEIGHT_SUM, adaptive_filters, as_batch, coordinate_probes,
                    effective_dimensionality, evaluation, jacobian, jvps, moments_to_spread, net_bias, rademacher,
                    relative_residual, spread_map, vjps)

log = logging.getLogger("bfcnn")

DEFAULT_SIGMAS = (10.0, 25.0, 50.0, 75.0)
EXACT_MAX_DIMENSIONS = 4800  # 40 x 40 colour: above this, dimensionality is estimated with probes

__all__ = ["DEFAULT_SIGMAS", "EXACT_LIMIT", "EXACT_MAX_DIMENSIONS", "MIN_PICK_SIZE", "MIN_WEIGHT_SUM",
           "adaptive_filters", "add_arguments", "already_there", "as_batch", "check_pickable", "check_settings",
           "command", "coordinate_probes", "draw_figures", "effective_dimensionality", "evaluation", "explain",
           "filter_stats", "is_integer", "jacobian", "json_safe", "jvps", "model_channels", "moments_to_spread",
           "net_bias", "noisy_version", "pick_pixels", "rademacher", "relative_residual", "resolve_model", "show",
           "spread_map", "vjps", "writable_folder"]


def explain(model, image, sigma=25.0, pixels=None, sigmas=DEFAULT_SIGMAS, probes=8, exact=None, seed=0,
            output_dir=None, device="cpu", dtype=torch.float32, chunk_size=None, figures=True) -> dict:
    """The whole report: filters of `pixels` (default: picked on edges, texture, flat areas), the spread map, the
    net bias at `sigma`, and the effective dimensionality at each of `sigmas` (exact when `exact`, or when None
    and the image has at most 4800 values; else Hutchinson with `probes`). Noise is added with `seed`
    (sigma on the 0..255 scale; 0 explains the image as given). Writes PNG figures, report.json and filters.npz
    into `output_dir` when given (created, and checked writable, before any computation). Returns the report (a
    JSON-able dict; an undefined quantity, such as the net bias of a zero output, is None and explained in
    "notes"). `model` is not changed: a copy is moved or converted when `device` or `dtype` asks for it."""
    timings = {}
    start = time.perf_counter()
    check_settings(sigma, sigmas, probes, chunk_size)
    device = resolve_device(device)
    model = resolve_model(model, device, dtype)
    clean = as_batch(image, device, dtype)
    expected = model_channels(model)
    if expected != clean.shape[1]:
        raise BfcnnError(f"the model takes {expected}-channel images, the image has {clean.shape[1]} channels")
    _, c, h, w = clean.shape
    if h * w == 0:
        raise BfcnnError(f"the image is empty ({w} x {h} pixels)")
    for item in pixels or ():
        if not (0 <= int(item[0]) < w and 0 <= int(item[1]) < h):
            raise BfcnnError(f"pixel ({item[0]}, {item[1]}) is outside the {w} x {h} image")
    if not pixels:
        check_pickable(h, w)
    n = c * h * w
    use_exact = exact if exact is not None else n <= EXACT_MAX_DIMENSIONS
    if use_exact and n > EXACT_LIMIT:
        raise BfcnnError(f"the full Jacobian of a {c} x {h} x {w} image has {n}^2 entries: too many for the "
                         f"exact dimensionality (at most {EXACT_LIMIT} values); use probes")
    if output_dir is not None:
        output_dir = writable_folder(output_dir)
    noise, noisy = noisy_version(clean, sigma, seed)
    timings["load"] = time.perf_counter() - start

    t = time.perf_counter()
    spread = spread_map(model, noisy, with_net_bias=True, chunk_size=chunk_size)
    denoised = spread["denoised"]
    timings["spread_map_and_net_bias"] = time.perf_counter() - t

    t = time.perf_counter()
    denoised_image = denoised[0].permute(1, 2, 0).float().cpu().numpy()
    if pixels:
        chosen = [(int(item[0]), int(item[1]), item[2] if len(item) > 2 else "given") for item in pixels]
    else:
        chosen = pick_pixels(denoised_image)
    rows = adaptive_filters(model, noisy, [(px, py) for px, py, _ in chosen], chunk_size)
    gray_filters = rows.sum(dim=1)  # K x H x W: weights on a grey change of the input
    filters = []
    for (px, py, kind), gray in zip(chosen, gray_filters):
        stats = filter_stats(gray.cpu(), px, py)
        stats["kind"] = kind
        filters.append(stats)
    timings["filters"] = time.perf_counter() - t

    t = time.perf_counter()
    levels = []
    for level in sigmas:
        y = clean + float(level) / 255.0 * noise
        result = effective_dimensionality(model, y, probes=None if use_exact else probes, seed=seed,
                                          chunk_size=chunk_size)
        levels.append({"sigma": float(level), **result, "fraction": result["frobenius"] / n})
    timings["dimensionality"] = time.perf_counter() - t

    maps = {k: spread[k] for k in ("weight_sum", "spread")}
    spread_values = maps["spread"][torch.isfinite(maps["spread"])]
    offset = torch.hypot(spread["centre_x"] - torch.arange(w, dtype=torch.float64, device=device),
                         spread["centre_y"] - torch.arange(h, dtype=torch.float64, device=device)[:, None])
    offset = offset[torch.isfinite(offset)]

    def quantiles(values):
        if values.numel() == 0:
            return {"median": None, "p10": None, "p90": None, "mean": None}
        q = torch.quantile(values.float().cpu(), torch.tensor([0.1, 0.5, 0.9]))
        return {"median": float(q[1]), "p10": float(q[0]), "p90": float(q[2]), "mean": float(values.mean())}

    notes = []
    bias = spread["net_bias"]
    if not math.isfinite(bias):
        bias = None
        if torch.isfinite(denoised).all():
            notes.append("net_bias is null: the denoised image f(y) is zero, so the relative residual "
                         "||f(y) - J(y) y|| / ||f(y)|| is undefined")
        else:
            notes.append("net_bias is null: the denoised image f(y) has NaN or infinite values")
    report = {
        "model": {"class": type(model).__name__, "bias_free": getattr(model, "bias_free", None),
                  "channels": expected},
        "image": {"channels": c, "height": h, "width": w},
        "sigma": float(sigma), "seed": seed, "device": str(device), "dtype": str(dtype).replace("torch.", ""),
        "net_bias": bias,
        "filters": filters,
        "spread_map": {"pixels": quantiles(spread_values),
                       "weight_sum": quantiles(maps["weight_sum"].flatten()),
                       "mean_offset": float(offset.mean()) if offset.numel() else None,
                       "undefined_fraction": 1.0 - spread_values.numel() / (h * w),
                       "low_weight_sum_fraction": float(spread["low_sum"].double().mean()),
                       "negative_second_moment_fraction": float(spread["sharpening"].double().mean())},
        "dimensionality": {"dimensions": n, "method": "exact" if use_exact else "hutchinson", "levels": levels},
        "timings_s": timings,
    }
    if output_dir is not None:
        t = time.perf_counter()
        files = ["report.json", "filters.npz"]
        windows = {}
        for k, stats in enumerate(filters):
            r = max(stats["radius_99"], 4)
            x0, x1, y0, y1 = max(stats["x"] - r, 0), stats["x"] + r + 1, max(stats["y"] - r, 0), stats["y"] + r + 1
            windows[f"filter_{k}"] = rows[k, :, y0:y1, x0:x1].float().cpu().numpy()
            windows[f"origin_{k}"] = np.array([x0, y0])
        np.savez_compressed(output_dir / "filters.npz", **windows)
        if figures:
            noisy_image = noisy[0].permute(1, 2, 0).float().cpu().numpy()
            files += draw_figures(output_dir, noisy_image, denoised_image, gray_filters.float().cpu().numpy(),
                                  filters, maps["spread"].float().cpu().numpy(),
                                  maps["weight_sum"].float().cpu().numpy(), report)
        timings["writing"] = time.perf_counter() - t
        report["files"] = files
    timings["total"] = time.perf_counter() - start
    json_safe(report, notes)  # strict JSON: NaN and infinity become null, each with a note
    if notes:
        report["notes"] = notes
    if output_dir is not None:
        (output_dir / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False))
    return report


def json_safe(value, notes, where="report"):
    """`value` with every NaN or infinity (which strict JSON cannot hold) replaced by None, each noted in `notes`;
    dicts and lists are changed in place."""
    if isinstance(value, dict):
        for key, item in value.items():
            value[key] = json_safe(item, notes, f"{where}.{key}")
    elif isinstance(value, list):
        for k, item in enumerate(value):
            value[k] = json_safe(item, notes, f"{where}[{k}]")
    if isinstance(value, float) and not math.isfinite(value):
        notes.append(f"{where.removeprefix('report.')} is null: it came out as {value} (undefined)")
        return None
    return value


def parse_pixel(text):
    try:
        x, y = (int(v) for v in text.split(","))
    except ValueError:
        raise BfcnnError(f"--pixels takes x,y pairs of integers, got {text!r}") from None
    return x, y


def parse_crop(text):
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4 or values[2] <= 0 or values[3] <= 0 or min(values[:2]) < 0:
        raise BfcnnError(f"--crop takes x,y,width,height (non-negative integers), got {text!r}")
    return values


def add_arguments(parser):
    parser.add_argument("image", help="the image to explain (noise of --sigma is added to it)")
    parser.add_argument("--model", default=None, help="a run folder, a .safetensors file or a shipped model name "
                        f"(default: the shipped {DEFAULT_MODEL})")
    parser.add_argument("--sigma", type=float, default=25.0, help="noise level on the 0..255 scale (default 25; "
                        "0 explains the image as it is)")
    parser.add_argument("--pixels", nargs="+", metavar="X,Y", help="pixels whose filters to draw "
                        "(default: picked on edges, texture and flat areas)")
    parser.add_argument("-o", "--output-dir", required=True, help="folder for the PNG figures and report.json")
    parser.add_argument("--sigmas", type=float, nargs="+", default=list(DEFAULT_SIGMAS),
                        help="noise levels of the dimensionality curve (default: %(default)s)")
    parser.add_argument("--probes", type=int, default=8, help="random probes per level for the dimensionality "
                        "estimate (default 8)")
    parser.add_argument("--exact", choices=("auto", "yes", "no"), default="auto",
                        help=f"dimensionality from the full Jacobian (auto: when C*H*W <= {EXACT_MAX_DIMENSIONS})")
    parser.add_argument("--crop", metavar="X,Y,W,H", help="explain this crop of the image")
    parser.add_argument("--color-mode", choices=("auto", "rgb", "grayscale"), default="auto",
                        help="how to read the image (auto: from the model's channels)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise and the probes")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--double", action="store_true", help="compute in float64")
    parser.add_argument("--chunk-size", type=int, default=None, help="products per batch (bounds memory)")


def command(args):
    from ..images import read_image

    path = Path(args.image)
    if not path.is_file():
        raise BfcnnError(f"image not found: {path}")
    if args.output_dir and Path(args.output_dir).exists() and not Path(args.output_dir).is_dir():
        raise BfcnnError(f"-o {args.output_dir}: is a file, not a folder")
    pixels = [parse_pixel(p) for p in args.pixels] if args.pixels else None
    crop = parse_crop(args.crop) if args.crop else None
    check_settings(args.sigma, args.sigmas, args.probes, args.chunk_size)

    device = str(resolve_device(args.device))  # auto, cpu, cuda[:N]; CUDA asked for on a machine without it
    try:
        model = resolve_model(args.model or DEFAULT_MODEL, device)
    except BfcnnError:
        raise
    except Exception as error:  # a file that is not a bfcnn weights file
        raise BfcnnError(f"cannot load model {args.model!r}: {type(error).__name__}: {error}") from None
    mode = args.color_mode
    if mode == "auto":
        mode = "grayscale" if model_channels(model) == 1 else "rgb"
    try:
        image = read_image(path, mode)
    except (OSError, ValueError) as error:
        raise BfcnnError(f"cannot read image {path}: {error}") from None
    if crop:
        x, y, w, h = crop
        if x + w > image.shape[1] or y + h > image.shape[0]:
            raise BfcnnError(f"--crop {args.crop} does not fit the {image.shape[1]} x {image.shape[0]} image")
        image = image[y:y + h, x:x + w]
    exact = {"auto": None, "yes": True, "no": False}[args.exact]
    report = explain(model, image, sigma=args.sigma, pixels=pixels, sigmas=args.sigmas, probes=args.probes,
                     exact=exact, seed=args.seed, output_dir=args.output_dir, device=device,
                     dtype=torch.float64 if args.double else torch.float32, chunk_size=args.chunk_size)
    def number(value, spec, unit=""):  # None: undefined (report.json's notes say why)
        return "n/a" if value is None else f"{value:{spec}}{unit}"

    levels = ", ".join(f"{lv['sigma']:g}: {number(lv['frobenius'], '.1f')}"
                       for lv in report["dimensionality"]["levels"])
    print(f"net bias {number(report['net_bias'], '.2e')}; median filter spread "
          f"{number(report['spread_map']['pixels']['median'], '.2f', ' px')}; effective dimensionality "
          f"({report['dimensionality']['method']}) {levels}")
    if report.get("notes"):
        print(f"n/a: undefined, see the notes in report.json ({len(report['notes'])})")
    print(f"wrote {', '.join(report['files'])} to {args.output_dir}")
