"""From a config to its stages: load and validate, write the resolved config, then train, evaluate, export."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from .checkpoint import write_text_atomic
from .config import build, load_config
from .errors import BfcnnError, output_folder

STAGES = ("train", "evaluate", "export", "restore")


def run(config_or_path, output_dir, overrides=(), stages=None) -> dict:
    """Run the stages the config has sections for (or those named in `stages`) into output_dir."""
    from .evaluate import check_inputs, evaluate
    from .export import export
    from .devices import resolve_device
    from .restore import check_stage_inputs, restore_stage
    from .train import train

    config = load_config(config_or_path, overrides)
    wanted = [s for s in STAGES if s in config] if stages is None else list(stages)
    if not wanted:
        raise BfcnnError(f"nothing to run: the config has none of the sections {', '.join(STAGES)}")
    if "train" in wanted:  # a device this machine does not have fails before the run folder is made
        resolve_device(config.get("device", "auto"), int(os.environ.get("LOCAL_RANK", "0")))
    if "train" in wanted and "evaluate" in wanted:  # a wrong test folder fails now, not after the training
        check_inputs(config)
    if "train" in wanted and "restore" in wanted:  # and the restore section's folders and tasks
        check_stage_inputs(config)
    if "train" in wanted and "export" in wanted:  # so does an exporter whose extra is not installed
        specs = config["export"]
        for spec in [specs] if isinstance(specs, dict) else specs:
            build("exporter", spec)
    output_dir = Path(output_dir)
    if "train" in wanted:  # a folder that holds another model's run is refused before its config.yaml is replaced
        from .checkpoint import check_fits, latest_checkpoint

        latest = latest_checkpoint(output_dir)
        if latest is not None:
            check_fits(latest, build("model", config["model"]))
    # under torchrun every rank trains, but only rank 0 writes files and runs the other stages
    writer = int(os.environ.get("RANK", "0")) == 0
    if writer:
        output_folder(output_dir)
        write_text_atomic(output_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    summary = {}
    for stage in wanted:
        if writer or stage == "train":
            summary[stage] = {"train": train, "evaluate": evaluate, "export": export,
                              "restore": restore_stage}[stage](config, output_dir)
    if writer:
        write_text_atomic(output_dir / "summary.json", json.dumps(summary, indent=2, default=str))
    return summary
