"""Pipeline configs: read YAML or JSON, map other formats onto ours (the registered config formats: the seed's
keys), validate against one JSON Schema.

The schema is assembled from the registered components' own schemas (`$defs/<kind>`), plus the section
schemas of the stages (train, evaluate). Every problem is reported in one go, each with its path.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml

from .errors import BfcnnError, ConfigError
from .registry import default_registries, resolve
from .registry.schema import DRAFT, build, component_defs, ref, schema_problems, takes_registries  # noqa: F401


def config_schema(registries=None) -> dict:
    """The config's JSON Schema: the common keys, the component sections, and one section per registered stage."""
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
            **{name: resolve(stage.schema) for name, stage in registries.stages.items()},
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


def adapt(config: dict, registries=None) -> dict:
    """Map a config written in another format onto ours: every registered config format's `adapt`, in order
    (the built-in `seed` maps the original project's keys; a config in our own form passes through unchanged)."""
    registries = registries or default_registries()
    for config_format in registries.config_formats.values():
        where = f"config format {config_format.name!r} (plugin {config_format.plugin!r})"
        try:
            config = resolve(config_format.adapt)(config)
        except BfcnnError:
            raise
        except Exception as error:  # someone else's code may fail in any way: a clear message, not a traceback
            raise ConfigError(f"{where} failed: {type(error).__name__}: {error}") from None
        if not isinstance(config, dict):
            raise ConfigError(f"{where} returned a {type(config).__name__}, not a mapping of sections")
    return config


def fill_defaults(config: dict, registries=None):
    """(the config with the sections that the stages it runs read and it lacks, from the stages' `defaults` (the
    train stage's noise and loss), {section: "stage 'S' (plugin 'P')"} of those filled). The first stage to name a
    section gives it; the config itself is unchanged."""
    registries = registries or default_registries()
    filled, origin = dict(config), {}
    for name, stage in registries.stages.items():
        if name in config:
            for section, spec in (stage.defaults or {}).items():
                if section not in filled:
                    filled[section] = copy.deepcopy(spec)
                    origin[section] = f"stage {name!r} (plugin {stage.plugin!r})"
    return filled, origin


def validate(config: dict, registries=None) -> dict:
    """Validate a config already in our own form; raise ConfigError listing every problem.

    The checks that components and stages carry (`check`, across sections) run once the schema is satisfied,
    so they may rely on every value's type."""
    if not isinstance(config, dict):
        raise ConfigError(f"a config is a mapping of sections, got {type(config).__name__}")
    registries = registries or default_registries()
    schema = config_schema(registries)
    problems = schema_problems(config, schema)
    if not problems:
        problems = carried_problems(config, schema, registries)
    if problems:
        raise ConfigError(problems)
    return config


def component_specs(instance, schema, defs, path=()):
    """(kind, spec, path) of every component spec in `instance`, found by following `schema`'s properties, items
    and `$ref`s to a kind (and into each component's own params schema)."""
    if "$ref" in schema:
        kind = schema["$ref"].rsplit("/", 1)[-1]
        if isinstance(instance, dict) and kind in defs:
            yield kind, instance, path
            for branch in defs[kind].get("allOf", []):
                if branch["if"]["properties"]["type"]["const"] == instance.get("type"):
                    yield from component_specs(instance, branch["then"], defs, path)
        return
    if isinstance(instance, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in instance and isinstance(sub, dict):
                yield from component_specs(instance[key], sub, defs, path + (key,))
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(instance):
            yield from component_specs(item, schema["items"], defs, path + (index,))


def call_check(check, where, section, config, registries) -> list:
    """A component's or a stage's own check; one that fails is reported as a problem, not a crash."""
    try:
        if takes_registries(check):
            return list(check(section, config, registries=registries) or [])
        return list(check(section, config) or [])
    except Exception as error:  # someone else's check may fail in any way
        return [f"{where}: its check failed: {type(error).__name__}: {error}"]


def carried_problems(config: dict, schema: dict, registries) -> list:
    """What the components and stages of this config find with their own `check`s."""
    problems = []
    for kind, spec, path in component_specs(config, schema, schema["$defs"]):
        component = registries[kind].get(spec["type"])
        if component.check is not None:
            where = ".".join(map(str, path)) or kind
            problems += call_check(component.check, where, spec, config, registries)
    for name, stage in registries.stages.items():
        if name in config and stage.check is not None:
            problems += call_check(resolve(stage.check), name, config[name], config, registries)
    return list(dict.fromkeys(problems))


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
    config, origin = fill_defaults(adapt(config, registries), registries)
    try:
        return validate(config, registries)
    except ConfigError as error:  # a stage's own default that does not validate: say whose it is
        if not origin:
            raise

        def whose(problem):
            section = problem.split(":")[0].split(".")[0]
            return (f"{problem} (the default of {origin[section]}: the config has no {section} section)"
                    if section in origin else problem)
        raise ConfigError([whose(problem) for problem in error.problems]) from None
