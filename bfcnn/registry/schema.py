"""Component specs and their JSON Schemas: the validator every config and spec goes through, and `build`.

A spec is {"type": name, **params}; its params are checked against the named component's own schema, where
`{"$ref": "#/$defs/<kind>"}` stands for a spec of another kind (a `choice` of noises, say).
"""

from __future__ import annotations

import copy
import inspect
import math

import jsonschema

from ..errors import BfcnnError, ConfigError, UnknownComponentError
from .registry import KINDS, did_you_mean

DRAFT = "https://json-schema.org/draft/2020-12/schema"
KIND_KEYWORD = "x-bfcnn-kind"  # marks the `type` property of a component spec, for the error messages
REGISTRIES_KEYWORD = "registries"  # a factory that takes this keyword is given the registries it was built from


def is_number(checker, value) -> bool:
    """A finite real number: JSON has no NaN or infinity, and a value float() cannot hold is none either."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an int beyond 1.8e308
        return False


def is_integer(checker, value) -> bool:
    """An int (not a bool, and not 1e308 or 64.0: a float is no count of filters or steps)."""
    return isinstance(value, int) and not isinstance(value, bool)


TYPE_CHECKER = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many({"number": is_number, "integer": is_integer})
Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=TYPE_CHECKER)


def ref(kind):
    return {"$ref": f"#/$defs/{kind}"}


def params_schema(component) -> dict:
    """The schema of a component's spec: its params schema with `type` fixed to its name."""
    schema = copy.deepcopy(component.schema)
    schema.pop("$schema", None)
    schema["properties"] = {"type": {"const": component.name}, **schema.get("properties", {})}
    return schema


def component_def(registry) -> dict:
    """A spec of this kind: {"type": name, **params}, params checked by the named component's own schema."""
    branches = [{"if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                 "then": params_schema(registry.get(name))} for name in registry.names()]
    spec = {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"type": "string", "enum": registry.names(), KIND_KEYWORD: registry.kind}},
    }
    if branches:
        spec["allOf"] = branches
    return spec


def component_defs(registries) -> dict:
    """`$defs` for every kind, made once per Registries object (components are not added afterwards)."""
    cached = getattr(registries, "_component_defs", None)
    if cached is None:
        cached = {kind: component_def(registries[kind]) for kind in KINDS}
        try:
            registries._component_defs = cached
        except AttributeError:  # a stand-in object without attributes: just not cached
            pass
    return cached


def error_messages(error: jsonschema.ValidationError, prefix: str = "") -> list[str]:
    """Each problem as `path: what is wrong` (the path dotted, `prefix` in front)."""
    path = ".".join([prefix] * bool(prefix) + [str(p) for p in error.absolute_path]) or "(top level)"
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


LARGEST_INTEGER = 2**63 - 1  # what a seed, a size or a count can be in torch and numpy (int64)


def oversized_integers(instance, path=()):
    """(path, value) of every integer beyond int64: no schema bound is needed for a seed to fit torch's."""
    if isinstance(instance, dict):
        for key, value in instance.items():
            yield from oversized_integers(value, path + (key,))
    elif isinstance(instance, list):
        for index, value in enumerate(instance):
            yield from oversized_integers(value, path + (index,))
    elif is_integer(None, instance) and abs(instance) > LARGEST_INTEGER:
        yield path, instance


def schema_problems(instance, schema: dict, prefix: str = "") -> list[str]:
    """Every problem of `instance` against `schema`, sorted by path, each once."""
    errors = sorted(Validator(schema).iter_errors(instance), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    problems = [m for e in errors for m in error_messages(e, prefix)]
    for path, value in oversized_integers(instance):
        where = ".".join([prefix] * bool(prefix) + [str(p) for p in path]) or "(top level)"
        problems.append(f"{where}: {value} is larger than any integer bfcnn takes ({LARGEST_INTEGER})")
    return list(dict.fromkeys(problems))


def spec_problems(kind: str, spec, registries, where: str | None = None) -> list[str]:
    """Problems of one spec of `kind`, checked against that component's schema alone (other kinds' specs inside
    it, e.g. a choice's noises, against theirs)."""
    where = where or kind
    if not isinstance(spec, dict):
        return [f"{where}: a {kind} spec is a mapping with a 'type' key, got {spec!r}"]
    name = spec.get("type")
    if name is None:
        return [f"{where}: 'type' is a required property (the {kind}'s name)"]
    try:
        component = registries[kind].get(name)
    except UnknownComponentError as error:
        return [f"{where}.type: {error}"]
    schema = {"$schema": DRAFT, "$defs": component_defs(registries), **params_schema(component)}
    return schema_problems(spec, schema, where)


def takes_registries(factory) -> bool:
    try:
        return REGISTRIES_KEYWORD in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def build(kind: str, spec, registries=None):
    """Build one component from {"type": name, **params} (or a bare name), after checking its params against
    the component's schema. A factory with a `registries` keyword is given the registries it comes from, to
    build the components it holds (a `choice` of noises) from the same ones."""
    if registries is None:
        from .loading import default_registries
        registries = default_registries()
    if kind not in KINDS:
        raise BfcnnError(f"{kind!r} is not a component kind{did_you_mean(kind, KINDS)} (kinds: {', '.join(KINDS)})")
    if isinstance(spec, str):
        spec = {"type": spec}
    problems = spec_problems(kind, spec, registries)
    if problems:
        raise ConfigError(problems)
    factory = registries[kind].get(spec["type"]).factory
    params = {k: v for k, v in spec.items() if k != "type"}
    if takes_registries(factory):
        params[REGISTRIES_KEYWORD] = registries
    return factory(**params)
