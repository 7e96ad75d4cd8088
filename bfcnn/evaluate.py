"""evaluate models on test sets: PSNR/SSIM per test set x corruption x level, CSV/JSON/markdown and a plot

The `evaluate` stage of a config (`evaluate:` section) and `bfcnn evaluate MODEL... --data DIR... -o OUT`.
Gaussian noise follows the field's protocol, so figures sit beside the published ones: clean images in
[0, 1], float noise of std sigma/255 added unclipped and unquantized, a fixed seed per image (seed + index,
the same for every model and level), the model's output clamped to [0, 1], metrics on whole images. The noisy
input's figures (clamped the same way) come alongside. Other corruptions are any registered noise, with its
level key (e.g. `sigma`) swept over `levels`.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from .registry import build, default_registries, ref
from .errors import BfcnnError, output_folder
from .devices import resolve_device
from .engines import ENGINES, make_engine
from .images import (SAMPLE_PHOTOS, ImageReadError, convert_channels, find_images, read_image, sample_photo,
                     to_float)
from .layers import model_channels

log = logging.getLogger("bfcnn")

GAUSSIAN = "gaussian"
NUMBERS = {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 1}

EVALUATE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "directories": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                        "description": "test sets: image folders, each named by its folder name"},
        "sample_photos": {"type": "array", "items": {"enum": list(SAMPLE_PHOTOS)}, "minItems": 1,
                          "description": "photos that scikit-image ships, as a test set named sample_photos "
                                         "(astronaut is the sample_images dataset's held-out photo); the "
                                         "default when no directories are given"},
        "validation_images": {"type": "boolean", "description": "the config's dataset's held-out validation "
                                                                 "images as a test set (e.g. sample_images' photo)"},
        "sigmas": {**NUMBERS, "default": [15, 25, 50],
                   "description": "Gaussian noise levels in 0..255 units (field protocol)"},
        "corruptions": {"type": "array", "description": "more corruptions: registered noises, swept over levels",
                        "items": {"type": "object", "additionalProperties": False, "required": ["noise"],
                                  "properties": {"name": {"type": "string"}, "noise": ref("noise"),
                                                 "levels": NUMBERS,
                                                 "level_key": {"type": "string", "default": "sigma"}}}},
        "metrics": {"type": "array", "items": ref("metric"), "default": [{"type": "psnr"}, {"type": "ssim"}],
                    "description": "registered metrics, each a column of the tables"},
        "models": {"type": "array", "description": "more models to compare with the run's own (same plot/table)",
                   "items": {"type": "object", "additionalProperties": False, "required": ["path"],
                             "properties": {"name": {"type": "string"},
                                            "path": {"type": "string", "description": "run folder, "
                                                     ".safetensors file or shipped model name"}}}},
        "color_mode": {"enum": ["rgb", "grayscale"], "description": "default: from the model's channels"},
        "seed": {"type": "integer", "minimum": 0},
        "max_images": {"type": "integer", "minimum": 1, "description": "first N images of each test set"},
        "save_images": {"type": "integer", "minimum": 0,
                        "description": "write noisy/denoised PNGs of the first N images of each test set"},
        "iterations": {"type": "integer", "minimum": 1, "description": "apply each model this many times"},
        "tile": {"type": "integer", "minimum": 0, "description": "tiled inference for large photos (equal to "
                                                              "whole images, bounded memory); default 0: whole images"},
        "device": {"type": "string", "description": "default: the config's device"},
        "engine": {"enum": list(ENGINES), "default": "auto",
                   "description": "how the model runs on a CPU (bfcnn.engines; auto: the fastest exact one)"},
        "training_range": {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 2,
                           "maxItems": 2, "description": "sigma range shaded in the plot (default: the config's "
                                                         "noise.sigma_range)"},
        "output": {"type": "string", "description": "sub-folder of the run folder (default evaluation)"},
    },
}


# the defaults live once, in the schema: for configs and the command line
DEFAULT_SIGMAS = EVALUATE_SCHEMA["properties"]["sigmas"]["default"]
DEFAULT_METRICS = EVALUATE_SCHEMA["properties"]["metrics"]["default"]


# ----------------------------------------------------------------------------------------------- protocol

def gaussian_noisy(clean: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """The field's protocol: clean + N(0, (sigma/255)^2) float noise, unclipped, unquantized, seeded per image.

    The noise is drawn on the CPU in float32 from a generator seeded with `seed`, so it is the same on every
    machine and device, for every model, and scales with sigma (one realisation per image).
    """
    generator = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(clean.shape, generator=generator, dtype=torch.float32)
    return clean.float() + (float(sigma) / 255.0) * noise


def corrupt(clean, corruption, level, seed, built=None):
    """The noisy image; `built` caches the registered noises by (corruption, level)."""
    if corruption["name"] == GAUSSIAN and "noise" not in corruption:
        return gaussian_noisy(clean, level, seed)
    built = {} if built is None else built
    key = (corruption["name"], level)
    if key not in built:
        spec = dict(corruption["noise"])
        if level is not None:
            spec[corruption.get("level_key", "sigma")] = level
        built[key] = build("noise", spec)
    return built[key](clean.float(), torch.Generator().manual_seed(int(seed)))


def validation_set(dataset_spec, color_mode, max_images=None):
    """The held-out validation images of the config's dataset (e.g. the photo sample_images keeps out)."""
    if not dataset_spec:
        raise BfcnnError("evaluate.validation_images: the config has no dataset section to take them from")
    images = build("dataset", dataset_spec).validation_images()[:max_images]
    if not images:
        raise BfcnnError(f"evaluate.validation_images: the {dataset_spec['type']} dataset holds out no image "
                         "(give it validation images, or use directories / sample_photos)")
    name = f"{dataset_spec['type']}_validation"
    return name, [(str(i), lambda t=t: convert_channels(t[0].float().numpy().transpose(1, 2, 0), color_mode))
                  for i, t in enumerate(images)]


def check_directories(cfg):
    missing = [d for d in cfg.get("directories", []) if not Path(d).is_dir()]
    if missing:
        raise BfcnnError(f"evaluate: test folder(s) not found: {', '.join(missing)}")


def test_sets(cfg, color_mode, dataset_spec=None):
    """[(name, [(image name, loader)])]: loaders read one image at a time (H x W x C float32 in [0, 1])."""
    sets, used = [], set()
    check_directories(cfg)
    for directory in cfg.get("directories", []):
        paths = find_images(directory)[:cfg.get("max_images")]
        if not paths:
            raise BfcnnError(f"evaluate: no image in {directory}")
        name = Path(directory).resolve().name
        while name in used:
            name += "_"
        used.add(name)
        root = Path(directory)
        sets.append((name, [(str(p.relative_to(root).with_suffix("")),
                             lambda p=p: read_image(p, color_mode)) for p in paths]))
    if cfg.get("validation_images"):
        sets.append(validation_set(dataset_spec, color_mode, cfg.get("max_images")))
    default = [] if cfg.get("directories") or cfg.get("validation_images") else ["astronaut"]
    photos = cfg.get("sample_photos") or default
    if photos:
        photos = photos[:cfg.get("max_images")]
        sets.append(("sample_photos", [(n, lambda n=n: to_float(sample_photo(n, color_mode))) for n in photos]))
    return sets


def corruptions_of(cfg):
    """Gaussian (field protocol) at `sigmas` (the schema's default unless only other corruptions are given),
    then those."""
    items = []
    if "sigmas" in cfg or not cfg.get("corruptions"):
        items.append({"name": GAUSSIAN, "levels": list(cfg.get("sigmas", DEFAULT_SIGMAS))})
    for i, item in enumerate(cfg.get("corruptions", [])):
        name = item.get("name") or item["noise"]["type"]
        if any(c["name"] == name for c in items):
            name = f"{name}_{i}"
        items.append({**item, "name": name, "levels": list(item.get("levels") or [None])})
    return items


# ----------------------------------------------------------------------------------------------- evaluation

def evaluate_models(models, cfg, output_dir, device="cpu", training_range=None, dataset=None) -> dict:
    """models: [(name, nn.Module, source)]; cfg: an `evaluate` section; results into output_dir.
    `dataset`: the config's dataset spec, for `validation_images`."""
    output_dir = Path(output_dir)
    output_folder(output_dir)
    device = torch.device(device)
    channels = {name: model_channels(model) for name, model, _ in models}
    if len(set(channels.values())) > 1:
        raise BfcnnError(f"evaluate: the models take different channel counts {channels}: evaluate them apart")
    color_mode = cfg.get("color_mode") or ("grayscale" if next(iter(channels.values())) == 1 else "rgb")
    metric_specs = cfg.get("metrics") or DEFAULT_METRICS
    metrics = {}
    for spec in metric_specs:
        spec = {"type": spec} if isinstance(spec, str) else spec
        metrics[spec["type"] if spec["type"] not in metrics else f"{spec['type']}_{len(metrics)}"] = build("metric", spec)
    seed, iterations, save = cfg.get("seed", 0), cfg.get("iterations", 1), cfg.get("save_images", 0)
    modules = [(name, model.to(device).eval()) for name, model, _ in models]
    engine = cfg.get("engine", "auto")
    if cfg.get("tile"):  # big photos: tiles with the receptive field as margin give the whole-image result
        from .denoise import Denoiser
        tiled = {name: Denoiser(module, device=device, tile=cfg["tile"], engine=engine) for name, module in modules}
    else:
        engines = {name: make_engine(module, engine, device) for name, module in modules}
    per_image, seconds, noises, corruptions, unreadable = [], {}, {}, corruptions_of(cfg), []
    for set_name, images in test_sets(cfg, color_mode, dataset):
        log.info("evaluate: %s (%d images)", set_name, len(images))
        for index, (image_name, load) in enumerate(images):
            try:
                array = load()
            except ImageReadError as error:  # one bad file must not cost the whole evaluation (seeds stay put)
                log.warning("evaluate: skipping %s/%s: %s", set_name, image_name, error)
                unreadable.append(f"{set_name}/{image_name}")
                continue
            if array.shape[2] != next(iter(channels.values())):
                raise BfcnnError(f"evaluate: {set_name}/{image_name} has {array.shape[2]} channels, the models "
                                 f"take {next(iter(channels.values()))} (set color_mode)")
            clean = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None]
            if index < save:
                write_png(output_dir / "images" / set_name / f"{safe(image_name)}_clean.png", clean)
            for corruption in corruptions:
                for level in corruption["levels"]:
                    noisy = corrupt(clean, corruption, level, seed + index, noises)
                    row = {"test_set": set_name, "image": image_name, "corruption": corruption["name"],
                           "level": level, "height": clean.shape[2], "width": clean.shape[3]}
                    noisy_scores = {f"noisy_{k}": float(m(noisy, clean)[0]) for k, m in metrics.items()}
                    folder = output_dir / "images" / set_name / f"{corruption['name']}-{level_text(level)}"
                    if index < save:
                        write_png(folder / f"{safe(image_name)}_noisy.png", noisy)
                    for name, module in modules:
                        began = time.perf_counter()
                        if cfg.get("tile"):
                            out = tiled_denoise(tiled[name], noisy, iterations)
                        else:
                            out = whole_denoise(engines[name], noisy, iterations, device)
                        key = (name, set_name, corruption["name"], level)
                        seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - began
                        scores = {k: float(m(out, clean)[0]) for k, m in metrics.items()}
                        per_image.append({"model": name, **row, **scores, **noisy_scores})
                        if index < save:
                            write_png(folder / f"{safe(image_name)}_{safe(name)}.png", out)
    if not per_image:
        raise BfcnnError(f"evaluate: no readable test image (unreadable: {', '.join(unreadable)})")
    results = aggregate(per_image, list(metrics), seconds)
    protocol = ("Gaussian: clean in [0,1], float noise sigma/255 added unclipped and unquantized, seed "
                f"{seed}+image index; output (and noisy input) clamped to [0,1]; "
                + (f"tiles of {cfg['tile']} px (equal to whole images); " if cfg.get("tile") else "whole images; ")
                + f"{color_mode}; iterations {iterations}"
                + (f"; left out as unreadable: {', '.join(unreadable)}" if unreadable else ""))
    files = write_reports(output_dir, results, per_image, list(metrics), protocol,
                          {name: str(source) for name, _, source in models}, training_range)
    return {"results": results, "files": files, "protocol": protocol}


def whole_denoise(module, noisy, iterations, device):
    """The protocol: the whole image through the model (k times), output clamped to [0, 1]."""
    with torch.inference_mode():
        out = noisy.to(device)
        for _ in range(iterations):
            out = module(out)
        return out.float().clamp(0, 1).cpu()


def tiled_denoise(denoiser, noisy, iterations):
    array = denoiser.denoise(noisy[0].numpy().transpose(1, 2, 0), iterations=iterations, clip=True)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None]


def aggregate(per_image, metric_names, seconds):
    groups = {}
    for row in per_image:
        groups.setdefault((row["model"], row["test_set"], row["corruption"], row["level"]), []).append(row)
    results = []
    for (model, set_name, corruption, level), rows in groups.items():
        entry = {"model": model, "test_set": set_name, "corruption": corruption, "level": level,
                 "images": len(rows)}
        for name in metric_names:
            entry[name] = float(np.mean([r[name] for r in rows]))
        for name in metric_names:
            entry[f"noisy_{name}"] = float(np.mean([r[f"noisy_{name}"] for r in rows]))
        pixels = sum(r["height"] * r["width"] for r in rows)
        entry["seconds"] = round(seconds.get((model, set_name, corruption, level), 0.0), 4)
        entry["mpx_per_s"] = round(pixels / 1e6 / max(entry["seconds"], 1e-9), 3)
        results.append(entry)
    return results


def level_text(level):
    if level is None:
        return "default"
    return f"{level:g}" if isinstance(level, (int, float)) else str(level)


def safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))


def write_png(path, tensor):
    from .images import write_image

    write_image(path, tensor[0].float().clamp(0, 1).numpy().transpose(1, 2, 0))


# ----------------------------------------------------------------------------------------------- reports

def write_reports(output_dir, results, per_image, metric_names, protocol, sources, training_range) -> dict:
    output_dir = Path(output_dir)
    files = {}
    fields = ["model", "test_set", "corruption", "level", "images", *metric_names,
              *[f"noisy_{n}" for n in metric_names], "seconds", "mpx_per_s"]
    files["csv"] = write_csv(output_dir / "results.csv", results, fields)
    files["per_image_csv"] = write_csv(
        output_dir / "per_image.csv", per_image,
        ["model", "test_set", "image", "corruption", "level", "height", "width", *metric_names,
         *[f"noisy_{n}" for n in metric_names]])
    path = output_dir / "results.json"
    path.write_text(json.dumps({"protocol": protocol, "models": sources, "results": results,
                                "per_image": per_image}, indent=2))
    files["json"] = str(path)
    path = output_dir / "results.md"
    path.write_text(markdown_table(results, metric_names, protocol))
    files["markdown"] = str(path)
    plot = plot_levels(output_dir / "psnr_vs_sigma.png", results, metric_names, training_range)
    if plot:
        files["plot"] = plot
    return files


def write_csv(path, rows, fields):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})
    return str(path)


def cell(row, metric_names, prefix=""):
    parts = []
    for name in metric_names[:2]:
        value = row[f"{prefix}{name}"]
        parts.append(f"{value:.2f}" if name.startswith("psnr") else f"{value:.4f}")
    return " / ".join(parts)


def markdown_table(results, metric_names, protocol) -> str:
    lines = []
    shown = " / ".join(metric_names[:2])
    for corruption in dict.fromkeys(r["corruption"] for r in results):
        rows = [r for r in results if r["corruption"] == corruption]
        levels = list(dict.fromkeys(r["level"] for r in rows))
        label = "σ" if corruption == GAUSSIAN else "level"
        lines += [f"### {corruption} ({shown})", "",
                  "| test set | model | " + " | ".join(f"{label} {level_text(v)}" for v in levels) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in levels) + " |"]
        for set_name in dict.fromkeys(r["test_set"] for r in rows):
            by_set = [r for r in rows if r["test_set"] == set_name]
            first = {r["level"]: r for r in by_set}
            lines.append(f"| {set_name} | noisy input | "
                         + " | ".join(cell(first[v], metric_names, "noisy_") if v in first else "" for v in levels) + " |")
            for model in dict.fromkeys(r["model"] for r in by_set):
                mine = {r["level"]: r for r in by_set if r["model"] == model}
                lines.append(f"| {set_name} | {model} | "
                             + " | ".join(cell(mine[v], metric_names) if v in mine else "" for v in levels) + " |")
        lines.append("")
    lines.append(f"Protocol: {protocol}.")
    return "\n".join(lines) + "\n"


def plot_levels(path, results, metric_names, training_range=None):
    """PSNR (the first metric) versus level for each test set, one line per model, the noisy input dashed."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    metric = metric_names[0]
    numeric = [r for r in results if isinstance(r["level"], (int, float))]
    panels = list(dict.fromkeys((r["test_set"], r["corruption"]) for r in numeric))
    if not panels:
        return None
    figure = Figure(figsize=(5.2 * len(panels), 4.2), dpi=110)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (set_name, corruption) in zip(axes, panels):
        rows = [r for r in numeric if r["test_set"] == set_name and r["corruption"] == corruption]
        if training_range and corruption == GAUSSIAN:
            ax.axvspan(*training_range, color="0.92", label=f"training range {training_range[0]:g}-{training_range[1]:g}")
        noisy = {r["level"]: r[f"noisy_{metric}"] for r in rows}
        levels = sorted(noisy)
        ax.plot(levels, [noisy[v] for v in levels], "--", color="0.4", label="noisy input")
        for model in dict.fromkeys(r["model"] for r in rows):
            mine = sorted((r["level"], r[metric]) for r in rows if r["model"] == model)
            ax.plot([v for v, _ in mine], [s for _, s in mine], "o-", label=model)
        ax.set_title(f"{set_name}, {corruption}")
        ax.set_xlabel("sigma (0-255)" if corruption == GAUSSIAN else "level")
        ax.set_ylabel(f"{metric.upper()} (dB)" if metric.startswith("psnr") else metric)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    return str(path)


# ----------------------------------------------------------------------------------------------- stage

def training_range_of(config, cfg, registries=None):
    """The sigma range shaded in the plot: `training_range`, else the config's noise's `sigma_range` where that
    noise gives sigmas in pixel units of a `value_range` (its schema says so), put on the 0..255 scale."""
    if cfg.get("training_range"):
        return list(cfg["training_range"])
    noise = config.get("noise") or {}
    registry = (registries or default_registries())["noise"]
    if not noise.get("sigma_range") or noise.get("type") not in registry:
        return None
    value_range = registry.get(noise["type"]).schema.get("properties", {}).get("value_range")
    if value_range is None:
        return None
    scale = 255.0 / float(noise.get("value_range", value_range.get("default", 255)))
    return [v * scale if scale != 1 else v for v in noise["sigma_range"]]


def model_name(source) -> str:
    path = Path(str(source))
    if path.is_dir() or path.name == "model.safetensors":
        return (path if path.is_dir() else path.parent).resolve().name
    return path.stem if path.suffix else str(source)


def check_inputs(config: dict, output_dir=None):
    """Before any stage runs: the evaluate section's test folders and comparison models exist (not found missing
    after hours of training)."""
    from .checkpoint import find_weights

    cfg = config.get("evaluate", {}) or {}
    check_directories(cfg)
    for extra in cfg.get("models", []):
        try:
            find_weights(extra["path"])
        except BfcnnError as error:
            raise BfcnnError(f"evaluate.models: {error}") from None


def evaluate(config: dict, output_dir, model=None) -> dict:
    """The `evaluate` stage: the run's model (and `models` to compare) into output_dir/evaluation/."""
    from .checkpoint import load_model

    cfg = config.get("evaluate", {}) or {}
    output_dir = Path(output_dir)
    device = resolve_device(cfg.get("device") or config.get("device", "auto"))
    model = model if model is not None else load_model(output_dir, device=device)
    models = [(config.get("name") or "model", model, output_dir)]
    for extra in cfg.get("models", []):
        models.append((extra.get("name") or model_name(extra["path"]), load_model(extra["path"], device=device),
                       extra["path"]))
    report = evaluate_models(models, cfg, output_dir / cfg.get("output", "evaluation"), device,
                             training_range_of(config, cfg), config.get("dataset"))
    for row in report["results"]:
        log.info("evaluate: %s %s %s %s: %s", row["model"], row["test_set"], row["corruption"],
                 level_text(row["level"]), ", ".join(f"{k} {row[k]:.4g}" for k in row
                                                     if k not in ("model", "test_set", "corruption", "level")))
    return {"results": report["results"], "files": report["files"]}


# ----------------------------------------------------------------------------------------------- CLI

def add_arguments(parser):
    parser.add_argument("models", nargs="+", metavar="MODEL",
                        help="run folders, .safetensors files or shipped model names (overlaid in table and plot)")
    parser.add_argument("-o", "--output-dir", required=True, help="where results.csv/json/md and the plot go")
    parser.add_argument("--data", nargs="+", default=[], metavar="DIR", help="test-set image folders")
    parser.add_argument("--sample-photos", nargs="*", choices=SAMPLE_PHOTOS, default=None, metavar="NAME",
                        help="scikit-image's photos as a test set (no names: astronaut); the default without --data")
    parser.add_argument("--sigmas", nargs="+", type=float, default=None,
                        help=f"Gaussian levels, 0-255 (default {' '.join(map(str, DEFAULT_SIGMAS))})")
    parser.add_argument("--names", nargs="+", default=None, help="labels of the models, in order")
    parser.add_argument("--metrics", nargs="+", default=None, help="registered metric names "
                        f"(default {' '.join(m['type'] for m in DEFAULT_METRICS)})")
    parser.add_argument("--config", help="take the evaluate section of this config; the flags above override it")
    parser.add_argument("--color-mode", choices=("rgb", "grayscale"), default=None)
    parser.add_argument("--max-images", type=int, default=None, help="first N images of each test set")
    parser.add_argument("--save-images", type=int, default=None, help="write noisy/denoised PNGs of the first N")
    parser.add_argument("--iterations", type=int, default=None, help="apply each model this many times (default 1)")
    parser.add_argument("--seed", type=int, default=None, help="noise seed of image i is seed + i (default 0)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--engine", choices=ENGINES, default=None,
                        help="how the models run on a CPU (default auto: the fastest that equals eager float32)")
    parser.add_argument("--training-range", nargs=2, type=float, default=None, metavar=("LOW", "HIGH"),
                        help="sigma range shaded in the plot")


def command(args) -> int:
    from .checkpoint import load_model
    from .config import load_config, validate

    config = load_config(args.config) if args.config else {}
    cfg = dict(config.get("evaluate", {}))
    if args.sigmas or "sigmas" not in cfg:
        cfg["sigmas"] = [int(s) if float(s).is_integer() else s for s in args.sigmas or DEFAULT_SIGMAS]
    if args.metrics:
        cfg["metrics"] = [{"type": m} for m in args.metrics]
    if args.data:
        cfg["directories"] = args.data
        cfg.pop("sample_photos", None)
        cfg.pop("validation_images", None)
    if args.sample_photos is not None:
        cfg["sample_photos"] = args.sample_photos or ["astronaut"]
    for key in ("color_mode", "max_images", "seed", "iterations", "save_images", "engine"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    validate({"evaluate": cfg})  # the same checks as a config's section: --iterations 0 is reported there
    if args.names and len(args.names) != len(args.models):
        raise BfcnnError(f"--names gives {len(args.names)} labels for {len(args.models)} models")
    names = args.names or [model_name(m) for m in args.models]
    if len(set(names)) != len(names):
        raise BfcnnError(f"two models share a label ({', '.join(names)}): pass --names")
    device = resolve_device(args.device)
    models = [(name, load_model(source, device=device), source) for name, source in zip(names, args.models)]
    report = evaluate_models(models, cfg, args.output_dir, device,
                             args.training_range or training_range_of(config, cfg), config.get("dataset"))
    print(Path(report["files"]["markdown"]).read_text(), end="")
    print("\n".join(f"{kind}: {path}" for kind, path in report["files"].items()))
    return 0
