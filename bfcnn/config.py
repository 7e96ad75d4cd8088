"""Pipeline configs: read YAML or JSON, map the seed's keys onto ours, validate against one JSON Schema.

The schema is assembled from the registered components' own schemas (`$defs/<kind>`), plus the section
schemas of the stages (train, evaluate). Every problem is reported in one go, each with its path.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import yaml

from .errors import BfcnnError, ConfigError
from .registry import KINDS, default_registries, did_you_mean

DRAFT = "https://json-schema.org/draft/2020-12/schema"
KIND_KEYWORD = "x-bfcnn-kind"  # marks the `type` property of a component spec, for the error messages

# the seed kept its noise settings in `dataset`; they become entries of the `noise` section
SEED_NOISE_KEYS = ("additional_noise", "multiplicative_noise", "subsample_size", "random_blur", "clip_value")
CHANNELS = {"grayscale": 1, "gray": 1, "rgb": 3, "rgba": 4}


def ref(kind):
    return {"$ref": f"#/$defs/{kind}"}


def component_def(registry) -> dict:
    """A spec of this kind: {"type": name, **params}, params checked by the named component's own schema."""
    branches = []
    for name in registry.names():
        schema = copy.deepcopy(registry.get(name).schema)
        schema.pop("$schema", None)
        schema["properties"] = {"type": {"const": name}, **schema.get("properties", {})}
        branches.append({"if": {"properties": {"type": {"const": name}}, "required": ["type"]}, "then": schema})
    spec = {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"type": "string", "enum": registry.names(), KIND_KEYWORD: registry.kind}},
    }
    if branches:
        spec["allOf"] = branches
    return spec


def config_schema(registries=None) -> dict:
    from .evaluate import EVALUATE_SCHEMA
    from .restore import RESTORE_SCHEMA
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
            "restore": RESTORE_SCHEMA,
        },
        "$defs": {kind: component_def(registries[kind]) for kind in KINDS},
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


def error_messages(error: jsonschema.ValidationError) -> list[str]:
    path = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "enum" and KIND_KEYWORD in error.schema:
        kind = error.schema[KIND_KEYWORD]
        known = error.validator_value
        return [f"{path}: {error.instance!r} is not a known {kind}{did_you_mean(error.instance, known)} "
                f"(known: {', '.join(known) or 'none registered'})"]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = list(error.schema.get("properties", {}))
        extras = [k for k in error.instance if k not in allowed]
        return [f"{path}: unknown key {k!r}{did_you_mean(k, allowed)}" for k in extras]
    if error.validator == "not" and "description" in error.schema:  # e.g. an even kernel_size: say the rule
        return [f"{path}: {error.instance!r}: {error.schema['description']}"]
    return [f"{path}: {error.message}"]


def validate(config: dict, registries=None) -> dict:
    """Validate a config already in our own form; raise ConfigError listing every problem."""
    if not isinstance(config, dict):
        raise ConfigError(f"a config is a mapping of sections, got {type(config).__name__}")
    validator = jsonschema.Draft202012Validator(config_schema(registries))
    errors = sorted(validator.iter_errors(config), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    problems = list(dict.fromkeys(m for e in errors for m in error_messages(e)))
    problems += consistency_problems(config, registries or default_registries()) + window_problems(config)
    if problems:
        raise ConfigError(problems)
    return config


def channels_of(section: dict, section_name: str):
    """(key path, channel count) that a model or dataset section declares, or None."""
    shape = section.get("input_shape")
    if isinstance(shape, list) and shape and isinstance(shape[-1], int) and len(shape) == 3:
        return f"{section_name}.input_shape", shape[-1]
    if isinstance(section.get("channels"), int):
        return f"{section_name}.channels", section["channels"]
    if section.get("color_mode") in CHANNELS:
        return f"{section_name}.color_mode", CHANNELS[section["color_mode"]]
    return None


def default_channels(model: dict, registries):
    """(description, channels) of a model section that leaves its channels to the model's schema default."""
    registry = registries["model"]
    if model.get("type") not in registry:
        return None
    default = registry.get(model["type"]).schema.get("properties", {}).get("channels", {}).get("default")
    return (f"model {model['type']!r} (by default)", default) if isinstance(default, int) else None


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


def build(kind: str, spec, registries=None):
    """Build one component from {"type": name, **params}, after checking params against its schema."""
    registries = registries or default_registries()
    if kind not in KINDS:
        raise BfcnnError(f"{kind!r} is not a component kind{did_you_mean(kind, KINDS)} (kinds: {', '.join(KINDS)})")
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{kind}: a component spec is a mapping with a 'type' key, got {spec!r}")
    schema = {"$schema": DRAFT, "$defs": config_schema(registries)["$defs"], **ref(kind)}
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(spec), key=lambda e: list(map(str, e.path)))
    if errors:
        raise ConfigError([f"{kind}.{m}" if e.absolute_path else f"{kind}: {m.split(': ', 1)[1]}"
                           for e in errors for m in error_messages(e)])
    params = {k: v for k, v in spec.items() if k != "type"}
    return registries[kind].get(spec["type"]).factory(**params)
