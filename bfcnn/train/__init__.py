"""The training stage: `bfcnn run` with a `train` section, or the seed's
`python -m bfcnn.train --model-directory DIR --pipeline-config FILE`.

One process, or several under torchrun (DistributedDataParallel: NCCL on GPUs, gloo on CPU; data sharded
per rank; only rank 0 writes). Resumable: the data stream is re-seeded at every checkpoint boundary and
the random generators' states are saved with each checkpoint, so a resumed run sees the same batches and
noise as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import (BEST, latest_checkpoint, load_checkpoint, recover, save_checkpoint, save_model,
                          save_run_record)
from ..devices import resolve_device
from ..errors import BfcnnError, RunError, output_folder
from ..registry import build
from .helpers import InterruptFlag, Iterated, center_crop, image_grid, trim_jsonl
from .schema import (AUTO_BOOL, DEFAULTS, POSITIVE, TIME_PATTERN, TIME_SPAN_STEPS,
                     TRAIN_SCHEMA, UNLIMITED, parse_duration)
from .stream import (Prefetcher, choice_seed, copy_tensors, data_seed, mix, noise_seed, step_batches, takes_start,
                     total_steps)

__all__ = ["AUTO_BOOL", "DEFAULTS", "InterruptFlag", "Iterated", "POSITIVE",
           "Prefetcher", "TIME_PATTERN", "TIME_SPAN_STEPS", "TRAIN_SCHEMA", "Trainer", "UNLIMITED", "center_crop",
           "choice_seed", "copy_tensors", "data_seed", "image_grid", "main", "mix", "noise_seed", "parse_duration",
           "prepare", "step_batches", "takes_start", "total_steps", "train", "trim_jsonl"]

log = logging.getLogger("bfcnn")


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
        self.cfg = {**copy.deepcopy(DEFAULTS), **config.get("train", {})}
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
        self.init_from = None
        if cfg.get("init_from"):  # checked and loaded before any data is read; a resumed run's checkpoint wins
            from ..checkpoint import init_weights
            self.init_from = str(init_weights(self.model, cfg["init_from"]))
            log.info("starting from the weights in %s (fresh optimizer)", self.init_from)
        self.time_limit = parse_duration(cfg["time_limit"]) if cfg.get("time_limit") is not None else None
        if self.time_limit is not None and self.time_limit <= 0:
            raise BfcnnError(f"train.time_limit: {cfg['time_limit']!r} is not a positive duration")
        over = cfg["schedule_over"]
        if over == "time" and self.time_limit is None:
            raise BfcnnError("train.schedule_over: 'time' needs train.time_limit")
        self.over_time = over == "time" or (over == "auto" and self.time_limit is not None)
        self.elapsed = 0.0  # seconds of training in this run folder, resumes included
        self.net = Iterated(self.model)  # wrapped by setup() in DDP and torch.compile as configured
        missing = [section for section in ("noise", "loss") if section not in config]
        if missing:  # bfcnn.load_config fills them from the train stage's defaults
            raise BfcnnError(f"the config has no {' or '.join(missing)} section: load it with bfcnn.load_config")
        self.noise = build("noise", config["noise"], registries)
        self.loss_fn = build("loss", config["loss"], registries)
        self.metrics = [(spec["type"], build("metric", spec, registries)) for spec in cfg["metrics"]]
        self.optimizer = build("optimizer", cfg["optimizer"], registries)(self.model.parameters())
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        schedule = cfg["schedule"]
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
        self.steps = total_steps(cfg, self.dataset, self.world_size, config.get("train", {}))
        if self.over_time:  # the schedule's steps are read as fractions of the time limit
            span = schedule.get("total_steps") or (cfg["total_steps"] if cfg["total_steps"] > 0 else TIME_SPAN_STEPS)
            self.span = int(span)
            self.schedule_spec = self.with_total_steps(schedule, self.span)
        else:
            self.schedule_spec = self.with_total_steps(schedule, self.steps)
        self.schedule = build("schedule", self.schedule_spec, registries)

    def with_total_steps(self, spec, steps):
        """A schedule that takes `total_steps` (e.g. cosine) and was not given one anneals over the whole run."""
        from ..registry import default_registries
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
        elif self.time_up():
            log.info("the run folder has used its time limit (%.0f s): nothing to train; raise train.time_limit "
                     "to train on", self.time_limit)
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
        kind = self.cfg["optimizer"]["type"]
        saved = json.loads((Path(folder) / "state.json").read_text()).get("optimizer_type", kind)
        if saved != kind:
            log.warning("the checkpoint's optimizer is %s, the config's %s: the optimizer starts afresh", saved, kind)
        # the model is on the training device already: load_state_dict moves the optimizer state beside it
        info = load_checkpoint(folder, self.model, self.optimizer if saved == kind else None)
        self.start, self.best, self.bad_total = info["step"], info.get("best"), info.get("bad_steps_total", 0)
        self.elapsed = float(info.get("elapsed_s", 0.0))
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

    def schedule_step(self, step):
        """The schedule's step: the training step, or where the elapsed time stands in the time limit."""
        if not self.over_time:
            return step
        return min(self.span, int(self.span * self.elapsed / self.time_limit))

    def time_up(self):
        return self.time_limit is not None and self.elapsed >= self.time_limit

    def set_lr(self, step):
        factor = float(self.schedule(self.schedule_step(step)))
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

    def step(self, clean, stop_requested=False, time_up=False):
        """One optimization step; returns (loss, bad, stop, time_up, denoised, noisy, clean), agreed on by all
        ranks (a stop or the time limit on any rank ends every rank after this step)."""
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
                             torch.full((), float(stop_requested), device=loss.device),
                             torch.full((), float(time_up), device=loss.device)])  # no host copy
        if self.distributed:  # every rank skips, stops and logs alike
            torch.distributed.all_reduce(flags)
        value, bad, stop, out_of_time = flags.tolist()  # the one host sync per step
        if bad:  # the step never happened: no weight update, and the running statistics as they were
            copy_tensors(self.buffers, self.saved_buffers)
        else:
            self.optimizer.step()
        return value / self.world_size, bool(bad), bool(stop), bool(out_of_time), denoised, noisy, clean

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
        done, last_loss, stopped, out_of_time = self.start, None, False, self.time_up()
        self.model.train()
        try:
            with interrupted:
                for step in range(self.start, steps if not out_of_time else self.start):
                    self.set_lr(step)
                    tick = time.time()
                    value, bad, stop, out_of_time, denoised, noisy, clean = self.step(
                        next(batches), interrupted.is_set, self.time_up())
                    self.elapsed += time.time() - tick
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
                    end = done == steps or out_of_time
                    if done % cfg["log_every"] == 0 or end or stop:
                        rate = patches * window_steps / max(1e-9, time.time() - window_start)
                        self.log_scalars(writer, bar, done, losses, rate)
                        window_start, window_steps, losses = time.time(), 0, []
                    if self.writes and done % self.visualize_every == 0:
                        self.visualize(writer, done, noisy, denoised, clean)
                    if stop:
                        stopped = True
                        break
                    if done % self.validate_every == 0 or end:
                        self.validate(writer, done)
                    if done % self.every == 0 or end:
                        self.checkpoint(done)
                    if out_of_time:
                        log.info("time limit (%s) reached at step %d: checkpoint and final weights saved",
                                 cfg["time_limit"], done)
                        break
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
        summary = {"steps": done if out_of_time or steps == UNLIMITED else steps, "resumed_from": self.start, "final_loss": last_loss, "world_size": self.world_size,
                   "bad_steps": self.bad_total, "best": self.best, "seconds": round(time.time() - began, 3),
                   "device": str(self.device), "dataset": self.dataset.summary(),
                   "training_seconds": round(self.elapsed, 1)}
        if self.time_limit is not None:
            summary["stopped_by"] = "time limit" if out_of_time else "steps"
        if self.init_from:
            summary["init_from"] = self.init_from
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
                               "optimizer_type": self.cfg["optimizer"]["type"],
                               "elapsed_s": round(self.elapsed, 3)},
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
        return tqdm(total=None if self.steps == UNLIMITED else self.steps, initial=min(self.start, self.steps),
                    unit="step", dynamic_ncols=True, mininterval=0.5,
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


def prepare(config: dict, output_dir):
    """Before any stage runs: the device exists on this machine, and a run folder that holds a run of another
    model is refused before its config.yaml is replaced."""
    from ..checkpoint import check_fits

    resolve_device(config.get("device", "auto"), int(os.environ.get("LOCAL_RANK", "0")))
    latest = latest_checkpoint(Path(output_dir))
    if latest is not None:
        check_fits(latest, build("model", config["model"]))


def train(config: dict, output_dir, registries=None) -> dict:
    """Train from a validated config into output_dir (resuming from its latest checkpoint); return a summary."""
    return Trainer(config, output_dir, registries).run()


def main(argv=None):
    """The seed's command: python -m bfcnn.train --model-directory DIR --pipeline-config FILE."""
    import argparse

    from ..config import load_config
    from ..exits import guarded

    parser = argparse.ArgumentParser(prog="python -m bfcnn.train", description="Train a denoiser (the seed's command).")
    parser.add_argument("--model-directory", required=True, help="where checkpoints and logs go")
    parser.add_argument("--pipeline-config", required=True, help="the pipeline config (JSON or YAML)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")

    def go():  # the pipeline with its train stage alone
        config = load_config(args.pipeline_config, args.set)
        prepare(config, args.model_directory)
        writer = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 writes
        if writer:
            save_run_record(args.model_directory, config=config)
        summary = {"train": train(config, args.model_directory)}
        if writer:
            save_run_record(args.model_directory, summary=summary)
    return guarded(go)

