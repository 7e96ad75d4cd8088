"""The train section of a config: its JSON Schema, where every default lives (the schema's `default`, read by the
trainer and shown by `bfcnn schema`), and the durations of `time_limit`."""

from __future__ import annotations

import re

from ..errors import BfcnnError
from ..registry import ref

POSITIVE = {"type": "integer", "minimum": 1}


TIME_PATTERN = r"^\s*(\d+(\.\d+)?\s*[hms]\s*)+$"


TIME_SPAN_STEPS = 10000  # a time-spanning schedule's steps when neither it nor train.total_steps gives them


UNLIMITED = 2**62  # the steps of a run that only its time limit ends


AUTO_BOOL = {"enum": ["auto", True, False]}


TRAIN_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "epochs": {**POSITIVE, "default": 1,
                   "description": "passes over the training images (used when total_steps < 1)"},
        "total_steps": {"type": "integer", "default": -1, "description": "steps to train; negative or 0: use epochs"},
        "iterations_choice": {"type": "array", "items": {**POSITIVE, "maximum": 100}, "minItems": 1, "default": [1],
                              "description": "the model is applied k times to the same input, k picked from this list"},
        "checkpoints_to_keep": {**POSITIVE, "default": 3,
                                "description": "step checkpoints kept (the best one is kept apart)"},
        "checkpoint_every": {**POSITIVE, "default": 1000, "description": "steps between checkpoints"},
        "visualization_number": {"type": "integer", "minimum": 0, "default": 4,
                                 "description": "images in the noisy | denoised | clean grid (0: none)"},
        "visualization_every": {**POSITIVE, "description": "steps between image logs, the grid and the random "
                                                               "batch (default checkpoint_every)"},
        "random_batch_iterations": {"type": "integer", "minimum": 0, "default": 0,
                                    "description": "the denoiser iterated this many times on pure noise (0: off)"},
        "random_batch_size": {"type": "array", "items": {**POSITIVE, "maximum": 4096}, "minItems": 2, "maxItems": 3,
                              "default": [128, 128],
                              "description": "height, width[, channels] of the random batch"},
        "random_batch_min_difference": {"type": "number", "minimum": 0, "default": 0.0,
                                        "description": "stop iterating when the mean change falls below this"},
        "optimizer": {**ref("optimizer"), "default": {"type": "adam"}},
        "schedule": {**ref("schedule"), "default": {"type": "constant"}},
        "gradient_clipping_by_norm": {"type": "number", "exclusiveMinimum": 0},
        "metrics": {"type": "array", "items": ref("metric"), "minItems": 1, "default": [{"type": "psnr"}],
                    "description": "validation metrics; the first one picks the best checkpoint"},
        "validate_every": {**POSITIVE, "description": "steps between validations (default checkpoint_every)"},
        "validation_sigmas": {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 1,
                              "default": [15, 25, 50],
                              "description": "Gaussian noise levels (0-255 scale) of the validation"},
        "validation_crop": {"type": "integer", "minimum": 8,
                            "description": "center-crop validation images to at most this size (default: whole)"},
        "time_limit": {"anyOf": [{"type": "number", "exclusiveMinimum": 0},
                                 {"type": "string", "pattern": TIME_PATTERN}],
                       "description": "wall-clock budget of the training, e.g. 8m, 2h30m, 90s, or seconds: it stops "
                                      "cleanly with a checkpoint and final weights; without total_steps or epochs "
                                      "it alone ends the run"},
        "schedule_over": {"enum": ["auto", "steps", "time"], "default": "auto",
                          "description": "what the learning-rate schedule spans (auto: the time limit where one is "
                                         "set, else the steps); over time, the schedule's step s of its total_steps "
                                         "(else train.total_steps, else 10000) comes when that fraction of the "
                                         "time limit has passed"},
        "init_from": {"type": "string", "minLength": 1,
                      "description": "start from these weights (a shipped model's name, a run folder or a "
                                     ".safetensors file) with a fresh optimizer"},
        "max_bad_steps": {**POSITIVE, "default": 20, "description": "non-finite steps in a row before the run stops"},
        "precision": {"enum": ["auto", "fp32", "bf16"], "default": "auto",
                      "description": "auto: bf16 autocast on CUDA, fp32 on CPU"},
        "compile": {**AUTO_BOOL, "default": "auto", "description": "torch.compile the model (auto: on CUDA only)"},
        "channels_last": {**AUTO_BOOL, "default": "auto",
                          "description": "channels-last memory format (auto: on; on CPUs too, where it made the "
                                         "step 1.2-1.4x faster, BENCHMARKS.md)"},
        "prefetch": {"type": "integer", "minimum": 0, "default": 4,
                     "description": "batches prepared ahead in a thread"},
        "log_every": {**POSITIVE, "default": 50, "description": "steps between metrics.jsonl lines and scalars"},
        "tensorboard": {"type": "boolean", "default": True, "description": "write TensorBoard logs under tensorboard/"},
        "progress": {"type": "boolean", "default": True, "description": "show a progress bar"},
    },
}


# every default once, in the schema (what `bfcnn schema` shows); the trainer reads them from here
DEFAULTS = {key: value["default"] for key, value in TRAIN_SCHEMA["properties"].items() if "default" in value}


def parse_duration(value) -> float:
    """Seconds from a number of seconds or a text such as '8m', '2h30m', '90s', '1.5h'."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip().lower()
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", text)
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([hms])|\s", "", text):
        raise BfcnnError(f"train.time_limit: {value!r} is not a duration (e.g. 8m, 2h30m, 90s)")
    return sum(float(number) * {"h": 3600, "m": 60, "s": 1}[unit] for number, unit in parts)

