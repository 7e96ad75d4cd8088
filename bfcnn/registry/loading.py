"""The registries of a process: built-in plugins plus installed ones, loaded once."""

from __future__ import annotations

import functools
import logging

from .plugins import BUILTIN_PLUGINS, LIGHT_BUILTIN_PLUGINS, Registries, collect, make_plugin_manager

log = logging.getLogger("bfcnn")


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
