"""The plugin contract: one hook per component kind, each given a `register` callable.

`register(name, factory, schema=None, summary="")`: `factory(**params)` builds the component from its
config mapping minus the `type` key; `schema` is the JSON Schema (an object schema) of those params.
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
