"""Registry behaviour: register, get, names, duplicates, did-you-mean, plugin loading and its failures."""

from types import SimpleNamespace

import pytest
import torch

import bfcnn
from bfcnn.errors import ConfigError, DuplicateComponentError, UnknownComponentError
from bfcnn.registry import KINDS, Registry, hookimpl, load_registries
from bfcnn.registry import plugins as plugin_module


class FakeNoisePlugin:
    @hookimpl
    def register_noises(self, register):
        register("fake_noise", lambda strength=1.0: (lambda x, g: x * strength),
                 {"type": "object", "properties": {"strength": {"type": "number"}}}, "a fake noise")


class DuplicatePlugin:
    @hookimpl
    def register_noises(self, register):
        register("additive_gaussian", lambda: None)


class RaisingPlugin:
    @hookimpl
    def register_models(self, register):
        raise RuntimeError("boom in the hook")


def test_register_get_and_names_with_patterns():
    registry = Registry("noise")
    registry.add("b_noise", dict, None, "b", plugin="p")
    registry.add("a_noise", dict, {"type": "object"}, "a", plugin="p")
    assert registry.names() == ["a_noise", "b_noise"]
    assert registry.names("a*") == ["a_noise"]
    assert registry.get("a_noise").summary == "a"
    assert registry.get("b_noise").schema == {"type": "object"}  # None means: any params
    assert "a_noise" in registry and "c_noise" not in registry


def test_unknown_name_lists_known_and_suggests_closest():
    registry = Registry("noise")
    registry.add("additive_gaussian", dict, plugin="p")
    registry.add("subsample", dict, plugin="p")
    with pytest.raises(UnknownComponentError) as error:
        registry.get("gausian")
    assert "did you mean 'additive_gaussian'?" in str(error.value)
    assert "subsample" in str(error.value)


def test_registration_rejects_bad_arguments():
    registry = Registry("model")
    with pytest.raises(ValueError, match="not callable"):
        registry.add("x", 3, plugin="p")
    with pytest.raises(ValueError, match="object schema"):
        registry.add("x", dict, {"type": "array"}, plugin="p")


def test_duplicate_names_both_plugins():
    with pytest.raises(DuplicateComponentError) as error:
        load_registries(extra_plugins=[DuplicatePlugin()], autoload=False)
    assert "bfcnn.plugins.noises" in str(error.value) and "DuplicatePlugin" in str(error.value)


def test_in_process_plugin_is_registered_with_its_name():
    registries = load_registries(extra_plugins=[FakeNoisePlugin()], autoload=False)
    component = registries["noise"].get("fake_noise")
    assert component.plugin == "FakeNoisePlugin"
    noise = bfcnn.build("noise", {"type": "fake_noise", "strength": 2.0}, registries)
    assert noise(3.0, None) == 6.0
    with pytest.raises(bfcnn.ConfigError, match="strength"):
        bfcnn.build("noise", {"type": "fake_noise", "strength": "x"}, registries)


def test_builtins_fill_every_kind_and_register_through_hooks():
    registries = load_registries(autoload=False)
    for kind in KINDS:
        names = registries[kind].names()
        assert names, f"no built-in {kind}"
        assert all(registries[kind].get(n).plugin.startswith("bfcnn.plugins.") for n in names)


def test_hook_that_raises_is_reported_and_the_rest_keeps_working():
    registries = load_registries(extra_plugins=[RaisingPlugin()], autoload=False)
    assert "boom in the hook" in registries.failures["RaisingPlugin"]
    assert "dncnn" in registries["model"].names()


def fake_entry_point(name, load):
    return SimpleNamespace(name=name, load=load)


def test_plugin_that_fails_to_import_is_reported_by_name(monkeypatch):
    def broken():
        raise ImportError("No module named 'missing_dependency'")

    good = SimpleNamespace(__name__="good_plugin", register_noises=FakeNoisePlugin().register_noises)
    eps = [fake_entry_point("broken_plugin", broken), fake_entry_point("good_plugin", lambda: good)]
    monkeypatch.setattr(plugin_module, "entry_points", lambda group: eps if group == "bfcnn" else [])
    monkeypatch.delenv("BFCNN_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    registries = load_registries()
    assert "missing_dependency" in registries.failures["broken_plugin"]
    assert registries["noise"].get("fake_noise").plugin == "good_plugin"
    assert "additive_gaussian" in registries["noise"].names()


def test_autoload_can_be_switched_off(monkeypatch):
    good = SimpleNamespace(__name__="good_plugin", register_noises=FakeNoisePlugin().register_noises)
    monkeypatch.setattr(plugin_module, "entry_points", lambda group: [fake_entry_point("good_plugin", lambda: good)])
    monkeypatch.setenv("BFCNN_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "fake_noise" not in load_registries()["noise"].names()
    monkeypatch.setenv("BFCNN_DISABLE_PLUGIN_AUTOLOAD", "0")
    assert "fake_noise" in load_registries()["noise"].names()


def test_api_names_and_unknown_kind():
    assert bfcnn.names("model") == sorted(bfcnn.names("model"))
    assert "additive_gaussian" in bfcnn.names("noise", "*gauss*")
    with pytest.raises(bfcnn.BfcnnError, match="did you mean 'noise'"):
        bfcnn.names("noises")
    with pytest.raises(bfcnn.BfcnnError, match="did you mean 'model'"):
        bfcnn.build("modle", {"type": "dncnn"})


class EveryKindPlugin:
    """One fake component of every kind, registered through each hook."""

    @hookimpl
    def register_noises(self, register):
        register("fake_identity_noise", lambda: (lambda x, g: x.clone()), summary="no noise")

    @hookimpl
    def register_models(self, register):
        register("fake_identity_model", lambda: torch.nn.Identity(), summary="identity")

    @hookimpl
    def register_losses(self, register):
        register("fake_l1", lambda: (lambda p, t: (p - t).abs().mean()), summary="l1")

    @hookimpl
    def register_optimizers(self, register):
        register("fake_sgd", lambda learning_rate=0.1: (lambda params: torch.optim.SGD(params, lr=learning_rate)),
                 {"type": "object", "properties": {"learning_rate": {"type": "number"}}}, "sgd")

    @hookimpl
    def register_schedules(self, register):
        register("fake_half", lambda: (lambda step: 0.5), summary="half")

    @hookimpl
    def register_datasets(self, register):
        register("fake_data", lambda: SimpleNamespace(channels=3, batch_size=1), summary="data")

    @hookimpl
    def register_metrics(self, register):
        register("fake_zero", lambda: (lambda p, t: torch.zeros(p.shape[0])), summary="zero")

    @hookimpl
    def register_pretrained(self, register):
        register("fake_weights", lambda: "fake.safetensors", summary="weights")

    @hookimpl
    def register_exporters(self, register):
        register("fake_export", lambda: (lambda model, out, example: {"files": []}), summary="nothing")

    @hookimpl
    def register_measurements(self, register):
        register("fake_nothing", lambda: (lambda shape, seed=0, device="cpu": None), summary="nothing measured")


def test_a_plugin_can_register_every_kind():
    registries = load_registries(extra_plugins=[EveryKindPlugin()], autoload=False)
    expected = {"noise": "fake_identity_noise", "model": "fake_identity_model", "loss": "fake_l1",
                "optimizer": "fake_sgd", "schedule": "fake_half", "dataset": "fake_data", "metric": "fake_zero",
                "exporter": "fake_export", "pretrained": "fake_weights", "measurement": "fake_nothing"}
    assert set(expected) == set(KINDS)
    for kind, name in expected.items():
        assert registries[kind].get(name).plugin == "EveryKindPlugin"
        assert bfcnn.build(kind, {"type": name}, registries) is not None
    x = torch.rand(1, 3, 4, 4)
    assert torch.equal(bfcnn.build("model", {"type": "fake_identity_model"}, registries)(x), x)
    assert bfcnn.build("schedule", {"type": "fake_half"}, registries)(10) == 0.5
    # the config schema now knows the plugin's names
    from bfcnn.config import config_schema

    assert "fake_l1" in config_schema(registries)["$defs"]["loss"]["properties"]["type"]["enum"]


class ScaleNoisePlugin:
    """A noise only this in-process plugin knows (not in the process-wide registries)."""

    @hookimpl
    def register_noises(self, register):
        register("fake_scale", lambda factor=2.0: (lambda x, generator=None: x * factor),
                 {"type": "object", "additionalProperties": False, "properties": {"factor": {"type": "number"}}})


@pytest.mark.parametrize("composite", [
    {"type": "choice", "choices": [{"type": "fake_scale", "factor": 3.0}]},
    {"type": "sequence", "steps": [{"type": "fake_scale", "factor": 3.0}, {"type": "fake_scale"}]},
])
def test_composites_build_their_children_from_the_registries_they_come_from(composite):
    registries = load_registries(extra_plugins=[ScaleNoisePlugin()], autoload=False)
    assert "fake_scale" not in bfcnn.names("noise")
    noise = bfcnn.build("noise", composite, registries)
    x = torch.ones(2, 1, 4, 4)
    factor = 3.0 if composite["type"] == "choice" else 6.0
    assert torch.equal(noise(x, torch.Generator().manual_seed(0)), x * factor)
    with pytest.raises(ConfigError, match="fake_scale"):  # the process-wide registries do not know it
        bfcnn.build("noise", composite)


def test_build_checks_one_spec_against_its_component_schema_alone():
    """build() validates against the component's own schema, with the spec's path in every message."""
    with pytest.raises(ConfigError) as error:
        bfcnn.build("noise", {"type": "choice", "choices": [{"type": "additive_gaussian", "sigma": -1}, 3]})
    problems = error.value.problems
    assert any(p.startswith("noise.choices.0.sigma:") for p in problems), problems
    assert any(p.startswith("noise.choices.1:") for p in problems), problems
    with pytest.raises(ConfigError, match=r"noise.type: 'gausian' is not a known noise; did you mean 'additive_gau"):
        bfcnn.build("noise", {"type": "gausian"})
    with pytest.raises(ConfigError, match="model.filters: 1e.308 is not of type 'integer'"):
        bfcnn.build("model", {"type": "dncnn", "filters": 1e308})


def test_build_does_not_import_the_stages():
    import subprocess
    import sys

    code = ("import sys, bfcnn; bfcnn.build('noise', {'type': 'additive_gaussian'}); "
            "print(sorted(m for m in sys.modules if m in ('bfcnn.train', 'bfcnn.evaluate')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
