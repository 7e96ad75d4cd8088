"""The plugin manager: built-in plugins first, then third-party ones from the `bfcnn` entry-point group."""

from __future__ import annotations

import functools
import importlib
import os
from dataclasses import dataclass, field
from importlib.metadata import entry_points

import pluggy

from . import hookspecs
from .registry import HOOKS, Registry
from .stages import ADDERS

ENTRY_POINT_GROUP = "bfcnn"
AUTOLOAD_OFF = "BFCNN_DISABLE_PLUGIN_AUTOLOAD"
# the built-in stages and commands import nothing heavy: `bfcnn --help` loads only them (and installed plugins)
LIGHT_BUILTIN_PLUGINS = ("bfcnn.plugins.stages", "bfcnn.plugins.commands")
BUILTIN_PLUGINS = tuple(
    f"bfcnn.plugins.{name}"
    for name in ("noises", "models", "losses", "optimizers", "schedules", "datasets", "metrics", "exporters",
                 "pretrained", "measurements", "seed_format")
) + LIGHT_BUILTIN_PLUGINS


@dataclass
class Registries:
    """Everything the plugins registered: one Registry per kind, the stages, the commands and the config formats
    (name -> Stage, Command, ConfigFormat, in registration order), and the plugins that failed to load."""

    by_kind: dict
    plugin_manager: pluggy.PluginManager
    failures: dict = field(default_factory=dict)  # plugin name -> error text
    stages: dict = field(default_factory=dict)
    commands: dict = field(default_factory=dict)
    config_formats: dict = field(default_factory=dict)

    def __getitem__(self, kind) -> Registry:
        return self.by_kind[kind]


def make_plugin_manager(extra_plugins=(), autoload: bool | None = None, builtins=BUILTIN_PLUGINS):
    """Return (plugin manager, failures). Built-ins always load; a broken third-party plugin is reported, not fatal."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for module_name in builtins:
        pm.register(importlib.import_module(module_name), name=module_name)
    failures = {}
    if autoload is None:
        autoload = os.environ.get(AUTOLOAD_OFF, "") in ("", "0")
    if autoload:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if pm.get_plugin(ep.name) is not None or ep.name in failures:
                continue
            try:
                pm.register(ep.load(), name=ep.name)
            except Exception as error:  # any import-time failure of someone else's code
                failures[ep.name] = f"{type(error).__name__}: {error}"
    for plugin in extra_plugins:
        pm.register(plugin, name=getattr(plugin, "__name__", None) or type(plugin).__name__)
    return pm, failures


def collect(pm: pluggy.PluginManager, failures=None) -> Registries:
    """Call every plugin's hooks with a `register` bound to that plugin, so duplicates name both plugins.

    A hook that raises is reported like a plugin that fails to import: none of its components are kept.
    """
    failures = dict(failures or {})
    by_kind = {kind: Registry(kind) for kind in HOOKS}
    registries = Registries(by_kind, pm, failures)
    adders = {hook_name: by_kind[kind].add for kind, hook_name in HOOKS.items()}
    adders.update({name: functools.partial(add, getattr(registries, name.removeprefix("register_")))
                   for name, add in ADDERS.items()})
    for hook_name, add in adders.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():  # in registration order
            staged = []
            try:
                impl.function(register=lambda *args, **kwargs: staged.append((args, kwargs)))
            except Exception as error:
                failures[impl.plugin_name] = f"{hook_name} raised {type(error).__name__}: {error}"
                continue
            for args, kwargs in staged:
                try:
                    add(*args, **kwargs, plugin=impl.plugin_name)
                except (TypeError, ValueError) as error:  # a malformed registration: that one is skipped
                    failures[impl.plugin_name] = f"{hook_name}: {error}"
    return registries
