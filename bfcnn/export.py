"""The export stage (`export:` in a config) and the seed's
`python -m bfcnn.export --checkpoint-directory DIR --pipeline-config FILE --output-directory OUT [--to-tflite]`.

`export:` is a list of exporter specs (`{type: tflite, variants: [float32, int8]}`, `{type: onnx}`, ...). Every
exporter checks its files against torch and writes `<file>.report.json`; this stage also writes
export_report.json, all reports together, into the export folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .registry import build
from .errors import output_folder
from .layers import model_channels


def prepare(config: dict, output_dir=None):
    """Before any stage runs: every exporter builds (a bad spec or an extra that is not installed fails now)."""
    specs = config.get("export", [])
    for spec in [specs] if isinstance(specs, dict) else specs:
        build("exporter", spec)


def export(config: dict, output_dir, model=None, export_dir=None) -> dict:
    """Run every exporter of config["export"] on the model (default: the run folder's); return their reports."""
    from .checkpoint import load_model

    specs = config.get("export", [])
    if isinstance(specs, dict):
        specs = [specs]
    exporters = [build("exporter", spec) for spec in specs]  # bad specs and missing extras fail before any work
    model = model if model is not None else load_model(output_dir)
    export_dir = Path(export_dir or Path(output_dir) / "export")
    output_folder(export_dir)
    example = torch.rand(1, model_channels(model), 64, 64)
    reports = {}
    for spec, exporter in zip(specs, exporters):
        name = spec["type"] if isinstance(spec, dict) else str(spec)
        key, n = name, 2
        while key in reports:  # two exporters of one type (e.g. float32 and uint8 io) keep both reports
            key, n = f"{name}-{n}", n + 1
        reports[key] = exporter(model, export_dir, example)
        (export_dir / "export_report.json").write_text(json.dumps(reports, indent=2, default=str))
    return reports


def main(argv=None):
    import argparse

    from .exits import guarded

    parser = argparse.ArgumentParser(prog="python -m bfcnn.export", description="Export a trained model (the seed's command).")
    parser.add_argument("--checkpoint-directory", required=True, help="the training run folder (or a weights file)")
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
        reports = export({**config, "export": specs}, args.checkpoint_directory,
                         model=load_model(args.checkpoint_directory), export_dir=args.output_directory)
        for name, report in reports.items():
            for variant, path in report.get("variants", {}).items():
                print(f"{name} {variant}: {path} (max abs difference to torch "
                      f"{report['check'][variant]['max_abs_difference']:.2g})")
    return guarded(go)


if __name__ == "__main__":
    raise SystemExit(main())
