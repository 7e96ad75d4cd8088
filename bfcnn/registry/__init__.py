"""Registries of components, filled by pluggy plugins (entry-point group `bfcnn`)."""

from __future__ import annotations

import functools
import logging

from .hookspecs import hookimpl
from .plugins import (AUTOLOAD_OFF, BUILTIN_PLUGINS, ENTRY_POINT_GROUP, LIGHT_BUILTIN_PLUGINS, Registries, collect,
                      make_plugin_manager)
from .registry import HOOKS, KINDS, Component, Registry, did_you_mean
from .schema import build, ref
from .stages import Command, Stage, resolve

log = logging.getLogger("bfcnn")

__all__ = [
    "AUTOLOAD_OFF", "BUILTIN_PLUGINS", "ENTRY_POINT_GROUP", "HOOKS", "KINDS", "LIGHT_BUILTIN_PLUGINS", "Command",
    "Component", "Registries", "Registry", "Stage", "build", "collect", "command_registries", "default_registries",
    "did_you_mean", "hookimpl", "load_registries", "make_plugin_manager", "ref", "resolve",
]


def load_registries(extra_plugins=(), autoload=None, builtins=BUILTIN_PLUGINS, quiet=False) -> Registries:
    pm, failures = make_plugin_manager(extra_plugins, autoload, builtins)
    registries = collect(pm, failures)
    for plugin, error in registries.failures.items():
        if not quiet:
            log.warning("plugin %r failed to load and is skipped: %s", plugin, error)
    return registries


@functools.lru_cache(maxsize=1)
def default_registries() -> Registries:
    """The registries of this process: built-ins plus installed plugins, loaded once."""
    return load_registries()


@functools.lru_cache(maxsize=1)
def command_registries() -> Registries:
    """What `bfcnn`'s command line needs to list its commands: the built-in stages and commands (no torch) and
    the installed plugins, without the built-in components (`bfcnn --help` stays fast)."""
    return load_registries(builtins=LIGHT_BUILTIN_PLUGINS, quiet=True)
