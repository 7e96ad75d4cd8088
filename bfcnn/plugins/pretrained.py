"""Built-in pretrained models: the weights shipped in bfcnn/pretrained/, each with its card (NAME.md) and the
config it was trained with (NAME.yaml). The summaries carry the card's CBSD68 figures (PSNR, dB, blind, the
field's protocol: `bfcnn evaluate --sigmas 15 25 50 75 100`)."""

from __future__ import annotations

from pathlib import Path

from bfcnn.registry import hookimpl

FOLDER = Path(__file__).resolve().parent.parent / "pretrained"
NO_PARAMS = {"type": "object", "additionalProperties": False, "properties": {}}

# name -> (what it is, CBSD68 PSNR at sigma 15 / 25 / 50 / 75 / 100)
SHIPPED = {
    "bf_dncnn_small_cpu": ("BF-DnCNN 10 x 32, 469 min on one CPU thread in five sittings",
                           (33.43, 30.72, 27.25, 25.28, 23.87)),
    "bf_drunet_small_cpu": ("bias-free DRUNet-shaped UNet (4 scales, 16-128 filters), 477 min on one CPU thread in "
                            "four sittings; also the prior of `bfcnn restore` and `bfcnn sample`",
                            (33.95, 31.30, 28.04, 26.30, 25.11)),
    "bf_resnet_ms_small_cpu": ("3-level multiscale bias-free resnet, 20 min on one CPU thread",
                               (33.08, 30.45, 27.02, 24.98, 23.40)),
}


def summary(what, figures) -> str:
    return f"{what}; CBSD68 sigma 15/25/50/75/100: {' / '.join(f'{v:.2f}' for v in figures)} dB"


def weights_of(name):
    def factory():
        return FOLDER / f"{name}.safetensors"
    factory.__name__ = name
    return factory


@hookimpl
def register_pretrained(register):
    for name, (what, figures) in SHIPPED.items():
        register(name, weights_of(name), NO_PARAMS, summary(what, figures))
