"""The built-in config format `seed`: configs of the original project (its README's keys) in bfcnn's form."""

from __future__ import annotations

import copy

from bfcnn.errors import ConfigError
from bfcnn.registry import hookimpl
from bfcnn.registry.schema import schema_problems

# the seed kept its noise settings in `dataset`; they become entries of the `noise` section
SEED_NOISE_KEYS = ("additional_noise", "multiplicative_noise", "subsample_size", "random_blur", "clip_value")
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


@hookimpl
def register_config_formats(register):
    register("seed", from_seed, "the original project's keys: noise settings in `dataset`, an optimizer's decay "
             "and clipping, loss and optimizer without `type`")
