"""The `bfcnn` command. argparse (standard library) parses it: sub-commands and help need nothing more.

Exit codes: 0 success; 2 bad input (config, path, argument), a short message, no traceback; 1 a failure in a run.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from .errors import BfcnnError
from .exits import guarded


def cmd_run(args):
    from pathlib import Path

    from .pipeline import run

    output = args.output_dir or str(Path("runs") / Path(args.config).stem)
    overrides = list(args.set)
    if args.time_limit is not None:
        from .config import load_config
        from .train import parse_duration

        parse_duration(args.time_limit)  # a bad duration is one clear error
        if "train" not in load_config(args.config, overrides):
            raise BfcnnError("--time-limit: the config has no train section")
        overrides.append(f"train.time_limit={args.time_limit}")
    summary = run(args.config, output, overrides)
    print(json.dumps({"output_dir": output, **summary}, indent=2, default=str))


def cmd_validate(args):
    from .config import load_config

    load_config(args.config, args.set)
    print(f"{args.config}: valid")


def cmd_schema(args):
    from .config import config_schema

    print(json.dumps(config_schema(), indent=2))


def cmd_list(args):
    from .registry import KINDS, default_registries, did_you_mean

    registries = default_registries()
    if args.kind and args.kind not in KINDS:
        raise BfcnnError(f"{args.kind!r} is not a component kind{did_you_mean(args.kind, KINDS)} "
                         f"(kinds: {', '.join(KINDS)})")
    for kind in [args.kind] if args.kind else KINDS:
        print(f"{kind}:")
        for name in registries[kind].names(args.pattern):
            component = registries[kind].get(name)
            facts = ""
            if kind == "model":  # built with default params; a model that fails to build shows the error
                from .layers import model_facts
                try:
                    f = model_facts(name, registries)
                    facts = (f"bias-free: {'yes' if f['bias_free'] else 'no'}, {f['parameters']:,} params, "
                             f"{f['flops_per_pixel'] / 1e6:.3g} MFLOP/px  ")
                except Exception as error:  # someone else's model may fail in any way: report, go on
                    facts = f"(fails to build with default params: {type(error).__name__}: {error})  "
            elif kind == "pretrained":
                facts = pretrained_facts(name, component)
            print(f"  {name:<28} {facts}{component.summary}  [{component.plugin}]")


def pretrained_facts(name, component) -> str:
    """Architecture, bias-freeness and parameters of registered weights: the model rebuilt from its file, so the
    facts are the model's own (its `bias_free` attribute, its parameter count), not read off the spec or the keys."""
    from .checkpoint import load_model, read_model_spec
    from .denoise import DEFAULT_MODEL
    from .layers import parameter_count

    try:
        path = component.factory()
        model = load_model(path)
    except Exception as error:  # a plugin's missing or broken file: report, go on
        return f"(weights not readable: {error})  "
    default = " (default)" if name == DEFAULT_MODEL else ""
    bias_free = "yes" if getattr(model, "bias_free", False) else "no"
    return f"{read_model_spec(path).get('type')}{default}, bias-free: {bias_free}, {parameter_count(model):,} params  "


def cmd_plugins(args):
    from .registry import default_registries

    registries = default_registries()
    by_plugin = {}
    for kind in registries.by_kind:
        for name in registries[kind].names():
            by_plugin.setdefault(registries[kind].get(name).plugin, []).append(f"{kind}:{name}")
    for what, entries in (("stage", registries.stages), ("command", registries.commands),
                          ("config_format", registries.config_formats)):
        for name, entry in entries.items():
            by_plugin.setdefault(entry.plugin, []).append(f"{what}:{name}")
    for plugin, items in by_plugin.items():
        print(f"{plugin}: {', '.join(items)}")
    for plugin, error in registries.failures.items():
        print(f"{plugin}: FAILED TO LOAD: {error}")


CORE_COMMANDS = ("run", "validate", "schema", "list", "plugins")


def build_parser(argv=None):
    parser = argparse.ArgumentParser(prog="bfcnn", description="Blind denoising with bias-free CNNs.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    from .registry import command_registries, resolve

    stages = ", ".join(command_registries().stages)
    p = sub.add_parser("run", help=f"run the stages of a config ({stages})")
    p.add_argument("config")
    p.add_argument("-o", "--output-dir", help="default: runs/<config name>")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--time-limit", metavar="DURATION",
                   help="train for at most this long (e.g. 8m, 2h30m): train.time_limit")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("validate", help="check a config and report every problem")
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(handler=cmd_validate)

    sub.add_parser("schema", help="print the config's JSON Schema").set_defaults(handler=cmd_schema)

    p = sub.add_parser("list", help="list registered components")
    p.add_argument("kind", nargs="?")
    p.add_argument("--pattern", help="glob on names, e.g. '*resnet*'")
    p.set_defaults(handler=cmd_list)

    sub.add_parser("plugins", help="list plugins and what they register").set_defaults(handler=cmd_plugins)

    wanted = requested_command(argv)
    for name, command in command_registries().commands.items():
        if name in CORE_COMMANDS:
            continue
        p = sub.add_parser(name, help=command.help)
        if name == wanted:  # only the command that runs imports its module (`bfcnn --help` imports no torch)
            resolve(command.add_arguments)(p)
            p.set_defaults(handler=lambda args, command=command: resolve(command.command)(args))
    return parser


def requested_command(argv):
    """The sub-command named on the command line (the first word that is no option), or None."""
    words = [w for w in (sys.argv[1:] if argv is None else argv) if not w.startswith("-")]
    return words[0] if words else None


def main(argv=None) -> int:
    try:
        parser = build_parser(argv)
    except Exception as error:  # a plugin's command that fails to import: say which, no traceback
        print(f"bfcnn: error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits 2 on bad arguments, 0 on --help
        return int(exit_.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s: %(message)s")
    return guarded(lambda: args.handler(args))
