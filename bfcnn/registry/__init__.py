"""Registries of components, filled by pluggy plugins (entry-point group `bfcnn`)."""

from __future__ import annotations

from .hookspecs import hookimpl
from .plugins import (AUTOLOAD_OFF, BUILTIN_PLUGINS, ENTRY_POINT_GROUP, LIGHT_BUILTIN_PLUGINS, Registries, collect,
                      make_plugin_manager)
from .loading import command_registries, default_registries, load_registries
from .registry import HOOKS, KINDS, Component, Registry, did_you_mean
from .schema import build, ref
from .stages import Command, ConfigFormat, Stage, resolve

__all__ = [
    "AUTOLOAD_OFF", "BUILTIN_PLUGINS", "ENTRY_POINT_GROUP", "HOOKS", "KINDS", "LIGHT_BUILTIN_PLUGINS", "Command",
    "Component", "ConfigFormat", "Registries", "Registry", "Stage", "build", "collect", "command_registries",
    "default_registries", "did_you_mean", "hookimpl", "load_registries", "make_plugin_manager", "ref", "resolve",
]
