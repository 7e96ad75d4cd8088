"""bfcnn: blind image denoising with bias-free convolutional networks.

Python API: `names(kind)`, `build(kind, spec)`, `load_config(path)`, `run(config_or_path, output_dir)`,
`load_model(name_or_path)`; plugins implement hooks marked with `hookimpl`.
"""

import os

# albumentations otherwise asks the network for its latest version on every import
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from .config import load_config  # noqa: E402
from .errors import BfcnnError, ConfigError, RunError  # noqa: E402
from .registry import KINDS, build, default_registries, hookimpl  # noqa: E402

__version__ = "0.1.0"
__all__ = ["KINDS", "BfcnnError", "ConfigError", "RunError", "build", "hookimpl", "load_config", "load_model",
           "names", "run"]


def names(kind: str, pattern: str | None = None) -> list[str]:
    """Sorted names registered for `kind` (noise, model, loss, ...), optionally filtered by a glob pattern."""
    if kind not in KINDS:
        from .registry import did_you_mean
        raise BfcnnError(f"{kind!r} is not a component kind{did_you_mean(kind, KINDS)} (kinds: {', '.join(KINDS)})")
    return default_registries()[kind].names(pattern)


def run(config_or_path, output_dir, overrides=()):
    """Run the stages a config asks for (train, evaluate, export) into `output_dir`; return a summary dict."""
    from .pipeline import run as run_pipeline
    return run_pipeline(config_or_path, output_dir, overrides)


def load_model(name_or_path=None, device="cpu"):
    """A trained denoiser from a run folder, a checkpoint file or a shipped model's name (default: the shipped
    default model).

    Returns a bfcnn.denoise.Denoiser: `.denoise(array)` (H x W x C uint8/uint16/float -> same dtype, tiled),
    `.module` the torch model; calls and other attributes go to the module.
    """
    from .denoise import load_denoiser
    return load_denoiser(name_or_path, device=device)
