"""The training stage: `bfcnn run` with a `train` section, or the seed's
`python -m bfcnn.train --model-directory DIR --pipeline-config FILE`.

One process, or several under torchrun (DistributedDataParallel: NCCL on GPUs, gloo on CPU; data sharded
per rank; only rank 0 writes). Resumable: the data stream is re-seeded at every checkpoint boundary and
the random generators' states are saved with each checkpoint, so a resumed run sees the same batches and
noise as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import os
import queue
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch

from .checkpoint import (BEST, latest_checkpoint, load_checkpoint, recover, save_checkpoint, save_model,
                         write_text_atomic)
from .config import build, ref
from .devices import resolve_device
from .errors import BfcnnError, RunError, output_folder

log = logging.getLogger("bfcnn")

POSITIVE = {"type": "integer", "minimum": 1}
AUTO_BOOL = {"enum": ["auto", True, False]}
TRAIN_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "epochs": {**POSITIVE, "description": "passes over the training images (used when total_steps < 1)"},
        "total_steps": {"type": "integer", "description": "steps to train; negative or 0: use epochs"},
        "iterations_choice": {"type": "array", "items": POSITIVE, "minItems": 1,
                              "description": "the model is applied k times to the same input, k picked from this list"},
        "checkpoints_to_keep": {**POSITIVE, "description": "step checkpoints kept (the best one is kept apart)"},
        "checkpoint_every": {**POSITIVE, "description": "steps between checkpoints (default 1000)"},
        "visualization_number": {"type": "integer", "minimum": 0,
                                 "description": "images in the noisy | denoised | clean grid (0: none)"},
        "visualization_every": {**POSITIVE, "description": "steps between image logs, the grid and the random "
                                                               "batch (default checkpoint_every)"},
        "random_batch_iterations": {"type": "integer", "minimum": 0,
                                    "description": "the denoiser iterated this many times on pure noise (0: off)"},
        "random_batch_size": {"type": "array", "items": POSITIVE, "minItems": 2, "maxItems": 3,
                              "description": "height, width[, channels] of the random batch"},
        "random_batch_min_difference": {"type": "number", "minimum": 0,
                                        "description": "stop iterating when the mean change falls below this"},
        "optimizer": ref("optimizer"),
        "schedule": ref("schedule"),
        "gradient_clipping_by_norm": {"type": "number", "exclusiveMinimum": 0},
        "metrics": {"type": "array", "items": ref("metric"), "minItems": 1,
                    "description": "validation metrics (default psnr); the first one picks the best checkpoint"},
        "validate_every": {**POSITIVE, "description": "steps between validations (default checkpoint_every)"},
        "validation_sigmas": {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 1,
                              "description": "Gaussian noise levels (0-255 scale) of the validation (default 15, 25, 50)"},
        "validation_crop": {"type": "integer", "minimum": 8,
                            "description": "center-crop validation images to at most this size (default: whole)"},
        "max_bad_steps": {**POSITIVE, "description": "non-finite steps in a row before the run stops (default 20)"},
        "precision": {"enum": ["auto", "fp32", "bf16"], "description": "auto: bf16 autocast on CUDA, fp32 on CPU"},
        "compile": {**AUTO_BOOL, "description": "torch.compile the model (auto: on CUDA only)"},
        "channels_last": {**AUTO_BOOL, "description": "channels-last memory format (auto: on; on CPUs too, where "
                                                      "it made the step 1.2-1.4x faster, BENCHMARKS.md)"},
        "prefetch": {"type": "integer", "minimum": 0, "description": "batches prepared ahead in a thread (default 4)"},
        "log_every": {**POSITIVE, "description": "steps between metrics.jsonl lines and scalars (default 50)"},
        "tensorboard": {"type": "boolean", "description": "write TensorBoard logs under tensorboard/ (default true)"},
        "progress": {"type": "boolean", "description": "show a progress bar (default true)"},
    },
}
DEFAULTS = {
    "epochs": 1, "total_steps": -1, "iterations_choice": [1], "checkpoints_to_keep": 3, "checkpoint_every": 1000,
    "visualization_number": 4, "random_batch_iterations": 0, "random_batch_size": [128, 128],
    "random_batch_min_difference": 0.0, "metrics": [{"type": "psnr"}], "validation_sigmas": [15, 25, 50],
    "max_bad_steps": 20, "precision": "auto", "compile": "auto", "channels_last": "auto", "prefetch": 4,
    "log_every": 50, "tensorboard": True, "progress": True,
}
DEFAULT_NOISE = {"type": "additive_gaussian", "sigma_range": [0, 55]}
DEFAULT_LOSS = {"type": "mse"}


def mix(*values) -> int:
    """A stable 63-bit seed from integers (numpy's SeedSequence: well spread, the same in every process)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def data_seed(seed, segment):
    return mix(seed, 1, segment)


def noise_seed(seed, rank):
    return mix(seed, 2, rank)


def choice_seed(seed):
    return mix(seed, 3)


def total_steps(train_cfg, dataset, world_size=1):
    steps = train_cfg.get("total_steps", -1)
    if steps and steps > 0:
        return steps
    per_epoch = max(1, math.ceil(len(dataset) / (dataset.batch_size * world_size)))
    return train_cfg.get("epochs", 1) * per_epoch


def takes_start(dataset):
    """Whether dataset.batches takes `start` (the built-in datasets do; the plugin contract does not ask it)."""
    try:
        parameters = inspect.signature(dataset.batches).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "start" for p in parameters)  # not **kwargs: a plugin might ignore it and restart at 0


def step_batches(dataset, seed, start, every, rank=0, world_size=1):
    """Clean batches for steps start, start+1, ...: the stream is re-seeded at every multiple of `every`
    (the checkpoint interval), so a run resumed from a checkpoint gets the very batches an uninterrupted run
    gets; a resume between boundaries (after Ctrl-C) skips forward within its segment, at no cost where the
    dataset's batches() takes `start` (batch b depends only on seed, rank and b), else by drawing them."""
    step, free_skip = start, takes_start(dataset)
    while True:
        segment = step // every
        skip = step - segment * every
        if free_skip:
            stream = dataset.batches(data_seed(seed, segment), rank, world_size, start=skip)
            skip = 0
        else:
            stream = dataset.batches(data_seed(seed, segment), rank, world_size)
        try:
            for _ in range(skip):
                next(stream)
            while True:
                yield next(stream)
                step += 1
                if step % every == 0:
                    break
        finally:
            close = getattr(stream, "close", None)
            if close:
                close()


def copy_tensors(targets, sources):
    """targets[i].copy_(sources[i]) for all i, fused into one kernel launch where torch has _foreach_copy_."""
    if not targets:
        return
    if hasattr(torch, "_foreach_copy_"):
        torch._foreach_copy_(targets, sources)
    else:
        for target, source in zip(targets, sources):
            target.copy_(source)


class Prefetcher:
    """Pulls batches from an iterator in a background thread (pinned when going to CUDA), `depth` ahead."""

    def __init__(self, iterator, depth, pin=False):
        self.iterator, self.pin = iterator, pin
        self.queue = queue.Queue(maxsize=max(1, depth))
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.work, name="bfcnn-prefetch", daemon=True)
        self.thread.start()

    def work(self):
        try:
            for item in self.iterator:
                if self.pin:
                    item = item.pin_memory()
                while not self.stopped.is_set():
                    try:
                        self.queue.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self.stopped.is_set():
                    return
        except BaseException as error:  # handed to the consumer, raised there
            self.queue.put(("error", error))

    def __iter__(self):
        return self

    def __next__(self):
        kind, item = self.queue.get()
        if kind == "error":
            raise item
        return item

    def close(self):
        self.stopped.set()
        self.thread.join(timeout=5)


class Iterated(torch.nn.Module):
    """The model applied k times to its own output (the seed's iterations_choice), as one module so that
    DistributedDataParallel and torch.compile see a single forward."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, k: int = 1):
        for _ in range(k):
            x = self.net(x)
        return x


def center_crop(image, size):
    if not size:
        return image
    h, w = image.shape[-2:]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return image[..., top:top + size, left:left + size]


def image_grid(noisy, denoised, clean):
    """One C x H x W image: a row per image, noisy | denoised | clean side by side, clamped to [0, 1]."""
    rows = [torch.cat([noisy[i], denoised[i], clean[i]], dim=-1) for i in range(noisy.shape[0])]
    grid = torch.cat(rows, dim=-2).float().clamp(0, 1)
    return grid.expand(3, -1, -1) if grid.shape[0] == 1 else grid[:3]


class Trainer:
    """Builds everything from a validated config (data last, so bad values fail before any image is read)
    and trains. `rank`/`world_size` default to torchrun's environment; `distributed=False` builds one rank's
    view without a process group (used by tests to rebuild what each rank sees)."""

    def __init__(self, config: dict, output_dir, registries=None, rank=None, world_size=None, distributed=None):
        self.config, self.output_dir, self.registries = config, Path(output_dir), registries
        env_world = int(os.environ.get("WORLD_SIZE", "1"))
        self.world_size = env_world if world_size is None else world_size
        self.rank = int(os.environ.get("RANK", "0")) if rank is None else rank
        self.local_rank = int(os.environ.get("LOCAL_RANK", str(self.rank)))
        self.distributed = (self.world_size > 1) if distributed is None else distributed
        self.cfg = {**DEFAULTS, **config.get("train", {})}
        cfg = self.cfg
        self.seed = int(config.get("seed", 0))
        self.device = resolve_device(config.get("device", "auto"), self.local_rank)
        self.cuda = self.device.type == "cuda"

        def auto(key):
            return self.cuda if cfg[key] == "auto" else bool(cfg[key])
        self.amp = cfg["precision"] == "bf16" or (cfg["precision"] == "auto" and self.cuda)
        self.compile, self.channels_last = auto("compile"), auto("channels_last") or cfg["channels_last"] == "auto"

        torch.manual_seed(mix(self.seed, 0))
        self.noise_gen = torch.Generator(device=self.device).manual_seed(noise_seed(self.seed, self.rank))
        self.choice_gen = torch.Generator().manual_seed(choice_seed(self.seed))  # the same on every rank
        self.model_spec = config["model"]
        self.model = build("model", self.model_spec, registries)
        self.net = Iterated(self.model)  # wrapped by setup() in DDP and torch.compile as configured
        self.noise = build("noise", config.get("noise", DEFAULT_NOISE), registries)
        self.loss_fn = build("loss", config.get("loss", DEFAULT_LOSS), registries)
        self.metrics = [(spec["type"], build("metric", spec, registries)) for spec in cfg["metrics"]]
        self.optimizer = build("optimizer", cfg.get("optimizer", {"type": "adam"}), registries)(self.model.parameters())
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        schedule = cfg.get("schedule", {"type": "constant"})
        self.every = cfg["checkpoint_every"]
        self.validate_every = cfg.get("validate_every", self.every)
        self.visualize_every = cfg.get("visualization_every", self.every)
        self.regularization = float(getattr(self.loss_fn, "regularization", 0) or 0)
        if self.regularization > 0 and not hasattr(self.model, "regularization_loss"):
            log.info("loss.regularization is set but model %r has no regularization_loss(): ignored",
                     self.model_spec.get("type"))
            self.regularization = 0.0
        self.model_channels = self.model_spec.get("channels")
        size = cfg["random_batch_size"]
        if len(size) == 3 and self.model_channels and size[2] != self.model_channels:
            raise BfcnnError(f"train.random_batch_size: {size[2]} channel(s) but model.channels is {self.model_channels}")
        build("schedule", self.with_total_steps(schedule, max(1, cfg["total_steps"])), registries)  # checked now
        # everything above is cheap and reads no data; the dataset comes last
        self.dataset = build("dataset", config["dataset"], registries)
        if self.model_channels and self.dataset.channels != self.model_channels:
            raise BfcnnError(f"model.channels: the model takes {self.model_channels} channel(s) but the dataset "
                             f"gives {self.dataset.channels}")
        self.steps = total_steps(cfg, self.dataset, self.world_size)
        self.schedule_spec = self.with_total_steps(schedule, self.steps)
        self.schedule = build("schedule", self.schedule_spec, registries)

    def with_total_steps(self, spec, steps):
        """A schedule that takes `total_steps` (e.g. cosine) and was not given one anneals over the whole run."""
        from .registry import default_registries
        spec = dict(spec)
        properties = (self.registries or default_registries())["schedule"].get(spec["type"]).schema.get("properties", {})
        if "total_steps" in properties and "total_steps" not in spec:
            spec["total_steps"] = steps
        return spec

    # ---- setup -------------------------------------------------------------------------------------
    def setup(self):
        self.owns_group = False
        if self.distributed and not torch.distributed.is_initialized():
            if self.cuda:
                torch.cuda.set_device(self.device)
            torch.distributed.init_process_group("nccl" if self.cuda else "gloo")
            self.owns_group = True
        self.writes = self.rank == 0
        if self.writes:
            output_folder(self.output_dir)
            for line in recover(self.output_dir):
                log.info("checkpoints: %s (left by an interrupted run)", line)
        self.barrier()
        if self.cuda:  # fixed crop sizes: let cuDNN pick its fastest kernels; TF32 where fp32 remains
            torch.backends.cudnn.benchmark = True
            torch.set_float32_matmul_precision("high")
        self.model.to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.start, self.best, self.bad_total = 0, None, 0
        latest = latest_checkpoint(self.output_dir)
        if latest is not None:
            self.resume(latest)
        if self.start > self.steps:
            log.warning("the run folder is at step %d, past train.total_steps (%d): nothing to train",
                        self.start, self.steps)
        elif self.start == self.steps:
            log.info("the run folder already holds all %d steps: nothing to train", self.steps)
        self.set_lr(self.start)
        net = self.net
        if self.distributed:
            ids = [self.device.index] if self.cuda else None
            net = torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)
        self.net = torch.compile(net) if self.compile else net
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # the forward updates batch-norm statistics before the step is known to be bad: the buffers are
        # copied aside before each forward (one fused device copy, no host sync) and put back on a skip
        self.buffers = list(self.model.buffers())
        self.saved_buffers = [b.clone() for b in self.buffers]

    def resume(self, folder):
        kind = self.cfg.get("optimizer", {"type": "adam"})["type"]
        saved = json.loads((Path(folder) / "state.json").read_text()).get("optimizer_type", kind)
        if saved != kind:
            log.warning("the checkpoint's optimizer is %s, the config's %s: the optimizer starts afresh", saved, kind)
        # the model is on the training device already: load_state_dict moves the optimizer state beside it
        info = load_checkpoint(folder, self.model, self.optimizer if saved == kind else None)
        self.start, self.best, self.bad_total = info["step"], info.get("best"), info.get("bad_steps_total", 0)
        tensors = info["tensors"]
        if info.get("world_size", 1) == self.world_size and f"rng.noise.{self.rank}" in tensors:
            self.noise_gen.set_state(tensors[f"rng.noise.{self.rank}"].to(torch.uint8).cpu())
        else:
            log.warning("resuming with another number of processes: noise generators re-seeded")
            self.noise_gen.manual_seed(mix(noise_seed(self.seed, self.rank), self.start))
        if "rng.choice" in tensors:
            self.choice_gen.set_state(tensors["rng.choice"])
        if self.writes:
            trim_jsonl(self.output_dir / "metrics.jsonl", self.start)
        log.info("resuming from %s at step %d", folder, self.start)

    def barrier(self):
        if self.distributed:
            torch.distributed.barrier(**({"device_ids": [self.device.index]} if self.cuda else {}))

    def set_lr(self, step):
        factor = float(self.schedule(step))
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    # ---- one step ------------------------------------------------------------------------------------
    def autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def prepare(self, clean):
        clean = clean.to(self.device, non_blocking=True)
        if self.channels_last:
            clean = clean.contiguous(memory_format=torch.channels_last)
        return self.noise(clean, self.noise_gen), clean

    def pick_iterations(self):
        choices = self.cfg["iterations_choice"]
        if len(choices) == 1:
            return choices[0]
        return choices[int(torch.randint(len(choices), (1,), generator=self.choice_gen))]

    def forward_loss(self, noisy, clean, k):
        with self.autocast():
            denoised = self.net(noisy, k)
        loss = self.loss_fn(denoised.float(), clean)
        if self.regularization > 0:
            loss = loss + self.regularization * self.model.regularization_loss()
        return loss, denoised

    def step(self, clean, stop_requested=False):
        """One optimization step; returns (loss, bad, stop, denoised, noisy, clean), agreed on by all ranks."""
        noisy, clean = self.prepare(clean)
        copy_tensors(self.saved_buffers, self.buffers)
        loss, denoised = self.forward_loss(noisy, clean, self.pick_iterations())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.cfg.get("gradient_clipping_by_norm")
        if clip:
            norm = torch.nn.utils.clip_grad_norm_(self.params, clip)
        elif hasattr(torch.nn.utils, "get_total_norm"):  # the norm only, to catch non-finite gradients
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        else:  # torch < 2.6
            norm = torch.nn.utils.clip_grad_norm_(self.params, float("inf"))
        finite = torch.isfinite(loss.detach()) & torch.isfinite(norm)
        flags = torch.stack([loss.detach().float(), (~finite).float(),
                             torch.full((), float(stop_requested), device=loss.device)])  # no host copy
        if self.distributed:  # every rank skips, stops and logs alike
            torch.distributed.all_reduce(flags)
        value, bad, stop = flags.tolist()  # the one host sync per step
        if bad:  # the step never happened: no weight update, and the running statistics as they were
            copy_tensors(self.buffers, self.saved_buffers)
        else:
            self.optimizer.step()
        return value / self.world_size, bool(bad), bool(stop), denoised, noisy, clean

    # ---- the loop --------------------------------------------------------------------------------------
    def run(self) -> dict:
        self.setup()
        try:
            return self.loop()
        finally:
            if self.owns_group and torch.distributed.is_initialized():
                # DDP's reducer holds the process group: dropped after the group, it would run gloo's destructor
                # with the GIL held, which joins a worker thread that may need the GIL (a hang at exit, torch 2.13)
                self.net = Iterated(self.model)
                torch.distributed.destroy_process_group()

    def loop(self) -> dict:
        cfg, steps = self.cfg, self.steps
        if self.writes and self.start == 0:
            (self.output_dir / "metrics.jsonl").unlink(missing_ok=True)
        writer = self.open_writer()
        bar = self.open_bar()
        interrupted = InterruptFlag()
        stream = step_batches(self.dataset, self.seed, self.start, self.every, self.rank, self.world_size)
        batches = Prefetcher(stream, cfg["prefetch"], pin=self.cuda) if cfg["prefetch"] else stream
        patches = self.dataset.batch_size * self.world_size
        began, window_start, window_steps, bad_run, losses = time.time(), time.time(), 0, 0, []
        done, last_loss, stopped = self.start, None, False
        self.model.train()
        try:
            with interrupted:
                for step in range(self.start, steps):
                    self.set_lr(step)
                    value, bad, stop, denoised, noisy, clean = self.step(next(batches), interrupted.is_set)
                    done = step + 1
                    if bad:
                        bad_run += 1
                        self.bad_total += 1
                        log.warning("step %d: non-finite loss or gradient, step skipped (%d in a row)", done, bad_run)
                        if bad_run >= cfg["max_bad_steps"]:
                            self.log_jsonl({"step": done, "bad_steps_total": self.bad_total, "stopped": "bad steps"})
                            last = latest_checkpoint(self.output_dir)
                            raise RunError(
                                f"{bad_run} steps in a row had a non-finite loss or gradient (up to step {done}); "
                                f"training stopped. Last good checkpoint: {last or 'none'}. Lower the learning "
                                "rate, set train.gradient_clipping_by_norm, or check the data and noise.")
                    else:
                        bad_run = 0
                        last_loss = value
                        losses.append(value)
                    window_steps += 1
                    bar.update(1)
                    if done % cfg["log_every"] == 0 or done == steps or stop:
                        rate = patches * window_steps / max(1e-9, time.time() - window_start)
                        self.log_scalars(writer, bar, done, losses, rate)
                        window_start, window_steps, losses = time.time(), 0, []
                    if self.writes and done % self.visualize_every == 0:
                        self.visualize(writer, done, noisy, denoised, clean)
                    if stop:
                        stopped = True
                        break
                    if done % self.validate_every == 0 or done == steps:
                        self.validate(writer, done)
                    if done % self.every == 0 or done == steps:
                        self.checkpoint(done)
            if stopped:
                self.checkpoint(done)
                log.warning("interrupted at step %d: checkpoint saved in %s; run the same command again to resume",
                            done, self.output_dir / "checkpoints")
                raise KeyboardInterrupt
        finally:
            bar.close()
            if hasattr(batches, "close"):
                batches.close()
            if writer is not None:
                writer.close()
        spread = self.replica_spread()
        if self.writes:
            save_model(self.output_dir / "model.safetensors", self.model, self.model_spec)
        self.barrier()
        summary = {"steps": steps, "resumed_from": self.start, "final_loss": last_loss, "world_size": self.world_size,
                   "bad_steps": self.bad_total, "best": self.best, "seconds": round(time.time() - began, 3),
                   "device": str(self.device), "dataset": self.dataset.summary()}
        if spread is not None:
            summary["replica_spread"] = spread
        return summary

    @torch.no_grad()
    def replica_spread(self):
        """Under DDP: the largest difference of any weight between ranks (0.0 when they are in sync)."""
        if not self.distributed:
            return None
        flat = torch.cat([p.detach().float().reshape(-1) for p in self.model.parameters()])
        high, low = flat.clone(), flat.clone()
        torch.distributed.all_reduce(high, op=torch.distributed.ReduceOp.MAX)
        torch.distributed.all_reduce(low, op=torch.distributed.ReduceOp.MIN)
        spread = float((high - low).max())
        if spread > 1e-4:
            log.warning("the ranks' weights differ by up to %g at the end of training", spread)
        return spread

    # ---- checkpoints, validation, logs ---------------------------------------------------------------
    def rng_tensors(self):
        noise_state = self.noise_gen.get_state()
        states = [noise_state]
        if self.distributed:
            mine = noise_state.to(self.device)
            states = [torch.empty_like(mine) for _ in range(self.world_size)]
            torch.distributed.all_gather(states, mine)
        tensors = {f"rng.noise.{r}": s.cpu() for r, s in enumerate(states)}
        tensors["rng.choice"] = self.choice_gen.get_state()
        return tensors

    def checkpoint(self, step):
        tensors = self.rng_tensors()  # a collective: every rank takes part
        if not self.writes:
            return
        if not all(torch.isfinite(t).all() for t in self.model.state_dict().values() if t.is_floating_point()):
            log.warning("step %d: weights or batch-norm statistics are not finite, checkpoint not written", step)
            return
        save_checkpoint(self.output_dir, step, self.model, self.model_spec, self.optimizer,
                        state={"best": self.best, "bad_steps_total": self.bad_total, "world_size": self.world_size,
                               "optimizer_type": self.cfg.get("optimizer", {"type": "adam"})["type"]},
                        keep=self.cfg["checkpoints_to_keep"], tensors=tensors)

    @torch.no_grad()
    def validate(self, writer, step):
        if not self.writes:
            return None
        if not hasattr(self, "validation_set"):
            self.validation_set = self.dataset.validation_images()
        images = self.validation_set
        if not images:
            return None
        self.model.eval()
        results = {}
        try:
            sigmas, crop = self.cfg["validation_sigmas"], self.cfg.get("validation_crop")
            sums = {(name, sigma): 0.0 for sigma in sigmas for name, _ in self.metrics}
            for index, image in enumerate(images):  # one image on the device at a time, uploaded once
                clean = center_crop(image, crop).to(self.device)
                for sigma in sigmas:
                    generator = torch.Generator(device=self.device).manual_seed(mix(self.seed, 4, index, int(sigma * 1000)))
                    noisy = clean + (sigma / 255.0) * torch.randn(clean.shape, generator=generator, device=self.device)
                    with self.autocast():
                        denoised = self.model(noisy).float()
                    for name, metric in self.metrics:
                        sums[name, sigma] += float(metric(denoised, clean).mean())
            for sigma in sigmas:
                for name, _ in self.metrics:
                    results[f"{name}_sigma{sigma:g}"] = sums[name, sigma] / len(images)
        finally:
            self.model.train()
        first = self.metrics[0][0]
        score = float(np.mean([v for k, v in results.items() if k.startswith(f"{first}_sigma")]))
        improved = self.best is None or score > self.best["value"]
        if improved and math.isfinite(score):
            self.best = {"step": step, "metric": first, "value": score}
            save_checkpoint(self.output_dir, step, self.model, self.model_spec, name=BEST,
                            state={"validation": results, "metric": first, "value": score})
        self.log_jsonl({"step": step, "validation": results, "best": self.best})
        if writer is not None:
            for key, value in results.items():
                writer.add_scalar(f"validation/{key}", value, step)
        return results

    def open_writer(self):
        if not (self.writes and self.cfg["tensorboard"]):
            return None
        from torch.utils.tensorboard import SummaryWriter
        return SummaryWriter(str(self.output_dir / "tensorboard"), purge_step=self.start or None)

    def open_bar(self):
        from tqdm import tqdm
        return tqdm(total=self.steps, initial=min(self.start, self.steps), unit="step", dynamic_ncols=True, mininterval=0.5,
                    disable=not (self.writes and self.cfg["progress"]) or self.start >= self.steps, desc="train")

    def log_jsonl(self, record):
        if self.writes:
            with open(self.output_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def log_scalars(self, writer, bar, step, losses, rate):
        lr = self.optimizer.param_groups[0]["lr"]
        loss = float(np.mean(losses)) if losses else float("nan")
        bar.set_postfix(loss=f"{loss:.4g}", lr=f"{lr:.3g}", patches_s=f"{rate:.1f}", refresh=False)
        self.log_jsonl({"step": step, "loss": loss if losses else None, "lr": lr, "patches_per_s": rate,
                        "bad_steps_total": self.bad_total})
        if writer is not None:
            if losses:
                writer.add_scalar("train/loss", loss, step)
            writer.add_scalar("train/lr", lr, step)
            writer.add_scalar("train/patches_per_s", rate, step)
            writer.add_scalar("train/bad_steps_total", self.bad_total, step)

    @torch.no_grad()
    def visualize(self, writer, step, noisy, denoised, clean):
        if writer is None:
            return
        n = min(self.cfg["visualization_number"], noisy.shape[0])
        if n > 0:
            writer.add_image("train/noisy_denoised_clean", image_grid(noisy[:n], denoised[:n].detach(), clean[:n]),
                             step)
        if self.cfg["random_batch_iterations"] > 0:  # logged on the same schedule, with or without the grid
            writer.add_image("train/random_batch", self.random_batch(clean.shape[1]), step)

    @torch.no_grad()
    def random_batch(self, channels):
        """The seed's random batch: the denoiser iterated on uniform noise, showing what it has learned."""
        h, w = self.cfg["random_batch_size"][:2]
        generator = torch.Generator(device=self.device).manual_seed(mix(self.seed, 5))
        x = torch.rand((1, channels, h, w), generator=generator, device=self.device)
        self.model.eval()
        try:
            for _ in range(self.cfg["random_batch_iterations"]):
                with self.autocast():
                    y = self.model(x).float()
                change = float((y - x).abs().mean())
                x = y
                if change < self.cfg["random_batch_min_difference"]:
                    break
        finally:
            self.model.train()
        return x[0].clamp(0, 1).expand(3, -1, -1) if channels == 1 else x[0, :3].clamp(0, 1)


class InterruptFlag:
    """SIGINT/SIGTERM set a flag (the loop saves a checkpoint and stops); a second SIGINT interrupts at once."""

    def __init__(self):
        self.is_set, self.previous = False, {}

    def handle(self, signum, frame):
        if self.is_set and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.is_set = True
        log.warning("stopping after this step (signal %d): a checkpoint is being saved", signum)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


def trim_jsonl(path: Path, step):
    """Keep the complete lines of metrics.jsonl up to `step` (a resumed run rewrites what came after)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("step", 0) <= step:
            kept.append(line)
    write_text_atomic(path, "".join(line + "\n" for line in kept))


def train(config: dict, output_dir, registries=None) -> dict:
    """Train from a validated config into output_dir (resuming from its latest checkpoint); return a summary."""
    return Trainer(config, output_dir, registries).run()


def main(argv=None):
    """The seed's command: python -m bfcnn.train --model-directory DIR --pipeline-config FILE."""
    import argparse

    from .cli import guarded

    parser = argparse.ArgumentParser(prog="python -m bfcnn.train", description="Train a denoiser (the seed's command).")
    parser.add_argument("--model-directory", required=True, help="where checkpoints and logs go")
    parser.add_argument("--pipeline-config", required=True, help="the pipeline config (JSON or YAML)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")

    def go():
        from .pipeline import run
        run(args.pipeline_config, args.model_directory, args.set, stages=("train",))
    return guarded(go)


if __name__ == "__main__":
    raise SystemExit(main())
