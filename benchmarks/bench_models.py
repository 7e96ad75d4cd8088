"""Forward and training-step rates of every registered model, and what the bias-free batch norm costs.

    python benchmarks/bench_models.py                 # CPU: one 256 x 256 image; CUDA when present (below)
    python benchmarks/bench_models.py --json out.json --models dncnn resnet

CPU: batch 1 of 256 x 256, float32, eager. CUDA (when available): batch 64 of 128 x 128, bf16 autocast,
channels_last, eager and torch.compile. Every model is built with its default params; models with `levels`
are also run with levels=3, and with levels=3 and a quarter of the layers per level (about the same receptive
field); the speed-up column compares them with their single-scale form. The batch-norm
study runs BF-DnCNN-20 without normalization, with bfcnn's bias-free batch norm, with a naive eager version
of it (float copy, pow, mean: the issue's 1,223 patches/s baseline) and with torch's standard BatchNorm2d.
A training step is forward, MSE loss, backward and an Adam step. Rates are images (patches) per second.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import bfcnn  # noqa: E402
from bfcnn.layers import BiasFreeBatchNorm, flops_per_pixel, parameter_count  # noqa: E402
from bfcnn.registry import default_registries  # noqa: E402


class NaiveBiasFreeBatchNorm(BiasFreeBatchNorm):
    """The straightforward eager form: a float copy, pow, mean (three passes), then the scale."""

    def forward(self, x):
        if self.training:
            var = x.float().pow(2).mean(dim=(0, 2, 3))
            with torch.no_grad():
                self.running_var.lerp_(var.detach(), self.momentum)
        else:
            var = self.running_var
        scale = self.weight / torch.sqrt(var + self.eps)
        return x * scale.view(1, -1, 1, 1).to(x.dtype)


def swap_norms(model, make):
    for name, child in model.named_children():
        if isinstance(child, (BiasFreeBatchNorm, nn.BatchNorm2d)):
            setattr(model, name, make(child.weight.numel()))
        else:
            swap_norms(child, make)
    return model


def cases(names):
    """(label, spec, post-build edit or None, multiscale-of label or None)."""
    out = []
    registry = default_registries()["model"]
    for name in names:
        out.append((name, {"type": name}, None, None))
        props = registry.get(name).schema.get("properties", {})
        if "levels" in props:
            out.append((f"{name} levels=3", {"type": name, "levels": 3}, None, name))
            layers = props.get("no_layers", {}).get("default", 0)
            if layers >= 4:  # about the single-scale receptive field, with a quarter of the layers per level
                out.append((f"{name} levels=3 no_layers={layers // 4}",
                            {"type": name, "levels": 3, "no_layers": layers // 4}, None, name))
    return out


def norm_study():
    return [
        ("BF-DnCNN-20, no normalization", {"type": "dncnn", "batchnorm": False}, None, None),
        ("BF-DnCNN-20, bias-free BN (bfcnn)", {"type": "dncnn"}, None, None),
        ("BF-DnCNN-20, bias-free BN (naive eager)", {"type": "dncnn"},
         lambda m: swap_norms(m, NaiveBiasFreeBatchNorm), None),
        ("BF-DnCNN-20, standard BatchNorm2d", {"type": "dncnn"}, lambda m: swap_norms(m, nn.BatchNorm2d), None),
    ]


def timed(fn, device, warmup, repeats):
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
    return min(times)  # the least disturbed run: machines here are shared


def measure(spec, edit, device, batch, size, compiled, warmup, repeats):
    torch.manual_seed(0)
    model = bfcnn.build("model", spec)
    if edit:
        model = edit(model)
    channels = getattr(model, "channels", 3)
    model = model.to(device)
    x = torch.rand(batch, channels, size, size, device=device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    run = torch.compile(model) if compiled else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def forward():
        with torch.inference_mode(), autocast:
            run(x)

    def step():
        with autocast:
            loss = torch.mean((run(x).float() - x.float()) ** 2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.eval()
    forward_s = timed(forward, device, warmup, repeats)
    model.train()
    step_s = timed(step, device, warmup, repeats)
    return {"forward_per_s": batch / forward_s, "train_per_s": batch / step_s}


def norm_layer_study(device, compiled_modes, rounds):
    """Forward + backward of one normalization layer alone, interleaved, best of `rounds`: the cost of the
    layer without the convolutions around it (CPU: 1 x 64 x 256 x 256 float32; CUDA: 64 x 64 x 128 x 128
    bf16 channels_last)."""
    if device.type == "cuda":
        shape, dtype, fmt = (64, 64, 128, 128), torch.bfloat16, torch.channels_last
    else:
        shape, dtype, fmt = (1, 64, 256, 256), torch.float32, torch.contiguous_format
    layers = {"identity (x * 1)": lambda c: nn.Identity(), "bias-free BN (bfcnn)": BiasFreeBatchNorm,
              "bias-free BN (naive eager)": NaiveBiasFreeBatchNorm, "standard BatchNorm2d": nn.BatchNorm2d,
              "ReLU (one elementwise pass, for scale)": lambda c: nn.ReLU()}
    x = torch.randn(*shape, device=device, dtype=dtype).contiguous(memory_format=fmt).requires_grad_()
    grad = torch.randn_like(x)
    fns = {}
    for compiled in compiled_modes:
        for label, make in layers.items():
            layer = make(shape[1]).to(device).train()
            if isinstance(layer, nn.BatchNorm2d):
                layer = layer.to(memory_format=fmt)
            run = torch.compile(layer) if compiled else layer

            def step(run=run):
                y = run(x) if not isinstance(run, nn.Identity) else x * 1
                y.backward(grad)
            fns[(label, compiled)] = step
    best = {key: float("inf") for key in fns}
    for key, fn in fns.items():  # warm-up (and compilation)
        fn()
    for _ in range(rounds):
        for key, fn in fns.items():
            best[key] = min(best[key], timed(fn, device, 0, 1))
    rows = [{"layer": label, "compiled": compiled, "ms": 1e3 * best[(label, compiled)], "shape": list(shape),
             "dtype": str(dtype)} for (label, compiled) in fns]
    print("\n| layer alone, forward + backward | compiled | ms |")
    print("| --- | --- | ---: |")
    for r in rows:
        print(f"| {r['layer']} | {'yes' if r['compiled'] else 'no'} | {r['ms']:.2f} |")
    return rows


def main(argv=None):
    from bfcnn.devices import keep_freed_memory

    keep_freed_memory()  # what every bfcnn command does first, so the figures are the commands'
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="default: every registered model")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--no-norm-study", action="store_true")
    parser.add_argument("--norm-layers-only", action="store_true", help="only the normalization-layer timing")
    parser.add_argument("--repeats", type=int, help="timed repeats (default: CPU 1, CUDA 20)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--cases", help="glob on the row labels, e.g. '*levels=3*'")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    names = args.models or bfcnn.names("model")
    todo = cases(names) + ([] if args.no_norm_study else norm_study())
    if args.cases:
        import fnmatch
        todo = [case for case in todo if fnmatch.fnmatchcase(case[0], args.cases)]
    if device.type == "cuda":
        batch, size, warmup, repeats, modes = 64, 128, 3, args.repeats or 20, (False, True)
        machine = torch.cuda.get_device_name(device)
    else:
        batch, size, warmup, repeats, modes = 1, 256, 1, args.repeats or 1, (False,)
        machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"# {machine}; torch {torch.__version__}; batch {batch} of {size} x {size}; "
          f"{'bf16 channels_last' if device.type == 'cuda' else 'float32'}")
    layer_rows = [] if args.no_norm_study else norm_layer_study(device, modes, 5 if device.type == "cpu" else 20)
    if args.norm_layers_only:
        todo = []
    rows = []
    for label, spec, edit, single in todo:
        for compiled in modes:
            try:
                model = bfcnn.build("model", spec)
                model = edit(model) if edit else model
                standard_bn = any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
                facts = {"parameters": parameter_count(model),
                         "mflop_per_px": flops_per_pixel(model, getattr(model, "channels", 3)) / 1e6,
                         "bias_free": bool(model.bias_free) and not standard_bn}
                rates = measure(spec, edit, device, batch, size, compiled, warmup, repeats)
                error = None
            except Exception as e:  # one model failing must not stop the others
                facts, rates, error = {}, {}, f"{type(e).__name__}: {e}"
            rows.append({"model": label, "spec": spec, "compiled": compiled, "multiscale_of": single,
                         **facts, **rates, "error": error})
            print(json.dumps(rows[-1]), flush=True)
    by_key = {(r["model"], r["compiled"]): r for r in rows}
    print("\n| model | compiled | bias-free | params | MFLOP/px | forward /s | train step /s | multiscale speed-up (train) |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        if r["error"]:
            print(f"| {r['model']} | {r['compiled']} | error: {r['error']} |")
            continue
        base = by_key.get((r["multiscale_of"], r["compiled"])) if r["multiscale_of"] else None
        speedup = f"{r['train_per_s'] / base['train_per_s']:.2f}x" if base and not base["error"] else ""
        print(f"| {r['model']} | {'yes' if r['compiled'] else 'no'} | {'yes' if r['bias_free'] else 'no'} "
              f"| {r['parameters']:,} | {r['mflop_per_px']:.3g} | {r['forward_per_s']:.3g} "
              f"| {r['train_per_s']:.3g} | {speedup} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "batch": batch, "size": size, "rows": rows,
                                               "norm_layers": layer_rows},
                                              indent=2, default=str))


if __name__ == "__main__":
    main()
