"""The evaluate stage: metrics of a trained model on test folders at several noise levels."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .config import build, ref
from .images import find_images, read_image

EVALUATE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "directories": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "sigmas": {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 1},
        "metrics": {"type": "array", "items": ref("metric")},
        "color_mode": {"enum": ["rgb", "grayscale"]},
        "seed": {"type": "integer", "minimum": 0},
    },
}


def evaluate(config: dict, output_dir, model=None) -> dict:
    from .checkpoint import load_model

    cfg = config.get("evaluate", {})
    output_dir = Path(output_dir)
    model = model or load_model(output_dir)
    metrics = {spec["type"]: build("metric", spec) for spec in cfg.get("metrics", [{"type": "psnr"}])}
    results = []
    for directory in cfg.get("directories", []):
        for sigma in cfg.get("sigmas", [25]):
            sums = {name: 0.0 for name in metrics}
            paths = find_images(directory)
            for index, path in enumerate(paths):
                clean = torch.from_numpy(read_image(path, cfg.get("color_mode", "rgb")).transpose(2, 0, 1).copy())[None]
                generator = torch.Generator().manual_seed(cfg.get("seed", 0) + index)
                noisy = clean + sigma / 255.0 * torch.randn(clean.shape, generator=generator)
                with torch.no_grad():
                    denoised = model(noisy).clamp(0, 1)
                for name, metric in metrics.items():
                    sums[name] += float(metric(denoised, clean).mean())
            results.append({"directory": directory, "sigma": sigma, "images": len(paths),
                            **{name: total / max(1, len(paths)) for name, total in sums.items()}})
    (output_dir / "evaluation.json").write_text(json.dumps(results, indent=2))
    return {"results": results}
