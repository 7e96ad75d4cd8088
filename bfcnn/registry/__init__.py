"""Registries of components, filled by pluggy plugins (entry-point group `bfcnn`)."""

from __future__ import annotations

import functools
import logging

from .hookspecs import hookimpl
from .plugins import AUTOLOAD_OFF, ENTRY_POINT_GROUP, Registries, collect, make_plugin_manager
from .registry import HOOKS, KINDS, Component, Registry, did_you_mean
from .schema import build

log = logging.getLogger("bfcnn")

__all__ = [
    "AUTOLOAD_OFF", "ENTRY_POINT_GROUP", "HOOKS", "KINDS", "Component", "Registries", "Registry", "build",
    "collect", "default_registries", "did_you_mean", "hookimpl", "load_registries", "make_plugin_manager",
]


def load_registries(extra_plugins=(), autoload=None) -> Registries:
    pm, failures = make_plugin_manager(extra_plugins, autoload)
    registries = collect(pm, failures)
    for plugin, error in registries.failures.items():
        log.warning("plugin %r failed to load and is skipped: %s", plugin, error)
    return registries


@functools.lru_cache(maxsize=1)
def default_registries() -> Registries:
    """The registries of this process: built-ins plus installed plugins, loaded once."""
    return load_registries()
