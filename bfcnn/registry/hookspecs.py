"""The plugin contract: one hook per component kind, each given a `register` callable, plus one for pipeline
stages, one for `bfcnn` sub-commands and one for config formats.

`register(name, factory, schema=None, summary="", check=None)`: `factory(**params)` builds the component from its
config mapping minus the `type` key (a factory with a `registries` keyword also gets the registries it is built
from, to build the components it holds); `schema` is the JSON Schema (an object schema) of those params;
`check(spec, config) -> problems` finds what the schema cannot (e.g. a window larger than the dataset's crops),
each problem "dotted.path: what is wrong"; it runs once the whole config satisfies the schema.
"""

import pluggy

PROJECT = "bfcnn"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_noises(register):
    """Register corruptions: `noise(x, generator) -> y` on float N x C x H x W tensors in [0, 1]."""


@hookspec
def register_models(register):
    """Register denoisers: torch.nn.Module from N x C x H x W to the same shape, with a `bias_free` attribute."""


@hookspec
def register_losses(register):
    """Register losses: `loss(prediction, target) -> scalar tensor`."""


@hookspec
def register_optimizers(register):
    """Register optimizers: `optimizer(parameters) -> torch.optim.Optimizer`."""


@hookspec
def register_schedules(register):
    """Register learning-rate schedules: `schedule(step) -> float`, a multiplier of the base learning rate."""


@hookspec
def register_datasets(register):
    """Register datasets: objects with `batches(seed, rank, world_size)` and `validation_images()`."""


@hookspec
def register_metrics(register):
    """Register metrics: `metric(prediction, target) -> per-image tensor` of shape (N,)."""


@hookspec
def register_pretrained(register):
    """Register trained weights by name: `factory() -> path` of a .safetensors file whose metadata holds the model
    spec (bfcnn.checkpoint.save_model writes such files); `bfcnn.load_model(NAME)` and `--model NAME` find them."""


@hookspec
def register_exporters(register):
    """Register exporters: `exporter(model, output_dir, example) -> dict` report naming the files written."""


@hookspec
def register_measurements(register):
    """Register linear measurements: `factory(**params)(shape, seed=0, device="cpu") -> Measurement` (see
    bfcnn.restore.Measurement: `measure(x)`, `adjoint(y)` on N x C x H x W tensors, with M M^T = I)."""


@hookspec
def register_stages(register):
    """Register pipeline stages: `register(name, run, schema=None, summary="", prepare=None, check=None,
    every_rank=False, defaults=None)`. `name` is the config section the stage runs for and `schema` that
    section's JSON Schema; `run(config, output_dir) -> dict`; `prepare(config, output_dir)` checks inputs before
    any stage runs; `check(section, config) -> problems` as for components; `defaults`: {section: spec} of other
    sections the stage reads, filled into a config that runs it and lacks them (the train stage's noise and
    loss). Functions and the schema may be "module:attribute" strings, imported when needed (so `bfcnn --help`
    imports nothing heavy)."""


@hookspec
def register_commands(register):
    """Register `bfcnn` sub-commands: `register(name, add_arguments, command, help="")`, or `register(name,
    module="package.module")` for a module with `add_arguments(parser)` and `command(args)` whose docstring's
    first line is the help. Functions may be "module:function" strings, imported only when the command runs."""


@hookspec
def register_config_formats(register):
    """Register config formats: `register(name, adapt, summary="")`, `adapt(config) -> config` maps a config
    written in another format (the original project's, another tool's) onto bfcnn's before it is validated; a
    config already in bfcnn's form passes through unchanged. Every registered format's `adapt` runs, in
    registration order; problems it finds raise `bfcnn.ConfigError` (each "dotted.path: what is wrong")."""
