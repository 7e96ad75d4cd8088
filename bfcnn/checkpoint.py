"""Checkpoints as safetensors, written atomically (a temporary folder, then one rename); nothing is pickled.

A checkpoint folder `checkpoints/step-00001234/` holds model.safetensors (weights; the model spec in the
file's metadata, so the file alone rebuilds the model), optimizer.safetensors (the optimizer's tensors) and
state.json (step, optimizer scalars, anything else), written last: a folder without it is never read.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import BfcnnError

MODEL_SPEC_KEY = "bfcnn.model"
STEP_PREFIX = "step-"


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_model(path, model, spec: dict):
    """Weights plus the spec that rebuilds the model, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(tmp), metadata={MODEL_SPEC_KEY: json.dumps(spec)})
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def optimizer_to_flat(optimizer):
    """Split an optimizer state dict into tensors (for safetensors) and JSON-able scalars."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {"param_groups": state["param_groups"], "state": {}}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars["state"].setdefault(str(index), {})[key] = value
    return tensors, scalars


def optimizer_from_flat(tensors, scalars):
    state = {int(i): dict(v) for i, v in scalars["state"].items()}
    for name, tensor in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = tensor
    return {"state": state, "param_groups": scalars["param_groups"]}


def save_checkpoint(run_dir, step, model, spec, optimizer=None, state=None, keep=3, name=None):
    """Write checkpoints/step-N (or checkpoints/NAME) atomically; keep the newest `keep` step folders."""
    folder = Path(run_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / (name or f"{STEP_PREFIX}{step:08d}")
    tmp = folder / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(tmp / "model.safetensors", model, spec)
    info = {"step": step, **(state or {})}
    if optimizer is not None:
        tensors, scalars = optimizer_to_flat(optimizer)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        info["optimizer"] = scalars
    with open(tmp / "state.json", "w") as f:
        json.dump(info, f)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(tmp)
    if final.exists():  # replacing a named checkpoint (e.g. best): move the old one aside first
        old = folder / f".old-{final.name}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_dir(folder)
    for stale in step_checkpoints(run_dir)[:-keep] if keep else []:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def step_checkpoints(run_dir) -> list[Path]:
    """Complete step checkpoints, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.name.startswith(STEP_PREFIX) and (p / "state.json").is_file())


def latest_checkpoint(run_dir):
    found = step_checkpoints(run_dir)
    return found[-1] if found else None


def load_checkpoint(folder, model, optimizer=None) -> dict:
    """Load weights (and optimizer state) into the given objects; return state.json's content."""
    folder = Path(folder)
    info = json.loads((folder / "state.json").read_text())
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    if optimizer is not None and (folder / "optimizer.safetensors").is_file():
        optimizer.load_state_dict(optimizer_from_flat(load_file(str(folder / "optimizer.safetensors")),
                                                      info["optimizer"]))
    return info


def read_model_spec(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if MODEL_SPEC_KEY not in metadata:
        raise BfcnnError(f"{path}: no bfcnn model spec in the file's metadata")
    return json.loads(metadata[MODEL_SPEC_KEY])


def find_weights(name_or_path) -> Path:
    """A weights file from a file, a run folder, a checkpoint folder, or a shipped model's name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.is_dir():
        for candidate in (path / "model.safetensors", path / "checkpoints" / "best" / "model.safetensors"):
            if candidate.is_file():
                return candidate
        latest = latest_checkpoint(path)
        if latest is not None:
            return latest / "model.safetensors"
        raise BfcnnError(f"no model.safetensors in {path}")
    shipped = Path(__file__).parent / "pretrained" / f"{name_or_path}.safetensors"
    if shipped.is_file():
        return shipped
    raise BfcnnError(f"no model at {name_or_path!r}: give a .safetensors file, a run folder or a shipped model name")


def load_model(name_or_path, device="cpu"):
    """Rebuild a model from its weights file's spec and load the weights; eval mode."""
    from .config import build

    weights = find_weights(name_or_path)
    model = build("model", read_model_spec(weights))
    model.load_state_dict(load_file(str(weights)))
    return model.to(device).eval()
