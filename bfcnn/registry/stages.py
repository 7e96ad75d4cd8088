"""Pipeline stages, `bfcnn` sub-commands and config formats, registered by plugins like the components.

A stage runs for its config section: `bfcnn run` runs, in registration order (the built-in train, evaluate and
export first), every stage whose section the config has. A command is a sub-command of `bfcnn`. Functions may
be given as "module:function" strings, imported only when used, so that `bfcnn --help` and the config's
schema need no stage's heavy imports (torch).
"""

from __future__ import annotations

import ast
import copy
import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import DuplicateComponentError

RESERVED_SECTIONS = ("name", "seed", "device", "model", "noise", "loss", "dataset")


def resolve(target):
    """A callable as it is; "module:function" (or "module.function") imported now."""
    if not isinstance(target, str):
        return target
    module, sep, attribute = target.partition(":")
    if not sep:
        module, _, attribute = target.rpartition(".")
    return getattr(importlib.import_module(module), attribute)


def module_summary(module_name: str) -> str:
    """The first line of a module's docstring, read from its source without importing it."""
    try:
        spec = importlib.util.find_spec(module_name)
        with open(spec.origin, encoding="utf-8") as f:
            docstring = ast.get_docstring(ast.parse(f.read())) or ""
    except (ImportError, AttributeError, OSError, TypeError, SyntaxError, ValueError):
        return ""
    return docstring.strip().splitlines()[0] if docstring.strip() else ""


@dataclass(frozen=True)
class Stage:
    """`run(config, output_dir) -> dict` (a summary); `schema`: the JSON Schema of its config section (or
    "module:attribute"); `prepare(config, output_dir)` runs for every stage about to run before any of them does
    (it checks inputs, so that a run fails before it trains); `check(section, config) -> problems` adds config
    problems the schema cannot say; `every_rank`: under torchrun every rank runs it, not only rank 0;
    `defaults`: {section: spec} of the other sections it reads, put into a config that runs it and lacks them
    (`bfcnn.config.fill_defaults`), so the run's saved config says what was used."""

    name: str
    run: Any
    schema: Any
    summary: str
    plugin: str
    prepare: Any = None
    check: Any = None
    every_rank: bool = False
    defaults: Any = None


@dataclass(frozen=True)
class Command:
    """A `bfcnn NAME` sub-command: `add_arguments(parser)` and `command(args) -> exit code or None`."""

    name: str
    add_arguments: Any
    command: Any
    help: str
    plugin: str


def add_stage(stages: dict, name, run, schema=None, summary="", prepare=None, check=None, every_rank=False,
              defaults=None, plugin="?"):
    if not isinstance(name, str) or not name or name in RESERVED_SECTIONS:
        raise ValueError(f"plugin {plugin!r}: a stage name is a config section name other than "
                         f"{', '.join(RESERVED_SECTIONS)}, got {name!r}")
    if not (callable(run) or isinstance(run, str)):
        raise ValueError(f"plugin {plugin!r}: the run function of stage {name!r} is not callable")
    if name in stages:
        raise DuplicateComponentError(f"stage {name!r} is registered twice: by plugin {stages[name].plugin!r} "
                                      f"and by plugin {plugin!r}")
    if schema is not None and not isinstance(schema, (dict, str)):
        raise ValueError(f"plugin {plugin!r}: the schema of stage {name!r} is a JSON Schema or 'module:attribute'")
    if defaults is not None and not (isinstance(defaults, dict) and all(
            isinstance(key, str) and key != name and isinstance(value, dict) for key, value in defaults.items())):
        raise ValueError(f"plugin {plugin!r}: the defaults of stage {name!r} are {{section: spec}} of other sections")
    stages[name] = Stage(name, run, schema if schema is not None else {}, summary, plugin, prepare, check,
                         bool(every_rank), copy.deepcopy(defaults or {}))


def add_command(commands: dict, name, add_arguments=None, command=None, help=None, module=None, plugin="?"):
    """`module`: a module with add_arguments(parser) and command(args), its docstring's first line the help."""
    if module is not None:
        add_arguments = add_arguments or f"{module}:add_arguments"
        command = command or f"{module}:command"
        help = help if help is not None else module_summary(module)
    if not isinstance(name, str) or not name:
        raise ValueError(f"plugin {plugin!r}: a command name must be a non-empty string, got {name!r}")
    for what, fn in (("add_arguments", add_arguments), ("command", command)):
        if not (callable(fn) or isinstance(fn, str)):
            raise ValueError(f"plugin {plugin!r}: command {name!r} needs {what} (a callable or 'module:function')")
    if name in commands:
        raise DuplicateComponentError(f"command {name!r} is registered twice: by plugin {commands[name].plugin!r} "
                                      f"and by plugin {plugin!r}")
    commands[name] = Command(name, add_arguments, command, help or "", plugin)


@dataclass(frozen=True)
class ConfigFormat:
    """`adapt(config) -> config`: another format's config in bfcnn's form (a config in bfcnn's form unchanged)."""

    name: str
    adapt: Any
    summary: str
    plugin: str


def add_config_format(formats: dict, name, adapt, summary="", plugin="?"):
    if not isinstance(name, str) or not name:
        raise ValueError(f"plugin {plugin!r}: a config format's name must be a non-empty string, got {name!r}")
    if not (callable(adapt) or isinstance(adapt, str)):
        raise ValueError(f"plugin {plugin!r}: config format {name!r} needs adapt (a callable or 'module:function')")
    if name in formats:
        raise DuplicateComponentError(f"config format {name!r} is registered twice: by plugin "
                                      f"{formats[name].plugin!r} and by plugin {plugin!r}")
    formats[name] = ConfigFormat(name, adapt, summary, plugin)


ADDERS: dict[str, Callable] = {"register_stages": add_stage, "register_commands": add_command,
                               "register_config_formats": add_config_format}
