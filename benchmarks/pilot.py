"""Pilot: candidate bias-free architectures trained for the same CPU time on the same machine, compared by the
PSNR each reaches on CBSD68 (a learning curve per candidate). Picks the flagship by measurement.

Each candidate trains in its own process on one thread (`--jobs` at once): CBSD432 crops, additive Gaussian
noise sigma in [0, 55], MSE, Adam 1e-3 with a cosine decay over the CPU-time budget (so every candidate anneals
within the same budget). Budgets are process CPU seconds, not wall time, so a machine shared with other work
still compares the candidates fairly. The curve points evaluate `--eval-images` CBSD68 images, centre crops of
`--eval-crop` px (odd sizes kept), at sigma 15 / 25 / 50 with one fixed seed per image (the field's protocol on
crops; evaluation time is not counted in the budget). Each candidate's final weights are saved as a bfcnn
safetensors file (`train.init_from` continues from it).

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/pilot.py --cpu-minutes 6 --jobs 2 -o runs/pilot
    python benchmarks/pilot.py --cpu-minutes 0.05 --candidates dncnn_small drunet_small -o /tmp/p   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

# name -> (model spec, batch size, patch size)
CANDIDATES = {
    "dncnn_small": ({"type": "dncnn", "channels": 3, "depth": 10, "filters": 32}, 16, 48),
    "dncnn_17x64": ({"type": "dncnn", "channels": 3, "depth": 17, "filters": 64}, 16, 48),
    "dncnn_shuffle_12x96": ({"type": "dncnn_shuffle", "channels": 3, "depth": 12, "filters": 96}, 16, 48),
    "dncnn_shuffle_12x96_nobn": ({"type": "dncnn_shuffle", "channels": 3, "depth": 12, "filters": 96,
                                  "batchnorm": False}, 16, 48),
    "resnet_ms_small": ({"type": "resnet", "channels": 3, "levels": 3, "filters": 24, "no_layers": 4}, 16, 48),
    "unet_small": ({"type": "unet", "channels": 3, "filters": 16, "no_layers": 2, "downsamplings": 3}, 16, 48),
    "drunet_small": ({"type": "drunet", "channels": 3, "filters": 16, "blocks": 2, "scales": 4}, 16, 48),
    "drunet_small_p96": ({"type": "drunet", "channels": 3, "filters": 16, "blocks": 2, "scales": 4}, 4, 96),
    "drunet_24x1": ({"type": "drunet", "channels": 3, "filters": 24, "blocks": 1, "scales": 4}, 16, 48),
    # the winner's training settings (item 3 of the issue: batch norm or not, patch size, batch size)
    "dncnn_small_nobn": ({"type": "dncnn", "channels": 3, "depth": 10, "filters": 32, "batchnorm": False}, 16, 48),
    "dncnn_small_b8": ({"type": "dncnn", "channels": 3, "depth": 10, "filters": 32}, 8, 48),
    "dncnn_small_p32": ({"type": "dncnn", "channels": 3, "depth": 10, "filters": 32}, 16, 32),
    "dncnn_small_b8p64": ({"type": "dncnn", "channels": 3, "depth": 10, "filters": 32}, 8, 64),
}
# ordinary twins (biases, standard batch norm): the same spec with bias_free false
for _name in list(CANDIDATES):
    _spec, _batch, _patch = CANDIDATES[_name]
    CANDIDATES[_name + "_twin"] = ({**_spec, "bias_free": False}, _batch, _patch)
DEFAULT_SET = ["dncnn_small", "dncnn_17x64", "dncnn_shuffle_12x96", "dncnn_shuffle_12x96_nobn", "resnet_ms_small",
               "unet_small", "drunet_small", "drunet_small_p96"]
SIGMAS = (15, 25, 50)


def eval_set(folder, count, crop):
    import numpy as np

    from bfcnn.images import find_images, read_image

    paths = find_images(folder)
    picks = [paths[round(i * (len(paths) - 1) / max(1, count - 1))] for i in range(min(count, len(paths)))]
    images = []
    for path in picks:
        image = read_image(path)
        h, w = image.shape[:2]
        top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
        images.append(np.ascontiguousarray(image[top:top + crop, left:left + crop]))
    return images


def evaluate(model, images):
    import torch

    model.eval()
    scores = {}
    with torch.no_grad():
        for sigma in SIGMAS:
            values = []
            for index, image in enumerate(images):
                clean = torch.from_numpy(image).permute(2, 0, 1)[None].float()
                gen = torch.Generator().manual_seed(index)
                noisy = clean + sigma / 255.0 * torch.randn(clean.shape, generator=gen)
                out = model(noisy).clamp(0, 1)
                mse = float(((out - clean) ** 2).mean())
                values.append(10 * math.log10(1.0 / max(mse, 1e-12)))
            scores[sigma] = round(sum(values) / len(values), 3)
    model.train()
    return scores


def train_one(name, args):
    import torch

    import bfcnn
    from bfcnn.checkpoint import save_model
    from bfcnn.layers import flops_per_pixel, parameter_count

    torch.set_num_threads(1)
    spec, batch, patch = CANDIDATES[name]
    torch.manual_seed(0)
    model = bfcnn.build("model", spec)
    noise = bfcnn.build("noise", {"type": "additive_gaussian", "sigma_range": [0, 55]})
    dataset = bfcnn.build("dataset", {"type": "image_folder", "directory": str(args.data), "batch_size": batch,
                                      "input_shape": [patch, patch, 3]})
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    images = eval_set(args.test, args.eval_images, args.eval_crop)
    budget = args.cpu_minutes * 60.0
    marks = [budget * (i + 1) / args.evals for i in range(args.evals)]
    gen = torch.Generator().manual_seed(1)
    stream = dataset.batches(seed=0)
    used, steps, curve, started = 0.0, 0, [], time.time()
    model.train()
    while used < budget:
        t0 = time.process_time()
        fraction = used / budget
        warm = min(1.0, fraction / 0.02)
        factor = warm * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * fraction)))
        for group in optimizer.param_groups:
            group["lr"] = args.lr * factor
        clean = next(stream)
        noisy = noise(clean, gen)
        loss = torch.mean((model(noisy) - clean) ** 2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
        used += time.process_time() - t0
        if marks and used >= marks[0]:
            marks.pop(0)
            point = {"cpu_s": round(used, 1), "steps": steps, "patches": steps * batch,
                     "wall_s": round(time.time() - started, 1), "psnr": evaluate(model, images)}
            curve.append(point)
            print(name, json.dumps(point), flush=True)
    out = Path(args.output)
    save_model(out / f"{name}.safetensors", model, spec)
    return {"name": name, "spec": spec, "batch_size": batch, "patch": patch,
            "parameters": parameter_count(model), "mflops_per_pixel": round(flops_per_pixel(model, 3, 64) / 1e6, 3),
            "bias_free": bool(model.bias_free), "curve": curve}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", nargs="+", default=DEFAULT_SET, choices=sorted(CANDIDATES))
    parser.add_argument("--cpu-minutes", type=float, default=6.0, help="CPU budget per candidate (one thread)")
    parser.add_argument("--evals", type=int, default=4, help="points on each learning curve")
    parser.add_argument("--eval-images", type=int, default=12)
    parser.add_argument("--eval-crop", type=int, default=192)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--jobs", type=int, default=1, help="candidates trained at once, one thread each")
    parser.add_argument("--data", type=Path, default=DATA / "train" / "CBSD432")
    parser.add_argument("--test", type=Path, default=DATA / "test" / "CBSD68")
    parser.add_argument("-o", "--output", default="runs/pilot")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a worker: train this candidate, print its JSON
    parser.add_argument("--report", nargs="+", metavar="DIR",
                        help="print the markdown tables of the candidates' JSON files in these folders and stop")
    args = parser.parse_args(argv)
    if args.report:
        results = {}
        for folder in args.report:
            for path in sorted(Path(folder).glob("*.json")):
                if path.name != "pilot.json":
                    results[path.stem] = json.loads(path.read_text())
        print(markdown(results))
        return 0
    for folder in (args.data, args.test):
        if not folder.is_dir():
            parser.exit(2, f"pilot: {folder} is not a folder of images\n")
    Path(args.output).mkdir(parents=True, exist_ok=True)
    if args.one:
        result = train_one(args.one, args)
        (Path(args.output) / f"{args.one}.json").write_text(json.dumps(result, indent=1))
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pending, running, results = list(args.candidates), [], {}
    base = [sys.executable, __file__, "--cpu-minutes", str(args.cpu_minutes), "--evals", str(args.evals),
            "--eval-images", str(args.eval_images), "--eval-crop", str(args.eval_crop), "--lr", str(args.lr),
            "--data", str(args.data), "--test", str(args.test), "-o", args.output]
    while pending or running:
        while pending and len(running) < args.jobs:
            name = pending.pop(0)
            running.append((name, subprocess.Popen([*base, "--one", name], env=env)))
        time.sleep(1)
        for name, proc in list(running):
            if proc.poll() is not None:
                running.remove((name, proc))
                path = Path(args.output) / f"{name}.json"
                if proc.returncode == 0 and path.exists():
                    results[name] = json.loads(path.read_text())
                else:
                    print(f"pilot: {name} failed (exit {proc.returncode})", file=sys.stderr)
    summary = Path(args.output) / "pilot.json"
    summary.write_text(json.dumps({"cpu_minutes": args.cpu_minutes, "results": results}, indent=1))
    print(markdown(results))
    return 0


def markdown(results) -> str:
    """The end of every candidate's curve, best first at sigma 25, then each learning curve."""
    def last(r):
        return r["curve"][-1] if r["curve"] else {"steps": 0, "patches": 0, "cpu_s": 0, "psnr": {}}

    def psnr(point, sigma):
        value = {int(k): v for k, v in point["psnr"].items()}.get(sigma)
        return f"{value:.2f}" if value is not None else "-"

    order = sorted(results, key=lambda n: -{int(k): v for k, v in last(results[n])["psnr"].items()}.get(25, 0))
    lines = ["| candidate | bias-free | params | MFLOP/px | batch x crop | CPU s | steps | patches | PSNR sigma 15 | 25 | 50 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in order:
        r, point = results[name], last(results[name])
        lines.append(f"| {name} | {'yes' if r['bias_free'] else 'no'} | {r['parameters']:,} | {r['mflops_per_pixel']} | "
                     f"{r['batch_size']} x {r['patch']} | {point['cpu_s']:.0f} | {point['steps']} | {point['patches']:,} | "
                     f"{psnr(point, 15)} | {psnr(point, 25)} | {psnr(point, 50)} |")
    lines += ["", "Learning curves (PSNR at sigma 25 after each share of the CPU budget):", "",
              "| candidate | " + " | ".join(f"{p['cpu_s']:.0f} s" for p in results[order[0]]["curve"]) + " |",
              "| --- |" + " --- |" * len(results[order[0]]["curve"])] if order else []
    for name in order:
        lines.append(f"| {name} | " + " | ".join(psnr(p, 25) for p in results[name]["curve"]) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
