"""From a config to its stages: load and validate, write the resolved config, then run the registered stages
(train, evaluate, export and any a plugin adds) whose sections the config has, in registration order."""

from __future__ import annotations

import os
from pathlib import Path

from .checkpoint import save_run_record
from .config import load_config
from .errors import BfcnnError
from .registry import default_registries, resolve


def run(config_or_path, output_dir, overrides=(), stages=None, registries=None) -> dict:
    """Run the stages the config has sections for (or those named in `stages`) into output_dir."""
    registries = registries or default_registries()
    config = load_config(config_or_path, overrides, registries)
    known = registries.stages
    wanted = [s for s in known if s in config] if stages is None else list(stages)
    unknown = [s for s in wanted if s not in known]
    if unknown or not wanted:
        raise BfcnnError(f"nothing to run: the config has none of the sections {', '.join(known)}" if not wanted
                         else f"unknown stage(s) {', '.join(unknown)} (known: {', '.join(known)})")
    output_dir = Path(output_dir)
    for name in wanted:  # every stage checks its inputs before any runs: a wrong test folder fails before training
        if known[name].prepare is not None:
            resolve(known[name].prepare)(config, output_dir)
    # under torchrun every rank trains, but only rank 0 writes files and runs the other stages
    writer = int(os.environ.get("RANK", "0")) == 0
    if writer:
        save_run_record(output_dir, config=config)
    summary = {}
    for name in wanted:
        if writer or known[name].every_rank:
            summary[name] = resolve(known[name].run)(config, output_dir)
    if writer:
        save_run_record(output_dir, summary=summary)
    return summary
