"""Stages and commands arrive through the register_stages / register_commands hooks."""

import os
import subprocess
import sys
import textwrap

import pytest

import bfcnn
from bfcnn.errors import DuplicateComponentError
from bfcnn.registry import hookimpl, load_registries


class StagePlugin:
    """A stage and a command, in process."""

    def __init__(self):
        self.calls = []

    @hookimpl
    def register_stages(self, register):
        register("note", lambda config, output_dir: self.calls.append(("run", config["note"])) or {"ok": True},
                 {"type": "object", "properties": {"text": {"type": "string"}}, "additionalProperties": False},
                 "writes nothing", prepare=lambda config, output_dir: self.calls.append(("prepare", None)),
                 check=lambda section, config: [] if section.get("text") != "bad" else ["note.text: bad text"])

    @hookimpl
    def register_commands(self, register):
        register("hello", lambda parser: parser.add_argument("--who", default="world"),
                 lambda args: print(f"hello {args.who}") or 3, help="say hello")


def test_builtin_stages_and_commands_come_through_the_hooks():
    registries = load_registries(autoload=False)
    assert list(registries.stages)[:3] == ["train", "evaluate", "export"]
    assert all(s.plugin == "bfcnn.plugins.stages" for s in registries.stages.values())
    assert {"evaluate", "denoise", "explain"} <= set(registries.commands)
    assert registries.commands["denoise"].help.startswith("denoise image files")


def test_a_plugin_stage_gets_its_section_check_prepare_and_run(tmp_path, tiny_config):
    plugin = StagePlugin()
    registries = load_registries(extra_plugins=[plugin], autoload=False)
    from bfcnn.config import config_schema

    assert config_schema(registries)["properties"]["note"]["properties"]["text"] == {"type": "string"}
    with pytest.raises(bfcnn.ConfigError, match="note.text: 3 is not of type 'string'"):
        bfcnn.load_config({"note": {"text": 3}}, registries=registries)
    with pytest.raises(bfcnn.ConfigError, match="note.text: bad text"):
        bfcnn.load_config({"note": {"text": "bad"}}, registries=registries)
    with pytest.raises(bfcnn.ConfigError, match="unknown key 'note'"):  # the process-wide registries lack it
        bfcnn.load_config({"note": {}})
    from bfcnn.pipeline import run

    summary = run({"note": {"text": "hi"}}, tmp_path, registries=registries)
    assert summary == {"note": {"ok": True}}
    assert plugin.calls == [("prepare", None), ("run", {"text": "hi"})]
    with pytest.raises(bfcnn.BfcnnError, match="unknown stage"):
        run({"note": {}}, tmp_path, stages=["nope"], registries=registries)


def test_stage_registrations_are_checked():
    class Twice:
        @hookimpl
        def register_stages(self, register):
            register("train", lambda c, o: {})

    with pytest.raises(DuplicateComponentError, match="stage 'train' is registered twice"):
        load_registries(extra_plugins=[Twice()], autoload=False)

    class Reserved:
        @hookimpl
        def register_stages(self, register):
            register("model", lambda c, o: {})

        @hookimpl
        def register_commands(self, register):
            register("nothing")

    registries = load_registries(extra_plugins=[Reserved()], autoload=False)
    assert "model" not in registries.stages and "nothing" not in registries.commands
    assert "Reserved" in registries.failures


def test_the_train_stage_fills_its_noise_and_loss_from_its_own_defaults(tiny_config, tmp_path):
    from bfcnn.plugins.stages import TRAIN_DEFAULTS

    given = {k: v for k, v in tiny_config.items() if k not in ("noise", "loss")}
    config = bfcnn.load_config(given)
    assert config["noise"] == TRAIN_DEFAULTS["noise"] and config["loss"] == TRAIN_DEFAULTS["loss"]
    assert "noise" not in given and "loss" not in given  # the caller's mapping is left as it was
    config["noise"]["sigma_range"][1] = 7  # a copy: the registered default stays as it was
    assert TRAIN_DEFAULTS["noise"]["sigma_range"] == [0, 55]
    assert bfcnn.load_config(tiny_config)["noise"] == tiny_config["noise"]  # a given section wins
    evaluate_only = {"model": tiny_config["model"], "evaluate": {"directories": [str(tmp_path)]}}
    assert "noise" not in bfcnn.load_config(evaluate_only)  # no stage that reads it runs
    from bfcnn.train import Trainer

    with pytest.raises(bfcnn.BfcnnError, match="no noise or loss section"):
        Trainer(given, tmp_path / "never")
    import yaml

    from bfcnn.pipeline import run

    run(given, tmp_path / "run")  # the run's record says what it trained with
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["noise"] == TRAIN_DEFAULTS["noise"] and saved["loss"] == TRAIN_DEFAULTS["loss"]


def test_a_plugin_stage_declares_the_sections_it_reads():
    class Reads:
        @hookimpl
        def register_stages(self, register):
            register("report", lambda c, o: {}, defaults={"loss": {"type": "mae"}, "noise": {"type": "subsample"}})
            register("later", lambda c, o: {}, defaults={"loss": {"type": "hinged_mae"}})

    registries = load_registries(extra_plugins=[Reads()], autoload=False)
    assert registries.stages["report"].defaults["loss"] == {"type": "mae"}
    config = bfcnn.load_config({"report": {}, "later": {}}, registries=registries)
    assert config["loss"] == {"type": "mae"} and config["noise"] == {"type": "subsample"}  # the first stage's
    assert bfcnn.load_config({"later": {}}, registries=registries)["loss"] == {"type": "hinged_mae"}
    train_and_report = bfcnn.load_config({"model": {"type": "dncnn"}, "dataset": {"type": "sample_images"},
                                          "train": {}, "report": {}}, registries=registries)
    assert train_and_report["loss"] == {"type": "mse"}  # registration order: the built-in train stage first

    class Wrong:
        @hookimpl
        def register_stages(self, register):
            register("report", lambda c, o: {}, defaults={"loss": {"type": "nope"}})

    wrong = load_registries(extra_plugins=[Wrong()], autoload=False)
    with pytest.raises(bfcnn.ConfigError, match=r"loss.type: 'nope' .*the default of stage 'report' \(plugin 'Wrong'\)"):
        bfcnn.load_config({"report": {}}, registries=wrong)
    with pytest.raises(bfcnn.ConfigError) as given_wrong:  # the user's own section: no word of a default
        bfcnn.load_config({"report": {}, "loss": {"type": "nope2"}}, registries=wrong)
    assert "default" not in str(given_wrong.value)

    for bad in ({"loss": "mse"}, {"report": {"type": "mae"}}, ["loss"]):
        class Bad:
            @hookimpl
            def register_stages(self, register, bad=bad):
                register("report", lambda c, o: {}, defaults=bad)

        failed = load_registries(extra_plugins=[Bad()], autoload=False)
        assert "report" not in failed.stages and "defaults of stage 'report'" in failed.failures["Bad"]


def test_a_plugin_command_runs_through_the_cli(monkeypatch, capsys):
    from bfcnn import cli

    registries = load_registries(extra_plugins=[StagePlugin()], autoload=False)
    monkeypatch.setattr("bfcnn.registry.command_registries", lambda: registries)
    assert cli.main(["hello", "--who", "you"]) == 3
    assert capsys.readouterr().out == "hello you\n"


def test_a_command_module_is_one_entry(tmp_path, monkeypatch, capsys):
    """The convention of the built-in commands: a module with add_arguments(parser) and command(args), whose
    docstring's first line is the help, registered by its name alone (and imported only when it runs)."""
    (tmp_path / "fake_command_module.py").write_text(textwrap.dedent('''
        """greet someone: the help line
        more text"""
        def add_arguments(parser):
            parser.add_argument("name")
        def command(args):
            print("hi", args.name)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))

    class Module:
        @hookimpl
        def register_commands(self, register):
            register("greet", module="fake_command_module")

    registries = load_registries(extra_plugins=[Module()], autoload=False)
    assert registries.commands["greet"].help == "greet someone: the help line"
    assert "fake_command_module" not in sys.modules
    monkeypatch.setattr("bfcnn.registry.command_registries", lambda: registries)
    from bfcnn import cli

    assert cli.main(["greet", "Ada"]) == 0
    assert capsys.readouterr().out == "hi Ada\n"


def test_help_imports_no_torch():
    code = ("import sys\nfrom bfcnn.cli import main\nmain(['--help'])\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO TORCH')")
    env = {**os.environ, "BFCNN_DISABLE_PLUGIN_AUTOLOAD": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    for name in ("run", "denoise", "explain", "evaluate"):
        assert f"    {name} " in result.stdout
    assert "run the stages of a config (train, evaluate, export" in result.stdout  # from the registered stages
    assert result.stdout.strip().endswith("NO TORCH"), result.stdout
