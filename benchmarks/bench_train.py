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


def bare(args, steps, warmup):
    """The model step alone on batches already on the device: forward, loss, backward, Adam."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config(args, steps), tmp)  # the same model, device and settings
        trainer.setup()
        dev = trainer.device
        g = torch.Generator(device=dev).manual_seed(0)
        clean = torch.rand((args.batch, 3, args.crop, args.crop), generator=g, device=dev)
        noisy = clean + 0.1 * torch.randn(clean.shape, generator=g, device=dev)
        if trainer.channels_last:
            clean, noisy = (t.contiguous(memory_format=torch.channels_last) for t in (clean, noisy))
        net, opt = trainer.net, trainer.optimizer

        def one():
            with trainer.autocast():
                out = net(noisy, 1)
            loss = torch.mean((out.float() - clean) ** 2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        for _ in range(warmup):
            one()
        sync(dev)
        began = time.perf_counter()
        for _ in range(steps):
            one()
        sync(dev)
        return args.batch * steps / (time.perf_counter() - began)


def pipeline(args, steps, warmup):
    """The trainer end to end; a warm-up run first (compilation, caches), then the timed run."""
    tmp = tempfile.mkdtemp()
    try:
        Trainer(config(args, warmup), Path(tmp) / "warm").run()
        trainer = Trainer(config(args, steps), Path(tmp) / "run")
        began = time.perf_counter()
        trainer.run()
        sync(trainer.device)
        return args.batch * steps / (time.perf_counter() - began)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="auto")
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--filters", type=int, default=32)
    parser.add_argument("--crop", type=int, default=48)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="alternate bare/pipeline this many times")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--profile", action="store_true", help="only the in-run share of the model step")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.profile:
        print(profile_shares(args, args.steps))
        return
    rates = {"bare": [], "pipeline": []}
    for _ in range(args.rounds):  # alternate, so a busy neighbour hurts both alike
        rates["bare"].append(bare(args, args.steps, args.warmup))
        rates["pipeline"].append(pipeline(args, args.steps, args.warmup))
    b, p = max(rates["bare"]), max(rates["pipeline"])
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else platform.processor() or "cpu"
    print(f"all rounds (patches/s): {rates}")
    print(f"| {device} | BF-DnCNN-{args.depth}x{args.filters} | {args.crop}x{args.crop} x {args.batch} | "
          f"{b:.1f} | {p:.1f} | {100 * p / b:.0f}% |")


if __name__ == "__main__":
    main()
