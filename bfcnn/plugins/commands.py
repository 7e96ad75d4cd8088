"""Built-in `bfcnn` sub-commands that live in their own modules (each has add_arguments(parser) and
command(args); the first line of its docstring is the help). A new one is one entry here."""

from bfcnn.registry import hookimpl

COMMAND_MODULES = {
    "evaluate": "bfcnn.evaluate",
    "denoise": "bfcnn.denoise",
    "explain": "bfcnn.explain",
    "restore": "bfcnn.restore",
    "sample": "bfcnn.sample",
    "explore": "bfcnn.explore",
}


@hookimpl
def register_commands(register):
    for name, module in COMMAND_MODULES.items():
        register(name, module=module)
