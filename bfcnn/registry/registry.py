"""A registry per component kind: name -> (factory, schema, summary, plugin of origin)."""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import DuplicateComponentError, UnknownComponentError

# kind -> the hook that fills its registry
HOOKS = {
    "noise": "register_noises",
    "model": "register_models",
    "loss": "register_losses",
    "optimizer": "register_optimizers",
    "schedule": "register_schedules",
    "dataset": "register_datasets",
    "metric": "register_metrics",
    "exporter": "register_exporters",
    "pretrained": "register_pretrained",
    "measurement": "register_measurements",
}
KINDS = tuple(HOOKS)

ANY_PARAMS = {"type": "object"}


@dataclass(frozen=True)
class Component:
    kind: str
    name: str
    factory: Callable[..., Any]
    schema: dict
    summary: str
    plugin: str
    check: Callable | None = None  # check(spec, config) -> problems the schema cannot say, each "path: what"


def similarity(word: str, name: str) -> float:
    """How close a typo is to a name, also part by part ('gausian' is close to 'additive_gaussian')."""
    parts = [name, *name.split("_")] if "_" in name else [name]
    return max(difflib.SequenceMatcher(None, word, part).ratio() for part in parts)


def did_you_mean(word, known) -> str:
    scored = [(similarity(str(word), name), name) for name in sorted(known)]
    best = max(scored, key=lambda pair: pair[0], default=(0, None))  # ties: the first alphabetically
    return f"; did you mean '{best[1]}'?" if best[0] >= 0.6 else ""


@dataclass
class Registry:
    kind: str
    components: dict = field(default_factory=dict)

    def add(self, name, factory, schema=None, summary="", check=None, plugin="?"):
        if not isinstance(name, str) or not name:
            raise ValueError(f"plugin {plugin!r}: a {self.kind} name must be a non-empty string, got {name!r}")
        if not callable(factory):
            raise ValueError(f"plugin {plugin!r}: the factory of {self.kind} {name!r} is not callable")
        if schema is not None and schema.get("type", "object") != "object":
            raise ValueError(f"plugin {plugin!r}: the schema of {self.kind} {name!r} must be an object schema")
        if name in self.components:
            first = self.components[name].plugin
            raise DuplicateComponentError(
                f"{self.kind} {name!r} is registered twice: by plugin {first!r} and by plugin {plugin!r}"
            )
        if check is not None and not callable(check):
            raise ValueError(f"plugin {plugin!r}: the check of {self.kind} {name!r} is not callable")
        self.components[name] = Component(self.kind, name, factory, dict(schema or ANY_PARAMS), summary, plugin,
                                          check)

    def get(self, name) -> Component:
        try:
            return self.components[name]
        except (KeyError, TypeError):
            raise UnknownComponentError(self.unknown_message(name)) from None

    def unknown_message(self, name) -> str:
        known = ", ".join(self.names()) or "none registered"
        return f"{name!r} is not a known {self.kind}{did_you_mean(name, self.components)} (known: {known})"

    def names(self, pattern: str | None = None) -> list[str]:
        return sorted(n for n in self.components if pattern is None or fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name):
        return isinstance(name, str) and name in self.components
