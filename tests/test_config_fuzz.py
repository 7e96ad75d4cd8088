"""A config loader that nothing can crash: property-based tests (hypothesis) that mutate the shipped configs and
configs in the original project's format (values of the wrong type, keys deleted or added, nested garbage, NaN,
infinities, huge numbers, lists and mappings where scalars go). Every mutant either validates or is refused with a
ConfigError whose every problem names its path; a sample of the mutants that validate run two training steps
through `bfcnn run`, which exits 0 or 2, never with a traceback.
"""

from __future__ import annotations

import copy
import os

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bfcnn.config import load_config, read_file  # noqa: E402
from bfcnn.errors import BfcnnError, ConfigError  # noqa: E402
from conftest import REPO  # noqa: E402
from test_config import SEED_CONFIG  # noqa: E402

SHIPPED = {p.name: read_file(p) for p in sorted((REPO / "configs").iterdir()) if p.suffix in (".yaml", ".json")}
BASES = {**SHIPPED, "seed_readme": SEED_CONFIG}

HUGE = [10**12, -10**12, 2**63, 2**64 + 1, 10**100, 1e308, -1e308, 1e300, float("nan"), float("inf"),
        float("-inf"), 1e-320, -0.0]
SCALARS = (st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.sampled_from(HUGE)
           | st.floats(allow_nan=True, allow_infinity=True)
           | st.sampled_from(["", "?", "rgb", "auto", "type", "-1", "1e308", "nan", "mse", "adam", "cpu"])
           | st.text(max_size=6))
GARBAGE = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.sampled_from(["type", "sigma", "x", "", "0"]) | st.text(max_size=4),
                                         inner, max_size=3), max_leaves=6)


def paths(node, prefix=()):
    """Every place in a config: (path, value), containers included."""
    yield prefix, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from paths(value, prefix + (index,))


def at(config, path):
    for part in path:
        config = config[part]
    return config


@st.composite
def mutants(draw, bases=tuple(BASES)):
    """A base config with one to three mutations: a value replaced, a key deleted, a key or an item added."""
    name = draw(st.sampled_from(bases))
    config = copy.deepcopy(BASES[name])
    for _ in range(draw(st.integers(1, 3))):
        places = list(paths(config))
        path, value = draw(st.sampled_from(places))
        operation = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if operation == "replace" and path:
            at(config, path[:-1])[path[-1]] = draw(GARBAGE)
        elif operation == "delete" and path:
            parent = at(config, path[:-1])
            del parent[path[-1]]
        elif isinstance(value, dict):
            key = draw(st.sampled_from([k for k in value] + ["type", "extra", "channels", "sigma"]) | st.text(max_size=5))
            value[key] = draw(GARBAGE)
        elif isinstance(value, list):
            value.insert(draw(st.integers(0, len(value))), draw(GARBAGE))
    return name, config


def names_a_path(problem: str, config: dict) -> bool:
    """A problem starts with where it is: `(top level)` or a dotted path whose section the config has."""
    where = problem.split(":", 1)[0]
    if where == "(top level)":
        return True
    section = where.split(".", 1)[0].split(" ", 1)[0]
    return section in config or section in ("noise", "dataset", "model", "loss", "train")


def check_loads(config):
    """load_config returns a mapping or raises a ConfigError naming each problem's path; nothing else."""
    try:
        return load_config(config)
    except ConfigError as error:
        assert error.problems, "a ConfigError without problems"
        for problem in error.problems:
            assert names_a_path(problem, config), f"problem without a path: {problem!r}"
        return None


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(mutants())
def test_mutated_configs_validate_or_name_the_problem(mutant):
    name, config = mutant
    check_loads(config)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.sampled_from(sorted(BASES)), st.sampled_from(["model", "dataset", "train", "loss", "noise"]),
       st.sampled_from(["filters", "depth", "channels", "no_layers", "levels", "batch_size", "input_shape",
                        "max_value", "min_value", "additional_noise", "multiplicative_noise", "subsample_size",
                        "kernel_size", "total_steps", "epochs", "sigma", "sigma_range", "dataset_shape",
                        "checkpoint_every", "iterations_choice", "random_batch_size", "clip_value"]),
       GARBAGE)
def test_every_known_key_takes_garbage(base, section, key, value):
    """Known keys (the seed's too) given values of every type and size: the loader still never crashes."""
    config = copy.deepcopy(BASES[base])
    if isinstance(config.get(section), dict):
        config[section][key] = value
        check_loads(config)


@pytest.mark.parametrize("value", [1e308, 10**12, 2**64, 64.0, float("nan"), [3], {"a": 1}, True])
@pytest.mark.parametrize("key", ["filters", "depth", "channels"])
def test_absurd_model_sizes_are_config_errors(key, value):
    config = copy.deepcopy(SHIPPED["quickstart.yaml"])
    config["model"][key] = value
    with pytest.raises(ConfigError) as error:
        load_config(config)
    assert any(p.startswith(f"model.{key}:") for p in error.value.problems), error.value.problems


@pytest.mark.parametrize("value", [[255], {"a": 1}, "255", None, float("nan")])
@pytest.mark.parametrize("key", ["max_value", "min_value"])
def test_seed_pixel_range_of_the_wrong_type_is_a_config_error(key, value):
    config = copy.deepcopy(SEED_CONFIG)
    config["dataset"][key] = value
    with pytest.raises(ConfigError) as error:
        load_config(config)
    assert any(p.startswith(f"dataset.{key}:") for p in error.value.problems), error.value.problems


@pytest.mark.parametrize("last", [[3], {"c": 3}, 3.5, 1e308, True])
@pytest.mark.parametrize("section", ["model", "dataset"])
def test_unhashable_input_shape_entries_are_config_errors(section, last):
    config = copy.deepcopy(SEED_CONFIG)
    config[section]["input_shape"] = [256, 256, last]
    with pytest.raises(ConfigError) as error:
        load_config(config)
    assert any(p.startswith(f"{section}.input_shape") for p in error.value.problems), error.value.problems


# ---- a sample of the mutants that validate run two steps ---------------------------------------------------------

TINY = {
    "seed": 0, "device": "cpu",
    "model": {"type": "dncnn", "channels": 3, "depth": 2, "filters": 4},
    "noise": {"type": "additive_gaussian", "sigma_range": [0, 50]},
    "dataset": {"type": "sample_images", "batch_size": 2, "input_shape": [16, 16, 3]},
    "loss": {"type": "mse"},
    "train": {"total_steps": 2, "checkpoint_every": 2, "tensorboard": False, "progress": False, "prefetch": 0,
              "optimizer": {"type": "adam", "learning_rate": 0.001}},
    "evaluate": {"sample_photos": ["astronaut"], "sigmas": [25], "max_images": 1},
}
# what sets the cost of the run is put back after mutating (a valid 10**6 steps is not a crash, only slow)
COST = {("train", "total_steps"): 2, ("dataset", "batch_size"): 2, ("dataset", "input_shape"): [16, 16, 3],
        ("model", "depth"): 2, ("model", "filters"): 4, ("train", "checkpoint_every"): 2}


def cheap(config):
    for (section, key), value in COST.items():
        if isinstance(config.get(section), dict) and key in config[section]:
            config[section][key] = copy.deepcopy(value)
    for section in ("train",):
        if isinstance(config.get(section), dict):
            config[section].update(tensorboard=False, progress=False, total_steps=2)
    if isinstance(config.get("evaluate"), dict):
        config["evaluate"] = {**config["evaluate"], "max_images": 1, "save_images": 0, "tile": 0}
        config["evaluate"].pop("directories", None)
        config["evaluate"].pop("models", None)
    config.pop("export", None)
    return config


def plausible(value):
    """Mostly a value of the same type and a likely size (so that many mutants validate), sometimes garbage."""
    if isinstance(value, bool):
        same = st.booleans()
    elif isinstance(value, int):
        same = st.integers(-2, 40) | st.sampled_from([10**6, 2**31, 2**63])
    elif isinstance(value, float):
        same = st.floats(-1, 100) | st.sampled_from([1e-300, 1e30])
    elif isinstance(value, str):
        same = st.sampled_from(["", "rgb", "grayscale", "auto", "cpu", "relu", "psnr", "ssim", "x"])
    elif isinstance(value, list) and value:
        same = st.lists(plausible(value[0]), min_size=1, max_size=4)
    else:
        same = GARBAGE
    return st.one_of(same, same, same, GARBAGE)


def known_keys(config, section):
    """The keys a section's schema knows (a component's own params for a component section)."""
    from bfcnn.config import config_schema
    from bfcnn.registry import default_registries

    schema = config_schema()["properties"].get(section, {})
    if "$ref" in schema:
        kind = schema["$ref"].rsplit("/", 1)[-1]
        node = config.get(section)
        if isinstance(node, dict) and node.get("type") in default_registries()[kind]:
            schema = default_registries()[kind].get(node["type"]).schema
    return sorted(schema.get("properties", {})) or ["x"]


@st.composite
def tiny_mutants(draw):
    config = copy.deepcopy(TINY)
    for _ in range(draw(st.integers(1, 2))):
        if draw(st.booleans()):  # a value changed
            path, value = draw(st.sampled_from([p for p in paths(config) if p[0]]))
            at(config, path[:-1])[path[-1]] = draw(plausible(value))
        else:  # a key the section knows, set to something
            section = draw(st.sampled_from([k for k, v in config.items() if isinstance(v, dict)]))
            key = draw(st.sampled_from(known_keys(config, section)))
            config[section][key] = draw(plausible(draw(st.sampled_from([1, 0.5, True, "auto", [1, 2]]))))
    return config


@settings(max_examples=int(os.environ.get("BFCNN_FUZZ_RUNS", "6")), deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(tiny_mutants())
def test_valid_mutants_run_two_steps_without_a_traceback(tmp_path_factory, capfd, mutant):
    from bfcnn.cli import main

    try:
        config = cheap(load_config(mutant))
        load_config(config)
    except ConfigError:
        assume(False)  # only the mutants that validate run
    import yaml

    folder = tmp_path_factory.mktemp("run")
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    code = main(["run", str(path), "-o", str(folder / "out")])
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    assert code in (0, 2), (code, err)


@pytest.mark.parametrize("where", [("seed",), ("evaluate", "seed"), ("train", "log_every")])
def test_integers_beyond_int64_are_config_errors_anywhere(where):
    config = copy.deepcopy(SHIPPED["quickstart.yaml"])
    node = config
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = 2**64
    with pytest.raises(ConfigError) as error:
        load_config(config)
    assert any(p.startswith(f"{'.'.join(where)}: {2**64} is larger than any integer bfcnn takes")
               for p in error.value.problems), error.value.problems
