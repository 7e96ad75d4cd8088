"""Data pipeline speed: augmented crops per second, and the cost of the noise step within a training step.

    NO_ALBUMENTATIONS_UPDATE=1 python benchmarks/bench_data.py [--data ../shared/data/train/CBSD432]
        [--workers 0,1] [--batches 40] [--json out.json]

Loader: 128 x 128 colour crops of CBSD432 with the seed's augmentations (random_rotate 0.314 rad, random
up-down and left-right flips), batch 64, for each worker count; the first batch (worker start-up) is timed
apart from the steady rate. Noise: the seed's noise mix (additive [5, 10, 20], multiplicative [0.1, 0.15, 0.2]
blurred, both clipped, or subsampling by 2: what a seed config with those keys becomes) and a plain additive
sigma in [0, 55], against one training step (forward, backward, Adam) of a bias-free DnCNN-20 (64 filters) on
the same batch, on CUDA when present. Without CUDA the step is measured on a smaller batch (4 x 64 x 64) so
that it ends in seconds; the ratio is what to read.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

import bfcnn  # noqa: E402
from bfcnn.plugins.seed_format import seed_noises  # noqa: E402

SEED_AUGMENTATIONS = {"random_rotate": 0.314, "random_up_down": True, "random_left_right": True}
# the seed's three noise types, through the same mapping a seed config goes through
SEED_NOISE = seed_noises({"additional_noise": [5, 10, 20], "multiplicative_noise": [0.1, 0.15, 0.2],
                          "random_blur": True, "clip_value": True, "subsample_size": 2})
PLAIN_NOISE = {"type": "additive_gaussian", "sigma_range": [0, 55]}


def machine():
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.node()}: {os.cpu_count()} CPU cores, {gpu}, torch {torch.__version__}"


def bench_loader(directory, workers, batch_size, crop, batches):
    started = time.perf_counter()
    dataset = bfcnn.build("dataset", {"type": "image_folder", "directory": str(directory), "batch_size": batch_size,
                                      "input_shape": [crop, crop, 3], "num_workers": workers, **SEED_AUGMENTATIONS})
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    stream = dataset.batches(0)
    next(stream)
    first = time.perf_counter() - started
    for _ in range(min(4, batches)):  # let every worker fill its queue once
        next(stream)
    started = time.perf_counter()
    for _ in range(batches):
        next(stream)
    seconds = time.perf_counter() - started
    del stream
    return {"workers": workers, "images": len(dataset), "load_s": round(loaded, 2), "first_batch_s": round(first, 2),
            "crops_per_s": round(batches * batch_size / seconds)}


def timed(fn, repeats, device):
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats


def bench_noise(device, batch, crop, repeats):
    clean = torch.rand((batch, 3, crop, crop), device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    model = bfcnn.build("model", {"type": "dncnn", "channels": 3, "depth": 20, "filters": 64}).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    noise = bfcnn.build("noise", PLAIN_NOISE)

    def step():
        noisy = noise(clean, generator)
        loss = torch.nn.functional.mse_loss(model(noisy), clean)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step_s = timed(step, repeats, device)
    rows = []
    seed_mix = "seed mix (additive, blurred multiplicative or subsample 2)"
    for name, spec in (("additive sigma in [0, 55]", PLAIN_NOISE), (seed_mix, {"type": "choice", "choices": SEED_NOISE})):
        fn = bfcnn.build("noise", spec)
        noise_s = timed(lambda: fn(clean, generator), max(5, repeats * 5), device)
        rows.append({"noise": name, "noise_ms": round(noise_s * 1e3, 3), "step_ms": round(step_s * 1e3, 1),
                     "share_of_step": round(noise_s / step_s, 4)})
    return {"device": str(device), "batch": [batch, 3, crop, crop], "rows": rows}


def main(argv=None):
    from bfcnn.devices import keep_freed_memory

    keep_freed_memory()  # what every bfcnn command does first, so the figures are the commands'
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_data = Path(os.environ.get("BFCNN_DATA", REPO / "../shared/data")) / "train/CBSD432"
    parser.add_argument("--data", type=Path, default=default_data, help="folder of training images")
    cuda = torch.cuda.is_available()
    parser.add_argument("--workers", default="0,4,8,14" if cuda else "0,1", help="worker counts, comma-separated")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--batches", type=int, default=40, help="batches timed per worker count")
    parser.add_argument("--step-batch", type=int, default=64 if cuda else 4)
    parser.add_argument("--step-crop", type=int, default=128 if cuda else 64)
    parser.add_argument("--repeats", type=int, default=20 if cuda else 3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    results = {"machine": machine(), "loader": [], "noise": None}
    print(f"# {results['machine']}")
    if args.data.is_dir():
        print(f"\nloader: {args.data}, {args.batch_size} x {args.crop} x {args.crop} x 3 crops, {SEED_AUGMENTATIONS}")
        print("| workers | images | decode all (s) | first batch (s) | crops/s |")
        print("| --- | --- | --- | --- | --- |")
        for workers in (int(w) for w in args.workers.split(",")):
            row = bench_loader(args.data, workers, args.batch_size, args.crop, args.batches)
            results["loader"].append(row)
            print(f"| {workers} | {row['images']} | {row['load_s']} | {row['first_batch_s']} | {row['crops_per_s']} |",
                  flush=True)
    else:
        print(f"\nloader: skipped, {args.data} not found (give --data)")
    device = torch.device("cuda" if cuda else "cpu")
    noise = bench_noise(device, args.step_batch, args.step_crop, args.repeats)
    results["noise"] = noise
    print(f"\nnoise vs a bias-free DnCNN-20 training step, {device}, batch {noise['batch']}")
    print("| noise | noise (ms) | training step (ms) | share of the step |")
    print("| --- | --- | --- | --- |")
    for row in noise["rows"]:
        print(f"| {row['noise']} | {row['noise_ms']} | {row['step_ms']} | {row['share_of_step']:.2%} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
