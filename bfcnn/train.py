"""The training stage: `bfcnn run` with a `train` section, or the seed's
`python -m bfcnn.train --model-directory DIR --pipeline-config FILE`."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, save_model
from .config import build, ref

log = logging.getLogger("bfcnn")

POSITIVE = {"type": "integer", "minimum": 1}
TRAIN_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "epochs": {**POSITIVE, "description": "passes over the training images (used when total_steps < 1)"},
        "total_steps": {"type": "integer", "description": "steps to train; negative or 0: use epochs"},
        "iterations_choice": {"type": "array", "items": POSITIVE, "minItems": 1,
                              "description": "the model is applied k times, k picked from this list"},
        "checkpoints_to_keep": POSITIVE,
        "checkpoint_every": POSITIVE,
        "visualization_number": {"type": "integer", "minimum": 0},
        "visualization_every": POSITIVE,
        "random_batch_iterations": {"type": "integer", "minimum": 0},
        "random_batch_size": {"type": "array", "items": POSITIVE, "minItems": 2, "maxItems": 3},
        "random_batch_min_difference": {"type": "number", "minimum": 0},
        "optimizer": ref("optimizer"),
        "schedule": ref("schedule"),
        "gradient_clipping_by_norm": {"type": "number", "exclusiveMinimum": 0},
        "metrics": {"type": "array", "items": ref("metric")},
        "log_every": POSITIVE,
    },
}


def resolve_device(name="auto"):
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def total_steps(train_cfg, dataset):
    steps = train_cfg.get("total_steps", -1)
    if steps and steps > 0:
        return steps
    per_epoch = max(1, math.ceil(len(dataset) / dataset.batch_size))
    return train_cfg.get("epochs", 1) * per_epoch


def train(config: dict, output_dir, registries=None) -> dict:
    output_dir = Path(output_dir)
    train_cfg = config.get("train", {})
    device = resolve_device(config.get("device", "auto"))
    seed = config.get("seed", 0)
    torch.manual_seed(seed)
    model_spec = config["model"]
    model = build("model", model_spec, registries).to(device)
    noise = build("noise", config.get("noise", {"type": "additive_gaussian", "sigma_range": [0, 55]}), registries)
    dataset = build("dataset", config["dataset"], registries)
    loss_fn = build("loss", config.get("loss", {"type": "mse"}), registries)
    optimizer = build("optimizer", train_cfg.get("optimizer", {"type": "adam"}), registries)(model.parameters())
    schedule = build("schedule", train_cfg.get("schedule", {"type": "constant"}), registries)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    steps = total_steps(train_cfg, dataset)
    start = 0
    latest = latest_checkpoint(output_dir)
    if latest is not None:
        start = load_checkpoint(latest, model, optimizer)["step"]
        log.info("resuming from %s at step %d", latest, start)
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    scheduler.last_epoch = start - 1
    scheduler.step()
    generator = torch.Generator(device=device).manual_seed(seed + start)
    batches = dataset.batches(seed + start)
    keep, every = train_cfg.get("checkpoints_to_keep", 3), train_cfg.get("checkpoint_every", 1000)
    clip = train_cfg.get("gradient_clipping_by_norm")
    log_path = output_dir / "metrics.jsonl"
    output_dir.mkdir(parents=True, exist_ok=True)
    model.train()
    began, loss = time.time(), None
    for step in range(start, steps):
        clean = next(batches).to(device)
        noisy = noise(clean, generator)
        loss = loss_fn(model(noisy), clean)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        scheduler.step()
        done = step + 1
        if done % every == 0 or done == steps:
            save_checkpoint(output_dir, done, model, model_spec, optimizer, keep=keep)
        with open(log_path, "a") as f:
            f.write(json.dumps({"step": done, "loss": float(loss), "lr": optimizer.param_groups[0]["lr"]}) + "\n")
    save_model(output_dir / "model.safetensors", model, model_spec)
    return {"steps": steps, "resumed_from": start, "final_loss": None if loss is None else float(loss),
            "seconds": round(time.time() - began, 3), "dataset": dataset.summary()}


def main(argv=None):
    """The seed's command: python -m bfcnn.train --model-directory DIR --pipeline-config FILE."""
    import argparse

    from .cli import guarded

    parser = argparse.ArgumentParser(prog="python -m bfcnn.train", description="Train a denoiser (the seed's command).")
    parser.add_argument("--model-directory", required=True, help="where checkpoints and logs go")
    parser.add_argument("--pipeline-config", required=True, help="the pipeline config (JSON or YAML)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    def go():
        from .pipeline import run
        run(args.pipeline_config, args.model_directory, args.set, stages=("train",))
    return guarded(go)


if __name__ == "__main__":
    raise SystemExit(main())
