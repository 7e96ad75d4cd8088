"""Restoration with the denoiser's prior against classical baselines, and its speed (run from the repository root).

  python benchmarks/bench_restore.py quality [--images 4 --size 96]   # every task vs its baseline, same run
  python benchmarks/bench_restore.py speed                            # a 40x40 colour sample, a 256x256 restore
  python benchmarks/bench_restore.py figure                           # docs/restore.png for the README

Images: centre crops of Kodak24 (colour) and Set12 (gray; a colour model sees them replicated to three channels
and averaged back, as bfcnn.denoise.Denoiser does) from ../shared/data/test. Every task runs the same crops and
measurements through bfcnn.restore (the shipped prior, bfcnn.restore.DEFAULT_PRIOR, unless --model) and through its classical baseline:

  inpaint        centre box of a quarter of each side  vs  skimage.restoration.inpaint_biharmonic
  random_pixels  10% of the pixels                     vs  linear interpolation (scipy griddata; nearest outside)
  block_average  4x super-resolution                   vs  bicubic (torch, antialiased-free upsampling)
  blur           Gaussian, std 2 px, 8-bit blurred image  vs  Wiener (skimage, best balance of 4) and
                                                          Richardson-Lucy (skimage, 30 iterations)
  compressive    25% random orthonormal measurements   vs  the least-norm solution M^T y
  lowpass        the lowest quarter of the DCT per axis vs  the least-norm solution (zero-filled spectrum)

A column "smooth fill (no model)" shows the start `start: smooth` begins from (bfcnn.restore.smooth_fill), so
what the model's prior adds can be read off. PSNR is on [0, 1] with the result clamped, whole crops.
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
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's bfcnn, not an installed one

import numpy as np  # noqa: E402
import torch  # noqa: E402

import bfcnn  # noqa: E402
from bfcnn.restore import DEFAULT_PRIOR, data_fill, restore, sample  # noqa: E402

DATA = next((p / "shared" / "data" / "test" for p in Path(__file__).resolve().parents[1:4]
             if (p / "shared" / "data").is_dir()), Path("missing"))
TASKS = {
    "inpaint": {"type": "inpaint"},
    "random_pixels": {"type": "random_pixels", "fraction": 0.1},
    "block_average": {"type": "block_average", "factor": 4},
    "blur": {"type": "blur", "sigma": 2.0},
    "compressive": {"type": "compressive", "fraction": 0.25},
    "lowpass": {"type": "lowpass", "factor": 4},
}


def crops(folder, count, size, gray):
    from bfcnn.images import find_images, read_image

    out = []
    for path in find_images(DATA / folder)[:count]:
        image = read_image(path, "grayscale" if gray else "rgb")
        h, w = image.shape[:2]
        y0, x0 = (h - size) // 2, (w - size) // 2
        out.append((path.name, torch.from_numpy(np.ascontiguousarray(
            image[y0:y0 + size, x0:x0 + size])).permute(2, 0, 1)[None].float()))
    return out


def psnr(a, b):
    mse = float(((np.clip(a, 0, 1) - b) ** 2).mean())
    return 10 * np.log10(1 / max(mse, 1e-20))


def hwc(x):
    return x[0].permute(1, 2, 0).double().numpy()


def baselines(task, m, x, degraded, y):
    """{name: image (H x W x C numpy)} of the classical methods for one crop."""
    from skimage import restoration
    c, h, w = m.shape
    if task == "inpaint":
        mask = (~m.known).numpy()
        return {"biharmonic": restoration.inpaint_biharmonic(hwc(degraded), mask, channel_axis=-1)}
    if task == "random_pixels":
        from scipy.interpolate import griddata
        known = m.known.numpy()
        points = np.argwhere(known)
        grid = np.argwhere(np.ones_like(known))
        out = np.empty((h, w, c))
        for ch in range(c):
            values = hwc(degraded)[..., ch][known]
            linear = griddata(points, values, grid, method="linear").reshape(h, w)
            nearest = griddata(points, values, grid, method="nearest").reshape(h, w)
            out[..., ch] = np.where(np.isnan(linear), nearest, linear)
        return {"linear interpolation": out}
    if task == "block_average":
        up = torch.nn.functional.interpolate(degraded, size=(h, w), mode="bicubic", align_corners=False)
        return {"bicubic": hwc(up)}
    if task == "blur":
        sigma = TASKS["blur"]["sigma"]
        radius = int(4 * sigma)
        t = np.arange(-radius, radius + 1)
        psf = np.exp(-0.5 * (t[:, None] ** 2 + t[None, :] ** 2) / sigma**2)
        psf /= psf.sum()
        blurred = np.pad(hwc(degraded), ((radius, radius), (radius, radius), (0, 0)), mode="symmetric")
        crop = (slice(radius, radius + h), slice(radius, radius + w))
        wiener = max((np.stack([restoration.wiener(blurred[..., ch], psf, balance)[crop] for ch in range(c)], -1)
                      for balance in (0.001, 0.003, 0.01, 0.03)), key=lambda r: psnr(r, hwc(x)))  # oracle choice
        rl = np.stack([restoration.richardson_lucy(np.clip(blurred[..., ch], 1e-6, 1), psf, num_iter=30)[crop]
                       for ch in range(c)], -1)
        return {"Wiener (best balance)": wiener, "Richardson-Lucy": rl}
    return {"least-norm M^T y": hwc(m.adjoint(y))}


def quality(args):
    model = bfcnn.load_model(args.model, device="cpu")
    sets = [("Kodak24", False), ("Set12", True)]
    params = json.loads(args.params) if args.params else {}
    results = {}
    for task in args.tasks:
        for folder, gray in sets:
            rows = []
            for index, (name, x) in enumerate(crops(folder, args.images, args.size, gray)):
                m = bfcnn.build("measurement", TASKS[task])(x.shape[1:], seed=index)
                degraded = m.degrade(x)
                if task == "blur":  # what a camera would store: 8 bits
                    degraded = torch.round(degraded * 255) / 255
                y = m.from_degraded(degraded)
                row = {"image": name}
                for k in args.average:
                    result = restore(model, m, y, seed=index, progress=False, **{**params, "average": k})
                    row[prior_name(k)] = psnr(hwc(result.image), hwc(x))
                    if k == args.average[0]:
                        row.update(iterations=result.report["iterations"], seconds=result.report["seconds"])
                row["smooth fill (no model)"] = psnr(hwc(data_fill(m, y)), hwc(x))  # the start alone
                for method, image in baselines(task, m, x, degraded, y).items():
                    row[method] = psnr(image, hwc(x))
                rows.append(row)
                print(task, folder, {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()},
                      flush=True)
            results[(task, folder)] = rows
    print_tables(results, args)


def prior_name(k):
    return "bfcnn prior" if k == 1 else f"bfcnn prior, mean of {k}"


def print_tables(results, args):
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, threads {torch.get_num_threads()}; crops {args.size}x{args.size}, "
          f"{args.images} images per set; params {args.params or 'defaults'}\n")
    for task in args.tasks:
        methods = [k for k in results[(task, "Kodak24")][0] if k not in ("image", "iterations", "seconds")]
        print(f"**{task}** `{json.dumps(TASKS[task])}`\n")
        print("| test set | " + " | ".join(methods) + " | steps | s / crop (1 draw) |")
        print("| --- | " + " | ".join("---:" for _ in methods) + " | ---: | ---: |")
        for (t, folder), rows in results.items():
            if t != task:
                continue
            mean = lambda key: np.mean([r[key] for r in rows])  # noqa: E731
            print(f"| {folder} | " + " | ".join(f"{mean(k):.2f}" for k in methods)
                  + f" | {mean('iterations'):.0f} | {mean('seconds'):.1f} |")
        print()


def speed(args):
    model = bfcnn.load_model(args.model, device="cpu")
    for _ in range(2):
        model.forward(torch.rand(1, 3, 40, 40))
    t, cpu = time.perf_counter(), time.process_time()
    result = sample(model, (3, 40, 40), seed=0, progress=False)
    sample_s, sample_cpu = time.perf_counter() - t, time.process_time() - cpu
    print(f"40x40 colour sample: {sample_s:.2f} s wall, {sample_cpu:.2f} s CPU, {result.report['iterations']} steps, "
          f"final sigma {result.report['final_sigma'][0]:.2f}/255")
    files = sorted((DATA / "Kodak24").glob("*.png"))
    if files:
        from bfcnn.images import read_image
        x = torch.from_numpy(np.ascontiguousarray(read_image(files[0])[:256, :256])).permute(2, 0, 1)[None].float()
    else:
        x = torch.rand(1, 3, 256, 256)
    m = bfcnn.build("measurement", TASKS["random_pixels"])(x.shape[1:])
    t, cpu = time.perf_counter(), time.process_time()
    result = restore(model, m, m.measure(x), clean=x, progress=False)
    restore_s, restore_cpu = time.perf_counter() - t, time.process_time() - cpu
    print(f"256x256 colour restoration (random_pixels 10%): {restore_s:.2f} s wall, {restore_cpu:.2f} s CPU, "
          f"{result.report['iterations']} steps, PSNR {result.report['psnr']:.2f} dB")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
          f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")


def figure(args):
    """One row per task: the clean crop, what is measured, the baseline, the prior's result."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = bfcnn.load_model(args.model, device="cpu")
    params = json.loads(args.params) if args.params else {}
    _, x = crops("Kodak24", args.image + 1, args.size, False)[args.image]
    tasks = ["inpaint", "random_pixels", "block_average", "blur", "compressive"]
    fig, axes = plt.subplots(len(tasks) + 1, 4, figsize=(8, 2.1 * (len(tasks) + 1)))
    for row, task in enumerate(tasks):
        m = bfcnn.build("measurement", TASKS[task])(x.shape[1:], seed=0)
        degraded = m.degrade(x)
        if task == "blur":
            degraded = torch.round(degraded * 255) / 255
        y = m.from_degraded(degraded)
        result = restore(model, m, y, progress=False, **params)
        base_name, base = next(iter(baselines(task, m, x, degraded, y).items()))
        shown = degraded if degraded.shape == x.shape else torch.nn.functional.interpolate(
            degraded, size=x.shape[-2:], mode="nearest")
        panels = [(hwc(x), "clean"), (hwc(shown), f"{task}"), (base, f"{base_name}\n{psnr(base, hwc(x)):.1f} dB"),
                  (hwc(result.image), f"bfcnn prior\n{psnr(hwc(result.image), hwc(x)):.1f} dB")]
        for ax, (image, title) in zip(axes[row], panels):
            ax.imshow(np.clip(image, 0, 1))
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    for col in range(4):
        result = sample(model, (3, 40, 40), seed=col, progress=False)
        axes[-1][col].imshow(np.clip(hwc(result.image), 0, 1))
        axes[-1][col].set_title(f"sample {col + 1} (40x40)", fontsize=8)
        axes[-1][col].axis("off")
    fig.tight_layout()
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=60)
    from PIL import Image
    Image.open(out).convert("RGB").quantize(colors=256).save(out, optimize=True)  # a palette PNG: < 300 KB
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("quality", "speed", "figure"))
    parser.add_argument("--model", default=DEFAULT_PRIOR, help=f"default: the shipped prior, {DEFAULT_PRIOR}")
    parser.add_argument("--images", type=int, default=4, help="crops per test set")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--params", default="", help="JSON of restore() parameters, e.g. '{\"h0\": 0.05}'")
    parser.add_argument("--average", type=int, nargs="+", default=[1, 4], help="draws averaged, one column each")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared)")
    parser.add_argument("--image", type=int, default=0, help="figure: which Kodak24 image (index)")
    parser.add_argument("-o", "--output", default="docs/restore.png")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.what != "speed" and not DATA.is_dir():
        sys.exit(f"needs the test images in {DATA}")
    {"quality": quality, "speed": speed, "figure": figure}[args.what](args)


if __name__ == "__main__":
    main()
