"""From a config to its stages: load and validate, write the resolved config, then train, evaluate, export."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from .config import load_config
from .errors import output_folder

STAGES = ("train", "evaluate", "export")


def write_text_atomic(path: Path, text: str):
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run(config_or_path, output_dir, overrides=(), stages=None) -> dict:
    """Run the stages the config has sections for (or those named in `stages`) into output_dir."""
    from .evaluate import evaluate
    from .export import export
    from .train import train

    config = load_config(config_or_path, overrides)
    output_dir = Path(output_dir)
    # under torchrun every rank trains, but only rank 0 writes files and runs the other stages
    writer = int(os.environ.get("RANK", "0")) == 0
    if writer:
        output_folder(output_dir)
        write_text_atomic(output_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    wanted = [s for s in STAGES if s in config] if stages is None else list(stages)
    summary = {}
    for stage in wanted:
        if writer or stage == "train":
            summary[stage] = {"train": train, "evaluate": evaluate, "export": export}[stage](config, output_dir)
    if writer:
        write_text_atomic(output_dir / "summary.json", json.dumps(summary, indent=2, default=str))
    return summary
