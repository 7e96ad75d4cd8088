"""The export stage (`export:` in a config) and the seed's
`python -m bfcnn.export --checkpoint-directory DIR --pipeline-config FILE --output-directory OUT [--to-tflite]`."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .config import build


def model_channels(model) -> int:
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            return module.in_channels
    raise ValueError("cannot tell the model's input channels: it has no Conv2d")


def export(config: dict, output_dir, model=None, export_dir=None) -> dict:
    from .checkpoint import load_model

    model = model or load_model(output_dir)
    export_dir = Path(export_dir or Path(output_dir) / "export")
    example = torch.rand(1, model_channels(model), 64, 64)
    reports = {}
    for spec in config.get("export", []):
        reports[spec["type"]] = build("exporter", spec)(model, export_dir, example)
    export_dir.mkdir(parents=True, exist_ok=True)
    (export_dir / "export_report.json").write_text(json.dumps(reports, indent=2))
    return reports


def main(argv=None):
    import argparse

    from .cli import guarded

    parser = argparse.ArgumentParser(prog="python -m bfcnn.export", description="Export a trained model (the seed's command).")
    parser.add_argument("--checkpoint-directory", required=True, help="the training run folder")
    parser.add_argument("--pipeline-config", required=True, help="the pipeline config (JSON or YAML)")
    parser.add_argument("--output-directory", required=True)
    parser.add_argument("--to-tflite", action="store_true", help="also export TFLite")
    parser.add_argument("--to-onnx", action="store_true", help="also export ONNX")
    args = parser.parse_args(argv)

    def go():
        from .checkpoint import load_model
        from .config import load_config

        config = load_config(args.pipeline_config)
        specs = list(config.get("export", []))
        for flag, name in ((args.to_tflite, "tflite"), (args.to_onnx, "onnx")):
            if flag and all(s["type"] != name for s in specs):
                specs.append({"type": name})
        if not specs:
            specs = [{"type": "onnx"}]
        export({**config, "export": specs}, args.checkpoint_directory,
               model=load_model(args.checkpoint_directory), export_dir=args.output_directory)
    return guarded(go)


if __name__ == "__main__":
    raise SystemExit(main())
