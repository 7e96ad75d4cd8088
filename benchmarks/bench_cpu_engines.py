"""CPU speed of the product against the machine: `Denoiser.denoise` (what `bfcnn denoise` runs, engine auto)
against every engine variant and a float32 matrix product on the same cores, and the trainer's CPU step against
its variants. One process, interleaved rounds (round r times every case once, in an order shuffled anew each
round), best of the rounds: every case
sees the machine at the same moments, so read the ratios. Not a test; prints Markdown tables.

    python benchmarks/bench_cpu_engines.py                      # 0.25, 1, 12 and 24 MP (12/24 MP: minutes)
    python benchmarks/bench_cpu_engines.py --quick              # 0.25 and 1 MP, fewer rounds
    python benchmarks/bench_cpu_engines.py --sizes 12 24 --rounds 1 --no-train --json big.json

Variants at each size: `whole/<engine>` is the engine on the whole image as one tensor (sizes up to
--whole-max MP: a whole 24 MP image needs gigabytes of activations); `tiled/<engine>` is Denoiser.denoise with
that engine forced (the product's own tiling); `bf16` is eager under bf16 autocast (not exact: never auto);
`compile` (with --compile) is torch.compile, whose compile time is reported apart.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import bfcnn  # noqa: E402
from bfcnn.denoise import Denoiser  # noqa: E402
from bfcnn.devices import keep_freed_memory  # noqa: E402
from bfcnn.engines import build  # noqa: E402
from bfcnn.layers import flops_per_pixel, model_channels  # noqa: E402

ENGINES = ("eager", "channels_last", "jit", "onnxruntime")


def cpu_flags():
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = set(re.search(r"^flags\s*:(.*)$", text, re.M).group(1).split()) if "flags" in text else set()
    model = re.search(r"^model name\s*:(.*)$", text, re.M)
    wanted = sorted(f for f in flags if f in ("avx2", "fma", "avx_vnni") or f.startswith(("avx512", "amx")))
    return (model.group(1).strip() if model else platform.processor()), wanted


def image_of(megapixels, rng):
    width = int(round(math.sqrt(megapixels * 1e6 * 4 / 3)))
    height = int(round(megapixels * 1e6 / width))
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def timed(fn):
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def onnxruntime_present():
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def inference_cases(module, images, whole_max, with_compile, engines=ENGINES, bf16=True):
    """{(size, variant): callable}; every engine and Denoiser built and warmed up on a small image."""
    engines = [e for e in engines if e != "onnxruntime" or onnxruntime_present()]
    built = {name: build(name, module) for name in engines}
    product = bfcnn.denoise.Denoiser(module)  # engine auto, as bfcnn.load_model() returns it
    product.engine.after = 0  # steady state: the one-time set-up (timed apart) happens in the warm-up
    cases, setup = {}, {}
    began = time.perf_counter()
    product.denoise(images[min(images)][:64, :64])
    setup["auto"] = time.perf_counter() - began
    tiled = {name: Denoiser(module, engine=name) for name in engines}
    half = Denoiser(module, engine="eager", precision="bf16") if bf16 else None
    small = images[min(images)][:256, :256]
    for denoiser in [*tiled.values()] + ([half] if half else []):
        denoiser.denoise(small)
    if with_compile:
        began = time.perf_counter()
        built["compile"] = build("compile", module)
        with torch.inference_mode():
            built["compile"](torch.rand(1, model_channels(module), 97, 131))
        setup["compile (first call)"] = time.perf_counter() - began
    for size, image in images.items():
        cases[(size, "product")] = lambda image=image: product.denoise(image)
        for name, denoiser in tiled.items():
            cases[(size, f"tiled/{name}")] = lambda image=image, d=denoiser: d.denoise(image)
        if half:
            cases[(size, "bf16 (tiled, not exact)")] = lambda image=image: half.denoise(image)
        if size <= whole_max:
            x = torch.from_numpy(image.transpose(2, 0, 1)[None].astype(np.float32) / 255)
            for name, engine in built.items():
                cases[(size, f"whole/{name}")] = lambda x=x, e=engine: whole(e, x)
    return cases, setup, product.engine.name


def whole(engine, x):
    with torch.inference_mode():
        return engine(x)


def matmul_cases(n=2048):
    a = torch.rand(n, n)
    an = a.numpy()
    return {"torch.mm": lambda: torch.mm(a, a), "numpy @": lambda: an @ an}, 2 * n**3


def training_cases(args):
    """The trainer's own step (channels_last: auto) and the variants it could be, on ready batches."""
    from bfcnn.train import Trainer

    def trainer(channels_last, compile_, precision="fp32"):
        config = bfcnn.load_config({
            "seed": 0, "device": "cpu",
            "model": {"type": "dncnn", "channels": 3, "depth": args.train_depth, "filters": args.train_filters},
            "noise": {"type": "additive_gaussian", "sigma_range": [0, 55]},
            "dataset": {"type": "sample_images", "batch_size": args.train_batch,
                        "input_shape": [args.train_crop, args.train_crop, 3]},
            "loss": {"type": "mse"},
            "train": {"total_steps": 10, "progress": False, "tensorboard": False, "channels_last": channels_last,
                      "compile": compile_, "precision": precision, "optimizer": {"type": "adam", "learning_rate": 1e-3}},
        })
        t = Trainer(config, tempfile.mkdtemp(prefix="bench_cpu_engines_"))
        t.setup()
        return t

    variants = {"trainer (auto)": ("auto", False), "eager NCHW": (False, False), "channels_last": (True, False)}
    if args.compile:
        variants["compile"] = (False, True)
    if not args.no_bf16:  # bf16 autocast (train.precision: bf16): not exact; pays on CPUs with avx512_bf16 / AMX
        variants.update({"bf16 NCHW": (False, False, "bf16"), "bf16 channels_last": (True, False, "bf16")})
    clean = next(trainer(False, False).dataset.batches(1))
    cases, chosen = {}, None
    for label, (channels_last, compile_, *precision) in variants.items():
        t = trainer(channels_last, compile_, *precision)
        if label == "trainer (auto)":
            chosen = "channels_last" if t.channels_last else "eager NCHW"
        began = time.perf_counter()
        t.step(clean)  # warm-up (compiles)
        if compile_:
            print(f"compile's first training step: {time.perf_counter() - began:.1f} s", file=sys.stderr)
        cases[label] = lambda t=t: t.step(clean)
    return cases, chosen


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[0.25, 1, 12, 24], help="megapixels")
    parser.add_argument("--quick", action="store_true", help="0.25 and 1 MP, 2 rounds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default=None, help="a shipped name or weights (default: the default model)")
    parser.add_argument("--whole-max", type=float, default=2.0, help="largest MP run as one whole tensor")
    parser.add_argument("--compile", action="store_true", help="also torch.compile (slow to compile)")
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES),
                        help="engine variants to time (default all)")
    parser.add_argument("--no-bf16", action="store_true")
    parser.add_argument("--warm-up-max", type=float, default=2.0,
                        help="sizes up to this MP get an untimed call of every case first")
    parser.add_argument("--train-depth", type=int, default=17)
    parser.add_argument("--train-filters", type=int, default=64)
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--train-crop", type=int, default=40)
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.rounds = [0.25, 1], min(args.rounds, 2)
    keep_freed_memory()
    cpu, flags = cpu_flags()
    load_before = os.getloadavg()
    module = bfcnn.load_model(args.model).module
    mflop = flops_per_pixel(module, model_channels(module)) / 1e6
    rng = np.random.default_rng(0)
    images = {size: image_of(size, rng) for size in args.sizes}
    cases, setup, auto_engine = inference_cases(module, images, args.whole_max, args.compile, args.engines,
                                                not args.no_bf16)
    for key, fn in cases.items():  # warm-up: every case once before the rounds (big ones were warmed small)
        if key[0] <= args.warm_up_max:
            fn()
    mm, mm_flop = matmul_cases()
    train, train_chosen = ({}, None) if args.no_train else training_cases(args)
    everything = {**{("mm", k): v for k, v in mm.items()}, **cases, **{("train", k): v for k, v in train.items()}}
    for fn in list(mm.values()):
        fn()
    best = {}
    for r in range(args.rounds):
        order = list(everything)  # a new order each round: no case always runs right after the same one (a
        random.Random(r).shuffle(order)  # previous case's threads or freed memory could tax its successor)
        for key in order:
            best[key] = min(best.get(key, math.inf), timed(everything[key]))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    load_after = os.getloadavg()
    mm_rate = max(mm_flop / best[("mm", k)] / 1e9 for k in mm)
    report = {"cpu": cpu, "flags": flags, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "load_average": [load_before, load_after], "rounds": args.rounds,
              "model_mflop_per_px": mflop, "auto_engine": auto_engine, "setup_seconds": setup,
              "matmul_gflops": {k: mm_flop / best[("mm", k)] / 1e9 for k in mm}, "sizes": {}}
    print(f"\n{cpu}; flags {' '.join(flags)}; {os.cpu_count()} cores, {torch.get_num_threads()} threads; torch "
          f"{torch.__version__}; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after; best of "
          f"{args.rounds} interleaved rounds")
    print(f"model {mflop:.3f} MFLOP/px; auto chose {auto_engine}; set-up: "
          + ", ".join(f"{k} {v:.2f} s" for k, v in setup.items()))
    print("float32 2048x2048 matrix product: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in
                                                             report["matmul_gflops"].items()))
    print("\n| MP | variant | seconds | Mpx/s | GFLOP/s | / fastest exact | / matmul |\n| --- | --- | --- | --- | --- | --- | --- |")
    for size, image in images.items():
        pixels = image.shape[0] * image.shape[1]
        rows = {k[1]: best[k] for k in best if k[0] == size}
        exact = {k: v for k, v in rows.items() if "not exact" not in k}
        fastest = min(exact.values())
        report["sizes"][size] = {}
        for variant, seconds in sorted(rows.items(), key=lambda kv: kv[1]):
            gflops = pixels / seconds * mflop / 1e3
            report["sizes"][size][variant] = seconds
            print(f"| {size:g} | {'**product**' if variant == 'product' else variant} | {seconds:.3f} | "
                  f"{pixels / seconds / 1e6:.3f} | {gflops:.1f} | {fastest / seconds:.2f} | {gflops / mm_rate:.2f} |")
    if train:
        rows = {k[1]: best[k] for k in best if k[0] == "train"}
        fastest = min(v for k, v in rows.items() if not k.startswith("bf16"))  # of the float32 steps
        report["train"] = {"seconds": rows, "auto_chose": train_chosen}
        print(f"\ntraining step, dncnn depth {args.train_depth} x {args.train_filters} filters, batch "
              f"{args.train_batch} x 3 x {args.train_crop} x {args.train_crop} (auto chose {train_chosen})\n")
        print("| variant | seconds per step | / fastest float32 |\n| --- | --- | --- |")
        for variant, seconds in sorted(rows.items(), key=lambda kv: kv[1]):
            print(f"| {variant} | {seconds:.3f} | {fastest / seconds:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
