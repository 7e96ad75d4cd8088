"""Example bfcnn plugin: a `card` pipeline stage and a `bfcnn card RUN_DIR` command (a model card for a run)."""

import json
from pathlib import Path

from bfcnn import hookimpl

CARD_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "filename": {"type": "string", "default": "CARD.md", "description": "written into the run folder"},
        "title": {"type": "string", "description": "default: the config's name"},
    },
}


def write_card(run_dir, config, filename=CARD_SCHEMA["properties"]["filename"]["default"], title=None) -> dict:
    """A markdown card: the model, its size, and the evaluation's table when the run has one."""
    import bfcnn  # torch is imported here, when a card is made, not when bfcnn lists its commands

    run_dir = Path(run_dir)
    module = bfcnn.load_model(run_dir).module
    parameters = sum(p.numel() for p in module.parameters())
    lines = [f"# {title or config.get('name') or run_dir.name}", "",
             f"- model: `{json.dumps(config.get('model', {}), sort_keys=True)}`",
             f"- parameters: {parameters:,}", f"- bias-free: {'yes' if getattr(module, 'bias_free', False) else 'no'}"]
    results = run_dir / "evaluation" / "results.md"
    if results.is_file():
        lines += ["", "## Evaluation", "", results.read_text().strip()]
    path = run_dir / filename
    path.write_text("\n".join(lines) + "\n")
    return {"card": str(path), "parameters": parameters}


def run_stage(config, output_dir):
    """The `card` stage: runs after the built-in stages (plugins' stages come after them)."""
    return write_card(output_dir, config, **config.get("card", {}))


def add_arguments(parser):
    parser.add_argument("run_dir", help="a run folder (with model.safetensors and config.yaml)")
    parser.add_argument("--filename", default=CARD_SCHEMA["properties"]["filename"]["default"])


def command(args):
    import yaml

    from bfcnn.errors import BfcnnError

    config_file = Path(args.run_dir) / "config.yaml"
    if not config_file.is_file():
        raise BfcnnError(f"{args.run_dir} is not a run folder: no config.yaml")
    print(write_card(args.run_dir, yaml.safe_load(config_file.read_text()), args.filename)["card"])


def check_card(section, config):
    """A card describes a trained model: the config must train one (a problem, with its path, otherwise)."""
    return [] if "model" in config else ["card: a card needs a model section (the run's model)"]


@hookimpl
def register_stages(register):
    register("card", run_stage, CARD_SCHEMA, "a markdown model card in the run folder", check=check_card)


@hookimpl
def register_commands(register):
    register("card", add_arguments, command, help="write a markdown model card for a run folder")
