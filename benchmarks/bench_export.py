"""Inference latency of one denoiser per backend (torch, onnxruntime, TFLite float32/fp16/int8) and file sizes.

    python benchmarks/bench_export.py [--sizes 512 1024] [--repeats 3] [--threads N] [--json OUT]
    python benchmarks/bench_export.py --model RUN_DIR --quality [--sizes]   # a trained model: + PSNR losses

The model is the paper's BF-DnCNN (20 layers, 64 channels, color) with random weights (latency does not depend
on them), or a trained one (`--model`: a run folder or a .safetensors file). With `--quality` the TFLite
exporter also reports the PSNR its fp16/int8 variants lose on Kodak24 (sigma 25; scikit-image's photos when
../shared/data is absent), which only means something for a trained model. Each backend runs a whole H x W x 3 image in one call, after one warm-up call; the median of
`--repeats` calls is reported. Torch also runs on CUDA when a GPU is present (row `torch-cuda`).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's bfcnn
import bfcnn  # noqa: E402
import bfcnn.export  # noqa: E402
from bfcnn import runtime  # noqa: E402
from bfcnn.errors import MissingDependencyError  # noqa: E402


def timed(fn, x, repeats):
    fn(x)  # warm-up: allocation, planning, first-call costs
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    from bfcnn.devices import keep_freed_memory

    keep_freed_memory()  # what every bfcnn command does first, so the figures are the commands'
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[512, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="default: every core this process may use")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--filters", type=int, default=64)
    parser.add_argument("--model", help="a trained model (run folder or .safetensors) instead of random weights")
    parser.add_argument("--quality", action="store_true", help="measure the PSNR the TFLite variants lose")
    parser.add_argument("--quality-images", default="auto", help="folder (default: Kodak24 beside the repository)")
    parser.add_argument("--quality-max-images", type=int, default=None)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    threads = args.threads or runtime.default_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if args.model:
        from bfcnn.checkpoint import find_weights, read_model_spec

        spec = read_model_spec(find_weights(args.model))
        model = bfcnn.load_model(args.model)
    else:
        spec = {"type": "dncnn", "channels": 3, "depth": args.depth, "filters": args.filters}
        model = bfcnn.build("model", spec).eval()
    channels = bfcnn.export.model_channels(model)

    folder = Path(tempfile.mkdtemp(prefix="bench_export_"))
    files, sizes = {}, {}
    check = {"check_sizes": [[32, 32]], "check_images": None}
    quality = {"quality_images": args.quality_images, "quality_max_images": args.quality_max_images} if args.quality else \
        {"quality_images": None}
    results = {"machine": platform.node(), "threads": threads, "model": spec, "seconds": {}}
    for exporter_spec in ({"type": "onnx", **check},
                          {"type": "tflite", "variants": ["float16", "int8"], **quality, **check}):
        try:
            report = bfcnn.build("exporter", exporter_spec)(model, folder, torch.rand(1, channels, 64, 64))
        except MissingDependencyError as error:
            print(f"skipping {exporter_spec['type']}: {error}")
            continue
        for variant, path in report["variants"].items():
            name = exporter_spec["type"] if variant == "float32" else f"{exporter_spec['type']}-{variant}"
            files[name] = path
            sizes[name] = report["file_bytes"][variant]
        if "quality" in report:
            results["quality"] = report["quality"]
            print(json.dumps(report["quality"], indent=2), flush=True)
    sizes["torch (safetensors)"] = sum(t.numel() * t.element_size() for t in model.state_dict().values())

    runners = {"torch": lambda x: model(torch.from_numpy(x)).numpy()}
    if torch.cuda.is_available():
        gpu_model = bfcnn.build("model", spec).cuda().eval()
        gpu_model.load_state_dict(model.state_dict())

        def on_gpu(x):
            y = gpu_model(torch.from_numpy(x).cuda())
            torch.cuda.synchronize()
            return y.cpu().numpy()
        runners["torch-cuda"] = on_gpu
    for name, path in files.items():
        runners[name] = runtime.load(path, threads=threads)

    results["file_bytes"] = sizes
    print(f"threads {threads}; model {spec}")
    print("file sizes: " + ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in sizes.items()))
    with torch.inference_mode():
        for size in args.sizes:
            x = np.random.default_rng(size).random((1, channels, size, size), dtype=np.float32)
            for name, fn in runners.items():
                seconds = timed(fn, x, args.repeats)
                results["seconds"].setdefault(f"{size}x{size}", {})[name] = round(seconds, 4)
                print(f"{size}x{size} {name:<14} {seconds * 1000:9.1f} ms", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
