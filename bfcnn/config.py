"""Pipeline configs: read YAML or JSON, map the seed's keys onto ours, validate against one JSON Schema.

The schema is assembled from the registered components' own schemas (`$defs/<kind>`), plus the section
schemas of the stages (train, evaluate). Every problem is reported in one go, each with its path.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml

from .errors import BfcnnError, ConfigError
from .registry import default_registries
from .registry.schema import DRAFT, build, component_defs, is_integer, ref, schema_problems  # noqa: F401 (build: API)

# the seed kept its noise settings in `dataset`; they become entries of the `noise` section
SEED_NOISE_KEYS = ("additional_noise", "multiplicative_noise", "subsample_size", "random_blur", "clip_value")
CHANNELS = {"grayscale": 1, "gray": 1, "rgb": 3, "rgba": 4}
NUMBERS = {"oneOf": [{"type": "number", "minimum": 0},
                     {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 1}]}
# the seed's dataset keys that are read while mapping them: checked first, so a list where a number goes is a
# config error with its path, not a crash of the mapping
SEED_DATASET_SCHEMA = {
    "type": "object",
    "properties": {
        "min_value": {"type": "number"}, "max_value": {"type": "number"},
        "clip_value": {"type": "boolean"}, "random_blur": {"type": "boolean"},
        "additional_noise": {"anyOf": [NUMBERS, {"type": ["boolean", "null"]}]},
        "multiplicative_noise": {"anyOf": [NUMBERS, {"type": ["boolean", "null"]}]},
        "subsample_size": {"anyOf": [{"type": "integer"}, {"type": "array", "items": {"type": "integer"}}]},
    },
}


def config_schema(registries=None) -> dict:
    from .evaluate import EVALUATE_SCHEMA
    from .train import TRAIN_SCHEMA

    registries = registries or default_registries()
    return {
        "$schema": DRAFT,
        "title": "bfcnn pipeline config",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "description": "a name for the run"},
            "seed": {"type": "integer", "minimum": 0, "description": "seed of every random choice"},
            "device": {"type": "string", "description": "auto, cpu, cuda, cuda:N"},
            "model": ref("model"),
            "noise": ref("noise"),
            "loss": ref("loss"),
            "dataset": ref("dataset"),
            "train": TRAIN_SCHEMA,
            "evaluate": EVALUATE_SCHEMA,
            "export": {"type": "array", "items": ref("exporter")},
        },
        "$defs": component_defs(registries),
    }


def read_file(path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise BfcnnError(f"{path} is a folder: give the config file (YAML or JSON)")
    if not path.is_file():
        raise BfcnnError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a config (YAML or JSON text): it is not UTF-8 text") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {error}")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config is a mapping of sections, got {type(data).__name__}")
    return data


def from_seed(config: dict) -> dict:
    """Map the original project's keys onto ours; a config in our own form passes through unchanged."""
    config = copy.deepcopy(config)
    problems = []
    dataset = config.get("dataset")
    if isinstance(dataset, dict):
        dataset.setdefault("type", "image_folder")
        seed_keys = [k for k in SEED_NOISE_KEYS if k in dataset]
        if seed_keys and "noise" in config:
            problems.append(f"dataset.{seed_keys[0]}: the seed's noise keys in `dataset` cannot be combined "
                            "with a `noise` section; use one or the other")
        elif seed_keys and schema_problems(dataset, SEED_DATASET_SCHEMA, "dataset"):
            problems += schema_problems(dataset, SEED_DATASET_SCHEMA, "dataset")
        elif seed_keys:
            noises = seed_noises(dataset)
            for key in seed_keys:
                dataset.pop(key)
            if noises:
                config["noise"] = noises if len(noises) > 1 else noises[0]
    if isinstance(config.get("noise"), list):
        config["noise"] = {"type": "choice", "choices": config["noise"]}
    loss = config.get("loss")
    if isinstance(loss, dict) and "type" not in loss:
        loss["type"] = "hinged_mae"
    train = config.get("train")
    if isinstance(train, dict) and isinstance(train.get("optimizer"), dict):
        optimizer = train["optimizer"]
        optimizer.setdefault("type", "adam")
        if "gradient_clipping_by_norm" in optimizer:
            train.setdefault("gradient_clipping_by_norm", optimizer.pop("gradient_clipping_by_norm"))
        if "decay_rate" in optimizer or "decay_steps" in optimizer:
            schedule = {"type": "exponential_decay"}
            for key in ("decay_rate", "decay_steps"):
                if key in optimizer:
                    schedule[key] = optimizer.pop(key)
            train.setdefault("schedule", schedule)
    if isinstance(config.get("export"), dict):
        config["export"] = [config["export"]]
    if problems:
        raise ConfigError(problems)
    return config


def seed_noises(dataset: dict) -> list:
    value_range = float(dataset.get("max_value", 255)) - float(dataset.get("min_value", 0))
    clip = bool(dataset.get("clip_value", False))
    noises = []
    if dataset.get("additional_noise"):
        noises.append({"type": "additive_gaussian", "sigma": dataset["additional_noise"],
                       "value_range": value_range, "clip": clip})
    if dataset.get("multiplicative_noise"):
        noises.append({"type": "multiplicative_gaussian", "sigma": dataset["multiplicative_noise"],
                       "blur": bool(dataset.get("random_blur", False)), "clip": clip})
    size = dataset.get("subsample_size", -1)
    if isinstance(size, int) and size > 0:
        noises.append({"type": "subsample", "factor": size})
    return noises


def validate(config: dict, registries=None) -> dict:
    """Validate a config already in our own form; raise ConfigError listing every problem.

    The cross-section checks run once the schema is satisfied, so they may rely on every value's type."""
    if not isinstance(config, dict):
        raise ConfigError(f"a config is a mapping of sections, got {type(config).__name__}")
    registries = registries or default_registries()
    problems = schema_problems(config, config_schema(registries))
    if not problems:
        problems = consistency_problems(config, registries) + window_problems(config)
    if problems:
        raise ConfigError(problems)
    return config


def channels_of(section: dict, section_name: str):
    """(key path, channel count) that a model or dataset section declares, or None."""
    shape = section.get("input_shape")
    if isinstance(shape, list) and len(shape) == 3 and is_integer(None, shape[-1]):
        return f"{section_name}.input_shape", shape[-1]
    if is_integer(None, section.get("channels")):
        return f"{section_name}.channels", section["channels"]
    if isinstance(section.get("color_mode"), str) and section["color_mode"] in CHANNELS:
        return f"{section_name}.color_mode", CHANNELS[section["color_mode"]]
    return None


def default_channels(model: dict, registries):
    """(description, channels) of a model section that leaves its channels to the model's schema default."""
    registry = registries["model"]
    if not isinstance(model.get("type"), str) or model["type"] not in registry:
        return None
    default = registry.get(model["type"]).schema.get("properties", {}).get("channels", {}).get("default")
    return (f"model {model['type']!r} (by default)", default) if is_integer(None, default) else None


def consistency_problems(config: dict, registries) -> list:
    model, dataset = config.get("model"), config.get("dataset")
    if not (isinstance(model, dict) and isinstance(dataset, dict)):
        return []
    model_channels = channels_of(model, "model") or default_channels(model, registries)
    data_channels = ([channels_of({"color_mode": dataset["color_mode"]}, "dataset")] if "color_mode" in dataset
                     else []) + [channels_of({"input_shape": dataset.get("input_shape")}, "dataset")]
    problems = []
    for found in data_channels:
        if model_channels and found and found[1] != model_channels[1]:
            problems.append(f"{model_channels[0]}: the model takes {model_channels[1]} channel(s) but "
                            f"{found[0]} gives {found[1]}")
    return problems


def window_problems(config: dict) -> list:
    """An SSIM loss needs crops at least as large as its window: said now, not at the first training step."""
    loss, dataset = config.get("loss"), config.get("dataset")
    if not (isinstance(loss, dict) and loss.get("type") == "ssim" and isinstance(dataset, dict)):
        return []
    shape = dataset.get("input_shape")
    sides = [v for v in (shape or [])[:2] if isinstance(v, int)]
    window = loss.get("win_size", 11)
    if isinstance(window, int) and sides and min(sides) < window:
        return [f"loss.win_size: the ssim window ({window}) is larger than the crops of dataset.input_shape "
                f"({' x '.join(map(str, shape[:2]))}); use larger crops or a smaller odd window"]
    return []


def apply_overrides(config: dict, overrides) -> dict:
    """`--set dotted.key=value`: the value is read as YAML, so numbers, lists and booleans work."""
    config = copy.deepcopy(config)
    for item in overrides or ():
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise BfcnnError(f"--set takes dotted.key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as error:
            raise BfcnnError(f"--set {key}: cannot read value {raw!r}: {error}")
        node = config
        parts = key.split(".")
        for depth, part in enumerate(parts):
            where = ".".join(parts[:depth]) or "the config"
            if isinstance(node, list):  # noise.choices.0.sigma: a number indexes a list
                if not part.isdigit() or int(part) >= len(node):
                    raise BfcnnError(f"--set {key}: {where} is a list of {len(node)}: {part!r} is not an index in it")
                part = int(part)
            elif not isinstance(node, dict):
                raise BfcnnError(f"--set {key}: {where} is {node!r}, not a section with keys")
            if depth == len(parts) - 1:
                node[part] = value
            else:
                if isinstance(node, dict) and node.get(part) is None:
                    node[part] = {}  # a section that is not there yet (or empty) is created
                node = node[part]
    return config


def load_config(path_or_mapping, overrides=(), registries=None) -> dict:
    """Read (a path) or take (a mapping), apply `--set` overrides, map seed keys, validate; return the mapping."""
    if isinstance(path_or_mapping, dict):
        config = path_or_mapping
    else:
        config = read_file(path_or_mapping)
    config = apply_overrides(config, overrides)
    config = from_seed(config)
    return validate(config, registries)
