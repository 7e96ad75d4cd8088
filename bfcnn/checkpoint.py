"""Checkpoints as safetensors, written atomically (a temporary folder, then one rename); nothing is pickled.

A checkpoint folder `checkpoints/step-00001234/` holds model.safetensors (weights; the model spec in the
file's metadata, so the file alone rebuilds the model), optionally optimizer.safetensors (the optimizer's
tensors) and state.safetensors (random generator states and other tensors), and state.json (step,
optimizer scalars, the list of files), written last inside the temporary folder. The folder only gets its
final name once everything in it is on disk, so a killed process leaves either a complete checkpoint or a
`.tmp-*` folder that is never read (and is swept away by `recover`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import BfcnnError, output_folder

MODEL_SPEC_KEY = "bfcnn.model"
STEP_PREFIX = "step-"
BEST = "best"


def fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path):
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def write_text_atomic(path, text: str):
    """Replace a text file in one rename, so a reader never sees half of it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_run_record(output_dir, config=None, summary=None):
    """A run folder's record (rank 0 writes it): the resolved config (config.yaml) before the stages run, what
    they returned (summary.json) after."""
    import yaml

    output_dir = output_folder(output_dir)
    if config is not None:
        write_text_atomic(output_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    if summary is not None:
        write_text_atomic(output_dir / "summary.json", json.dumps(summary, indent=2, default=str))


def save_model(path, model, spec: dict):
    """Weights plus the spec that rebuilds the model, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(tmp), metadata={MODEL_SPEC_KEY: json.dumps(spec)})
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)


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


def remove_tree(path: Path):
    """Rename first (atomic), then delete: a folder half deleted is never mistaken for a checkpoint."""
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}")
    try:
        os.replace(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def save_checkpoint(run_dir, step, model, spec, optimizer=None, state=None, keep=3, name=None, tensors=None):
    """Write checkpoints/step-N (or checkpoints/NAME) atomically; keep the newest `keep` step folders.

    `state`: JSON-able extras for state.json; `tensors`: extra tensors (e.g. random generator states) for
    state.safetensors. Returns the checkpoint's folder.
    """
    folder = Path(run_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / (name or f"{STEP_PREFIX}{step:08d}")
    tmp = folder / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    files = ["model.safetensors"]
    save_model(tmp / "model.safetensors", model, spec)
    info = {"step": step, **(state or {})}
    if optimizer is not None:
        flat, scalars = optimizer_to_flat(optimizer)
        save_file(flat, str(tmp / "optimizer.safetensors"))
        fsync_file(tmp / "optimizer.safetensors")
        info["optimizer"] = scalars
        files.append("optimizer.safetensors")
    if tensors:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / "state.safetensors"))
        fsync_file(tmp / "state.safetensors")
        files.append("state.safetensors")
    info["files"] = files
    with open(tmp / "state.json", "w") as f:
        json.dump(info, f)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(tmp)
    if final.exists():  # replacing (best, or a step saved again): move the old one aside, `recover` undoes a crash here
        old = folder / f".old-{final.name}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_dir(folder)
    if keep:
        for stale in step_checkpoints(run_dir)[:-keep]:
            remove_tree(stale)
    return final


def is_complete(folder: Path) -> bool:
    state = folder / "state.json"
    if not state.is_file():
        return False
    try:
        files = json.loads(state.read_text()).get("files", ["model.safetensors"])
    except (OSError, ValueError):
        return False
    return all((folder / name).is_file() for name in files)


def step_checkpoints(run_dir) -> list[Path]:
    """Complete step checkpoints, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith(STEP_PREFIX) and is_complete(p))


def latest_checkpoint(run_dir):
    found = step_checkpoints(run_dir)
    return found[-1] if found else None


def recover(run_dir) -> list[str]:
    """Clean up after a killed writer: put back a checkpoint moved aside (`.old-*`) whose replacement never
    arrived, and delete temporary and half-deleted folders. Returns what was done, for the log."""
    folder = Path(run_dir) / "checkpoints"
    done = []
    if not folder.is_dir():
        return done
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".old-"):
            name = path.name[len(".old-"):].rsplit("-", 1)[0]
            if not (folder / name).exists() and is_complete(path):
                os.replace(path, folder / name)
                done.append(f"restored {name}")
            else:
                shutil.rmtree(path, ignore_errors=True)
                done.append(f"removed {path.name}")
        elif path.name.startswith((".tmp-", ".trash-")):
            shutil.rmtree(path, ignore_errors=True)
            done.append(f"removed {path.name}")
    for path in Path(run_dir).glob(".*.tmp-*"):  # save_model's temporary files at the run folder's top
        path.unlink(missing_ok=True)
        done.append(f"removed {path.name}")
    return done


def fit_problems(weights, model) -> list[str]:
    """What keeps a weights file from fitting `model` (names and shapes, read from the file's header: no tensor
    is loaded), sorted; [] when it fits."""
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        saved = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    wanted = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    problems = [f"{key} missing" for key in wanted.keys() - saved.keys()]
    problems += [f"unexpected {key}" for key in saved.keys() - wanted.keys()]
    problems += [f"{key} is {saved[key]}, the model wants {wanted[key]}"
                 for key in wanted.keys() & saved.keys() if saved[key] != wanted[key]]
    return sorted(problems)


def summarize(problems, shown=3) -> str:
    more = f" and {len(problems) - shown} more" if len(problems) > shown else ""
    return "; ".join(problems[:shown]) + more


def check_fits(folder, model):
    """BfcnnError unless a checkpoint folder's weights fit `model`, names and shapes (read from the file's
    header: no tensor is loaded, so a run folder can be checked before anything else happens)."""
    problems = fit_problems(Path(folder) / "model.safetensors", model)
    if problems:
        raise BfcnnError(f"{folder}: these weights do not fit the configured model ({summarize(problems)}); "
                         "use another output folder or the model the run was started with")


def load_checkpoint(folder, model, optimizer=None) -> dict:
    """Load weights (and optimizer state) into the given objects; return state.json's content, plus
    "tensors": the content of state.safetensors ({} when absent)."""
    folder = Path(folder)
    info = json.loads((folder / "state.json").read_text())
    check_fits(folder, model)
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    if optimizer is not None and (folder / "optimizer.safetensors").is_file():
        optimizer.load_state_dict(optimizer_from_flat(load_file(str(folder / "optimizer.safetensors")),
                                                      info["optimizer"]))
    extra = folder / "state.safetensors"
    info["tensors"] = load_file(str(extra)) if extra.is_file() else {}
    return info


def read_model_spec(path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as error:  # SafetensorError, OSError: not weights at all, or a truncated file
        raise BfcnnError(f"{path}: not a readable .safetensors weights file ({error})") from None
    if MODEL_SPEC_KEY not in metadata:
        raise BfcnnError(f"{path}: no bfcnn model spec in the file's metadata")
    try:
        return json.loads(metadata[MODEL_SPEC_KEY])
    except json.JSONDecodeError as error:
        raise BfcnnError(f"{path}: the model spec in the file's metadata is not valid JSON ({error})") from None


def find_weights(name_or_path) -> Path:
    """A weights file from a file, a run folder, a checkpoint folder, or a shipped model's name.

    A run folder gives its final model.safetensors, else its best checkpoint, else its latest step checkpoint.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.is_dir():
        for candidate in (path / "model.safetensors", path / "checkpoints" / BEST / "model.safetensors"):
            if candidate.is_file():
                return candidate
        latest = latest_checkpoint(path)
        if latest is not None:
            return latest / "model.safetensors"
        raise BfcnnError(f"no model.safetensors in {path}")
    from .registry import default_registries

    shipped = default_registries()["pretrained"]
    if isinstance(name_or_path, str) and name_or_path in shipped:
        weights = Path(shipped.get(name_or_path).factory())
        if not weights.is_file():
            raise BfcnnError(f"the pretrained model {name_or_path!r} is registered but its weights are not installed "
                             f"({weights})")
        return weights
    raise BfcnnError(f"no model at {name_or_path!r}: give a .safetensors file, a run folder or a pretrained model's "
                     f"name (`bfcnn list pretrained`: {', '.join(shipped.names()) or 'none'})")


def load_model(name_or_path, device="cpu"):
    """Rebuild a model from its weights file's spec and load the weights; eval mode."""
    from .registry import build

    weights = find_weights(name_or_path)
    model = build("model", read_model_spec(weights))
    model.load_state_dict(load_file(str(weights)))
    return model.to(device).eval()


def init_weights(model, source) -> Path:
    """Load the weights of `source` (a shipped model's name, a run folder or a .safetensors file) into `model`,
    for a run that starts from them (train.init_from). Layers whose names or shapes do not fit are one BfcnnError
    naming them. Returns the weights file used."""
    weights = find_weights(source)
    try:
        problems = fit_problems(weights, model)
    except Exception as error:  # not a safetensors file, or a truncated one
        raise BfcnnError(f"train.init_from: {weights} is not a readable .safetensors weights file ({error})") from None
    if problems:
        raise BfcnnError(f"train.init_from: the weights in {weights} do not fit the configured model "
                         f"({summarize(problems, 6)})")
    model.load_state_dict(load_file(str(weights)))
    return weights
