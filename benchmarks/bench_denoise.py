"""Denoise throughput (megapixels/s) and peak memory for 1, 12 and 24-megapixel photos.

Each measurement runs in its own subprocess, so its peak resident memory (resource.getrusage ru_maxrss, which
sees torch's allocations, unlike tracemalloc) belongs to that measurement alone. Modes: `array` times
Denoiser.denoise on a uint8 H x W x 3 array; `file` times `bfcnn denoise`'s path (JPEG decode, tiled
denoise, JPEG encode). Models get random weights: speed and memory do not depend on them.

    python benchmarks/bench_denoise.py --model tiny --sizes 1 12 24 --mode array file
    python benchmarks/bench_denoise.py --model dncnn20 --sizes 1 --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = {
    "tiny": {"type": "dncnn", "channels": 3, "depth": 4, "filters": 8},
    "small_cpu": {"type": "dncnn", "channels": 3, "depth": 10, "filters": 32},  # bf_dncnn_small_cpu's size
    "small_cpu_ms": {"type": "resnet", "channels": 3, "filters": 32, "no_layers": 4, "levels": 3,  # its multiscale
                     "shared_weights": True, "batchnorm": True},                                 # counterpart
    "dncnn20": {"type": "dncnn", "channels": 3, "depth": 20, "filters": 64},
    "drunet_small_cpu": {"type": "drunet", "channels": 3, "filters": 16, "blocks": 2, "scales": 4},  # the UNet prior
}


def shape_for(megapixels):
    """A 3:2 photo of about this many megapixels (24 MP: 6000 x 4000)."""
    width = int(round((megapixels * 1e6 * 1.5) ** 0.5 / 8)) * 8
    return int(round(width / 1.5 / 8)) * 8, width


def synthetic_photo(height, width, seed=0):
    """Smooth shapes plus noise, uint8: content does not change the speed of a CNN, only the size does."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    image = np.empty((height, width, 3), dtype=np.uint8)
    for c in range(3):
        channel = 0.5 + 0.3 * np.sin(6 * x + 2 * c) * np.cos(4 * y - c)
        channel += rng.normal(0, 0.05, (height, width)).astype(np.float32)
        image[..., c] = np.clip(channel * 255, 0, 255).astype(np.uint8)
    return image


def child(args):
    """One measurement, in this process: prints a JSON line."""
    import numpy as np
    import torch

    import bfcnn
    from bfcnn.denoise import Denoiser, denoise_files

    torch.manual_seed(0)
    module = bfcnn.build("model", MODELS[args.model])
    denoiser = Denoiser(module, device=args.device, tile=args.tile, precision=args.precision)
    height, width = shape_for(args.megapixels)
    if args.mode == "array":
        image = synthetic_photo(height, width)
    warm = synthetic_photo(256, 256)
    denoiser.denoise(warm)  # first-call costs (allocator, kernels) out of the timing
    if denoiser.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    began = time.perf_counter()
    if args.mode == "array":
        result = denoiser.denoise(image)
        assert result.shape == image.shape and result.dtype == np.uint8
    else:
        report = denoise_files([args.file], args.output, model=denoiser, progress=False)
        assert not report["failed"], report["failed"]
    if denoiser.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    row = {"model": args.model, "mode": args.mode, "megapixels": round(height * width / 1e6, 2),
           "shape": [height, width], "device": str(denoiser.device), "precision": args.precision,
           "tile": denoiser.tile, "threads": torch.get_num_threads(), "seconds": round(seconds, 3),
           "mpx_per_s": round(height * width / 1e6 / seconds, 3), "peak_rss_mb": round(peak_kb / 1024, 1),
           "rss_before_mb": round(baseline_kb / 1024, 1)}
    if denoiser.device.type == "cuda":
        row["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(row), flush=True)


def main(argv=None):
    from bfcnn.devices import keep_freed_memory

    keep_freed_memory()  # what every bfcnn command does first, so the figures are the commands'
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny")
    parser.add_argument("--sizes", nargs="+", type=float, default=[1, 12, 24], help="megapixels")
    parser.add_argument("--mode", nargs="+", choices=("array", "file"), default=["array"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tile", type=int, default=None)
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", help="append rows to this JSON-lines file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--megapixels", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    if args.child:
        args.mode = args.mode[0]
        return child(args)
    root = str(Path(__file__).resolve().parents[1])  # this checkout's bfcnn, not an installed one
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs", flush=True)
    print("| model | mode | MP | device | precision | tile | s | Mpx/s | peak RSS (MB) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="bench_denoise_") as tmp:
        for megapixels in args.sizes:
            for mode in args.mode:
                command = [sys.executable, __file__, "--child", "--model", args.model, "--megapixels", str(megapixels),
                           "--mode", mode, "--device", args.device, "--precision", args.precision]
                if args.tile:
                    command += ["--tile", str(args.tile)]
                if args.threads:
                    command += ["--threads", str(args.threads)]
                if mode == "file":
                    from PIL import Image
                    source = Path(tmp) / f"photo_{megapixels:g}mp.jpg"
                    if not source.exists():
                        Image.fromarray(synthetic_photo(*shape_for(megapixels))).save(source, quality=92)
                    command += ["--file", str(source), "--output", str(Path(tmp) / "out")]
                done = subprocess.run(command, env=env, capture_output=True, text=True,
                                      cwd=root)
                if done.returncode:
                    print(f"| {args.model} | {mode} | {megapixels:g} | failed: {done.stderr.strip().splitlines()[-1:]} |")
                    continue
                row = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"| {row['model']} | {mode} | {row['megapixels']} | {row['device']} | {row['precision']} | "
                      f"{row['tile']} | {row['seconds']} | {row['mpx_per_s']} | {row['peak_rss_mb']} |", flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
