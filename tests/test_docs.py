"""Every hook is documented in the README and exercised by a test (as datasette does)."""

import pytest

from bfcnn.registry import hookspecs
from conftest import REPO

HOOKS = sorted(name for name in vars(hookspecs) if name.startswith("register_"))

README = (REPO / "README.md").read_text()
TESTS = "\n".join(p.read_text() for p in (REPO / "tests").glob("test_*.py") if p.name != "test_docs.py")
TESTS += "\n".join(p.read_text() for p in (REPO / "plugins_contrib").rglob("test_*.py"))


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hook):
    assert f"`{hook}`" in README, f"README.md does not document the hook {hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_test(hook):
    assert f"def {hook}(" in TESTS, f"no test implements the hook {hook} in a fake plugin"


def test_readme_quick_start_commands_are_the_ones_ci_runs():
    ci = (REPO / ".ci" / "run").read_text()
    assert "python3 -m pytest" in ci and "constraints.txt" in ci
    assert "bfcnn run configs/quickstart.yaml" in README
    assert (REPO / "configs" / "quickstart.yaml").is_file()


def test_readme_plugin_example_is_the_real_plugin():
    source = (REPO / "plugins_contrib/bfcnn-extra-noises/bfcnn_extra_noises/__init__.py").read_text()
    assert source in README, "README's 'Write a plugin' section must show the example plugin as it is"


def test_every_contrib_package_is_installed_by_the_readme_command_and_ci():
    ci = (REPO / ".ci" / "run").read_text()
    command = next(line for line in README.splitlines() if line.startswith("pip install") and "[test" in line)
    for package in sorted(p.name for p in (REPO / "plugins_contrib").iterdir() if (p / "setup.cfg").is_file()):
        assert f"-e plugins_contrib/{package}" in command, package
        assert f"-e plugins_contrib/{package}" in ci, package
