"""Training throughput: the whole pipeline (loader, noise, step, logging, checkpoints) against the bare model
step on ready batches, in the same process, on the same device. Not a test; prints a Markdown table row.

    python benchmarks/bench_train.py                       # CPU-sized default (dev-2core)
    python benchmarks/bench_train.py --depth 20 --filters 64 --crop 128 --batch 32 --steps 200   # GPU-sized

On CUDA the trainer's defaults apply (bf16 autocast, channels_last, torch.compile); the bare loop gets the
same three, so the ratio measures the pipeline's overhead only.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import bfcnn  # noqa: E402
from bfcnn.train import Trainer  # noqa: E402


def config(args, steps):
    return bfcnn.load_config({
        "seed": 0, "device": args.device,
        "model": {"type": "dncnn", "channels": 3, "depth": args.depth, "filters": args.filters},
        "noise": {"type": "additive_gaussian", "sigma_range": [0, 55]},
        "dataset": {"type": "sample_images", "batch_size": args.batch, "input_shape": [args.crop, args.crop, 3]},
        "loss": {"type": "mse"},
        "train": {"total_steps": steps, "checkpoint_every": max(1, steps // 2), "validate_every": 10**9, "validation_crop": 64,
                  "log_every": 10, "visualization_every": max(1, steps // 2), "visualization_number": 2,
                  "tensorboard": True, "progress": False, "optimizer": {"type": "adam", "learning_rate": 1e-3}},
    })


class Bare:
    """The model step alone (forward, MSE, backward, Adam) on ready batches: `pool` distinct batches of the
    run's own crops, noise applied in advance, already on the device; its own model, same settings."""

    def __init__(self, args, pool):
        self.tmp = tempfile.TemporaryDirectory()
        trainer = Trainer(config(args, 1), self.tmp.name)
        trainer.setup()
        stream = trainer.dataset.batches(1)
        self.ready = [trainer.prepare(next(stream)) for _ in range(pool)]  # (noisy, clean) pairs
        self.trainer, self.done = trainer, 0

    def steps(self, n, pool=None):
        """Seconds for n steps cycling through the first `pool` ready batches (all by default)."""
        trainer, ready = self.trainer, self.ready[:pool or len(self.ready)]
        sync(trainer.device)
        began = time.perf_counter()
        for _ in range(n):
            noisy, clean = ready[self.done % len(ready)]
            self.done += 1
            with trainer.autocast():
                out = trainer.net(noisy, 1)
            loss = torch.mean((out.float() - clean) ** 2)
            trainer.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            trainer.optimizer.step()
        sync(trainer.device)
        return time.perf_counter() - began


def interleaved(args):
    """One pipeline run (`Trainer.run`: loader thread, noise, step, checks, logging, TensorBoard, image grids,
    checkpoints, the final validation and model file) with chunks of bare steps slipped in between its steps:
    after every `chunk` pipeline steps, `chunk` bare steps on ready batches and `chunk` on one fixed batch,
    timed apart and taken out of the pipeline's time. All three see the same machine at the same moments, so
    a neighbour's load or a clock change hurts them alike. Building the model and loading the images come
    before the timed part (`setup_s`): a one-time cost, not a per-step one."""
    bare = Bare(args, args.pool)
    bare.steps(args.warmup)
    tmp = tempfile.mkdtemp()
    try:
        began = time.perf_counter()
        trainer = Trainer(config(args, args.warmup + args.steps), Path(tmp) / "run")
        setup = time.perf_counter() - began
        step, calls = trainer.step, [0]
        spent = {"bare": 0.0, "bare_fixed": 0.0, "aside": 0.0, "mark": None}

        def with_bare_chunks(*a, **k):
            result = step(*a, **k)
            calls[0] += 1
            if calls[0] == args.warmup:  # compilation and caches are behind us: start the clock
                sync(trainer.device)
                spent["mark"] = time.perf_counter()
            elif calls[0] > args.warmup and (calls[0] - args.warmup) % args.chunk == 0:
                sync(trainer.device)
                aside = time.perf_counter()
                spent["bare"] += bare.steps(args.chunk)
                spent["bare_fixed"] += bare.steps(args.chunk, pool=1)
                spent["aside"] += time.perf_counter() - aside
            return result
        trainer.step = with_bare_chunks
        trainer.run()
        sync(trainer.device)
        pipeline_s = time.perf_counter() - spent["mark"] - spent["aside"]
        chunks = args.steps // args.chunk
        bare_steps = chunks * args.chunk
        return {"pipeline": args.batch * args.steps / pipeline_s,
                "bare": args.batch * bare_steps / spent["bare"],
                "bare_fixed": args.batch * bare_steps / spent["bare_fixed"], "setup_s": setup}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        bare.tmp.cleanup()


def profile_shares(args, steps):
    """The pipeline under cProfile: the share of its wall time spent in the model step itself (forward, loss,
    backward, optimizer). Robust to a busy machine, since both parts are measured in the same run."""
    import cProfile
    import pstats

    tmp = tempfile.mkdtemp()
    try:
        trainer = Trainer(config(args, steps), Path(tmp) / "run")
        profiler = cProfile.Profile()
        profiler.runcall(trainer.run)
        stats = pstats.Stats(profiler).stats

        def cumulative(test):
            return sum(row[3] for key, row in stats.items() if test(key))
        total = cumulative(lambda k: k[2] == "loop" and k[0].endswith("train.py"))
        model = (cumulative(lambda k: k[2] == "forward_loss" and k[0].endswith("train.py"))
                 + cumulative(lambda k: k[2].startswith("<method 'run_backward'"))  # the C++ backward
                 + cumulative(lambda k: k[2] == "step" and "torch/optim/" in k[0].replace("\\", "/")))
        return {"loop_s": round(total, 2), "model_step_s": round(model, 2), "model_share": round(model / total, 3)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main():
    from bfcnn.devices import keep_freed_memory

    keep_freed_memory()  # what every bfcnn command does first, so the figures are the commands'
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="auto")
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--filters", type=int, default=32)
    parser.add_argument("--crop", type=int, default=48)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1, help="pipeline runs (each with its bare chunks)")
    parser.add_argument("--chunk", type=int, default=10, help="bare steps slipped in after every CHUNK pipeline steps")
    parser.add_argument("--pool", type=int, default=16, help="distinct ready batches the bare step cycles through")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--profile", action="store_true", help="only the in-run share of the model step")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.profile:
        print(profile_shares(args, args.steps))
        return
    rates = {"bare_fixed": [], "bare": [], "pipeline": []}
    setups = []
    for _ in range(args.rounds):
        result = interleaved(args)
        for key in rates:
            rates[key].append(round(result[key], 1))
        setups.append(round(result["setup_s"], 2))
    b, p = statistics.median(rates["bare"]), statistics.median(rates["pipeline"])
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else platform.processor() or "cpu"
    print(f"all rounds (patches/s): {rates}; pipeline setup (model + images, once) s: {setups}")
    print("| machine | model | crops x batch | bare, one batch | bare, ready batches | pipeline | pipeline / bare |")
    print(f"| {device} | BF-DnCNN-{args.depth}x{args.filters} | {args.crop}x{args.crop} x {args.batch} | "
          f"{statistics.median(rates['bare_fixed']):.1f} | {b:.1f} | {p:.1f} | "
          f"{100 * p / b:.0f}% (medians of {args.rounds} runs, chunks of {args.chunk}) |")


if __name__ == "__main__":
    main()
