"""Speed of `bfcnn explain` (run from the repository root; CUDA when present, else CPU).

  python benchmarks/bench_explain.py jacobian   # the full 4,800 x 4,800 Jacobian of a 40 x 40 colour crop
  python benchmarks/bench_explain.py report     # a whole report on a 128 x 128 colour crop
  python benchmarks/bench_explain.py all

Model: a DnCNN-20-sized bias-free net (20 layers, 64 filters, 3 x 3, colour) with random weights: the cost of
the products does not depend on the weights. Image: a crop of CBSD68's first image when ../shared/data is there,
else scikit-image's astronaut. `jacobian` also times the paper's way (one output pixel per backward pass) on a
few rows and extrapolates it to all 4,800, which is labelled as such.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's bfcnn, not an installed one

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bfcnn import build  # noqa: E402
from bfcnn import explain as ex  # noqa: E402

# ../shared beside the repository (a worktree may sit one level deeper)
DATA = next((p / "shared" / "data" / "test" / "CBSD68" for p in Path(__file__).resolve().parents[1:4]
             if (p / "shared" / "data").is_dir()), Path("missing"))


def picture(size):
    files = sorted(DATA.glob("*.png")) if DATA.is_dir() else []
    if files:
        from bfcnn.images import read_image
        image, source = read_image(files[0]), f"CBSD68/{files[0].name}"
    else:
        from skimage import data
        image, source = data.astronaut().astype(np.float32) / 255.0, "skimage astronaut"
    h, w = image.shape[:2]
    y0, x0 = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(image[y0:y0 + size, x0:x0 + size]), f"{source}, centre {size}x{size}"


SIZE = {"depth": 20, "filters": 64, "crop": 40}  # --depth, --filters, --crop (smaller for a smoke run)


def model_on(device):
    torch.manual_seed(0)
    spec = {"type": "dncnn", "channels": 3, "depth": SIZE["depth"], "filters": SIZE["filters"]}
    return build("model", spec).to(device).eval()


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_jacobian(device, chunk_size, paper_rows):
    model = model_on(device)
    image, source = picture(SIZE["crop"])
    y = ex.as_batch(image, device)
    y = y + 25 / 255 * torch.randn(y.shape, generator=torch.Generator().manual_seed(0)).to(device)
    ex.jacobian(model, y[..., :8, :8], chunk_size=chunk_size)  # warm-up (kernels, allocator) on a tiny crop
    synchronize(device)
    start = time.perf_counter()
    jac = ex.jacobian(model, y, chunk_size=chunk_size)
    synchronize(device)
    batched = time.perf_counter() - start
    # the paper's way: one backward pass per output pixel, on a few rows, extrapolated
    leaf = y.clone().requires_grad_(True)
    synchronize(device)
    start = time.perf_counter()
    with torch.enable_grad():
        for i in range(paper_rows):
            out = model(leaf).flatten()
            row = torch.autograd.grad(out[i], leaf)[0].flatten()
            if i == 0:
                assert torch.allclose(row, jac[0], atol=1e-4), "one-row Jacobian disagrees with the batched one"
    synchronize(device)
    per_row = (time.perf_counter() - start) / paper_rows
    n = y.numel()
    return {"what": f"full Jacobian, {SIZE['crop']}x{SIZE['crop']} colour crop, DnCNN {SIZE['depth']}x{SIZE['filters']}", "image": source, "shape": list(jac.shape),
            "chunk_size": chunk_size, "batched_s": batched, "one_row_at_a_time_s_extrapolated": per_row * n,
            "rows_timed_one_at_a_time": paper_rows, "frobenius": float(jac.double().pow(2).sum())}


def bench_report(device, probes):
    model = model_on(device)
    image, source = picture(128)
    with tempfile.TemporaryDirectory() as folder:
        synchronize(device)
        start = time.perf_counter()
        report = ex.explain(model, image, sigma=25, sigmas=(10, 25, 50, 75), probes=probes, output_dir=folder,
                            device=str(device))
        synchronize(device)
        total = time.perf_counter() - start
    return {"what": "whole report, 128x128 colour crop (6 filters, spread map, net bias, 4 levels x "
                    f"{probes} probes, figures)", "image": source, "total_s": total,
            "parts_s": report["timings_s"], "net_bias": report["net_bias"],
            "dimensionality": [(lv["sigma"], lv["frobenius"]) for lv in report["dimensionality"]["levels"]]}


def main():
    from bfcnn.devices import keep_freed_memory

    keep_freed_memory()  # what every bfcnn command does first, so the figures are the commands'
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=("jacobian", "report", "all"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--chunk-size", type=int, default=None, help="rows per batch (default 256 CPU, 1200 CUDA)")
    parser.add_argument("--paper-rows", type=int, default=20, help="rows timed one at a time")
    parser.add_argument("--probes", type=int, default=8)
    parser.add_argument("--depth", type=int, default=SIZE["depth"])
    parser.add_argument("--filters", type=int, default=SIZE["filters"])
    parser.add_argument("--crop", type=int, default=SIZE["crop"], help="side of the Jacobian's crop")
    args = parser.parse_args()
    SIZE.update(depth=args.depth, filters=args.filters, crop=args.crop)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads"
    results = {"device": str(device), "machine": machine, "torch": torch.__version__}
    if args.which in ("jacobian", "all"):
        results["jacobian"] = bench_jacobian(device, args.chunk_size or (1200 if device.type == "cuda" else 256),
                                             args.paper_rows)
    if args.which in ("report", "all"):
        results["report"] = bench_report(device, args.probes)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
