"""Forward and training-step rates of every registered model, and what the bias-free batch norm costs.

    python benchmarks/bench_models.py                 # CPU: one 256 x 256 image; CUDA when present (below)
    python benchmarks/bench_models.py --json out.json --models dncnn resnet

CPU: batch 1 of 256 x 256, float32, eager. CUDA (when available): batch 64 of 128 x 128, bf16 autocast,
channels_last, eager and torch.compile. Every model is built with its default params; models with `levels`
are also run with levels=3, and with levels=3 and a quarter of the layers per level (a third of the single
scale's FLOPs, a wider context); the speed-up column compares them with their single-scale form. The
batch-norm study runs BF-DnCNN-20 without normalization, with bfcnn's bias-free batch norm (std, the paper's,
and rms), with a naive eager rms version of it (float copy, pow, mean: the issue's 1,223 patches/s baseline)
and with torch's standard BatchNorm2d. A training step is forward, MSE loss, backward and an Adam step. Rates
are images (patches) per second.

Every case is built and warmed up first, then timed in interleaved rounds: round r times case 1, case 2, ...,
`--repeats` calls each, and a rate is the best call over all rounds. All cases see the machine at the same
moments, so a neighbour's load or a clock change hurts them alike and the ratios between rows hold even when
the absolute rates drift (CPU default: 3 rounds of 2 calls; CUDA: 1 round of 20 calls). The normalization
layers alone are timed the same way, one call a round, best of 15 rounds (CUDA 20).
"""

from __future__ import annotations

import argparse
import fnmatch
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
    """The straightforward eager rms form: a float copy, pow, mean (three passes), then the scale."""

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
            if layers >= 4:  # a quarter of the layers per level: resnet's context radius is then 54 px (18 single)
                out.append((f"{name} levels=3 no_layers={layers // 4}",
                            {"type": name, "levels": 3, "no_layers": layers // 4}, None, name))
    return out


def norm_study():
    dncnn = "BF-DnCNN-20"
    return [
        (f"{dncnn}, no normalization", {"type": "dncnn", "batchnorm": False}, None, None),
        (f"{dncnn}, bias-free BN std (bfcnn)", {"type": "dncnn", "batchnorm": "std"}, None, None),
        (f"{dncnn}, bias-free BN rms (bfcnn)", {"type": "dncnn", "batchnorm": "rms"}, None, None),
        (f"{dncnn}, bias-free BN rms (naive eager)", {"type": "dncnn"},
         lambda m: swap_norms(m, NaiveBiasFreeBatchNorm), None),
        (f"{dncnn}, standard BatchNorm2d", {"type": "dncnn"}, lambda m: swap_norms(m, nn.BatchNorm2d), None),
    ]


def timed(fn, device, repeats):
    """Seconds of the fastest of `repeats` calls."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for _ in range(repeats):
        sync()  # nothing queued before (a warm-up, another case) counts
        began = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - began)
    return min(times)


def interleaved(fns, device, rounds, repeats):
    """{key: [seconds of each round]}: every round times each of `fns` in turn, `repeats` calls each."""
    times = {key: [] for key in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            times[key].append(timed(fn, device, repeats))
    return times


def prepare(spec, edit, device, batch, size, compiled, warmup):
    """The model's facts and its forward and training-step calls, warmed up (and compiled)."""
    torch.manual_seed(0)
    model = bfcnn.build("model", spec)
    model = edit(model) if edit else model
    channels = getattr(model, "channels", 3)
    standard_bn = any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    facts = {"parameters": parameter_count(model), "mflop_per_px": flops_per_pixel(model, channels) / 1e6,
             "bias_free": bool(model.bias_free) and not standard_bn}
    model = model.to(device)
    x = torch.rand(batch, channels, size, size, device=device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    run = torch.compile(model) if compiled else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def forward():
        model.eval()
        with torch.inference_mode(), autocast:
            run(x)

    def step():
        model.train()
        with autocast:
            loss = torch.mean((run(x).float() - x.float()) ** 2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        forward()
        step()
    return facts, {"forward": forward, "train": step}


def norm_layer_study(device, compiled_modes, rounds):
    """Forward + backward of one normalization layer alone, interleaved, best of `rounds`: the cost of the
    layer without the convolutions around it (CPU: 1 x 64 x 256 x 256 float32; CUDA: 64 x 64 x 128 x 128
    bf16 channels_last)."""
    if device.type == "cuda":
        shape, dtype, fmt = (64, 64, 128, 128), torch.bfloat16, torch.channels_last
    else:
        shape, dtype, fmt = (1, 64, 256, 256), torch.float32, torch.contiguous_format
    layers = {"identity (x * 1)": lambda c: nn.Identity(),
              "bias-free BN std (bfcnn)": lambda c: BiasFreeBatchNorm(c, statistic="std"),
              "bias-free BN rms (bfcnn)": lambda c: BiasFreeBatchNorm(c, statistic="rms"),
              "bias-free BN rms (naive eager)": NaiveBiasFreeBatchNorm, "standard BatchNorm2d": nn.BatchNorm2d,
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
            step()  # warm-up (and compilation)
            fns[(label, compiled)] = step
    times = interleaved(fns, device, rounds, 1)
    rows = [{"layer": label, "compiled": compiled, "ms": 1e3 * min(times[(label, compiled)]),
             "shape": list(shape), "dtype": str(dtype)} for (label, compiled) in fns]
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
    parser.add_argument("--rounds", type=int, help="interleaved rounds over all cases (default: CPU 3, CUDA 1)")
    parser.add_argument("--repeats", type=int, help="timed calls per case and round (default: CPU 2, CUDA 20)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--cases", help="glob on the row labels, e.g. '*levels=3*'")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    names = args.models or bfcnn.names("model")
    todo = [] if args.norm_layers_only else cases(names) + ([] if args.no_norm_study else norm_study())
    if args.cases:
        todo = [case for case in todo if fnmatch.fnmatchcase(case[0], args.cases)]
    if device.type == "cuda":
        batch, size, warmup, rounds, repeats, modes = 64, 128, 3, args.rounds or 1, args.repeats or 20, (False, True)
        machine = torch.cuda.get_device_name(device)
    else:
        batch, size, warmup, rounds, repeats, modes = 1, 256, 1, args.rounds or 3, args.repeats or 2, (False,)
        machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"# {machine}; torch {torch.__version__}; batch {batch} of {size} x {size}; "
          f"{'bf16 channels_last' if device.type == 'cuda' else 'float32'}; {rounds} rounds of {repeats} calls")
    began = time.perf_counter()
    layer_rows = [] if args.no_norm_study else norm_layer_study(device, modes, 20 if device.type == "cuda" else 15)
    rows, fns = [], {}
    for label, spec, edit, single in todo:
        for compiled in modes:
            row = {"model": label, "spec": spec, "compiled": compiled, "multiscale_of": single, "error": None}
            try:
                facts, calls = prepare(spec, edit, device, batch, size, compiled, warmup)
                row.update(facts)
                fns.update({(label, compiled, kind): fn for kind, fn in calls.items()})
            except Exception as e:  # one model failing must not stop the others
                row["error"] = f"{type(e).__name__}: {e}"
            rows.append(row)
    times = interleaved(fns, device, rounds, repeats)
    for r in rows:
        for kind in ("forward", "train") if not r["error"] else ():
            seconds = times[(r["model"], r["compiled"], kind)]
            r[f"{kind}_per_s"], r[f"{kind}_s_rounds"] = batch / min(seconds), seconds
        print(json.dumps(r), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "batch": batch, "size": size, "rounds": rounds,
                                               "repeats": repeats, "rows": rows, "norm_layers": layer_rows},
                                              indent=2, default=str))
    if not rows:
        return
    by_key = {(r["model"], r["compiled"]): r for r in rows}
    print(f"\n{len(rows)} cases, {rounds} rounds of {repeats} calls each, {time.perf_counter() - began:.0f} s:")
    print("| model | compiled | bias-free | params | MFLOP/px | forward /s | train step /s "
          "| vs single scale (forward, train) |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        if r["error"]:
            print(f"| {r['model']} | {r['compiled']} | error: {r['error']} |")
            continue
        base = by_key.get((r["multiscale_of"], r["compiled"])) if r["multiscale_of"] else None
        speedup = (f"{r['forward_per_s'] / base['forward_per_s']:.2f}x, {r['train_per_s'] / base['train_per_s']:.2f}x"
                   if base and not base["error"] else "")
        print(f"| {r['model']} | {'yes' if r['compiled'] else 'no'} | {'yes' if r['bias_free'] else 'no'} "
              f"| {r['parameters']:,} | {r['mflop_per_px']:.3g} | {r['forward_per_s']:.3g} "
              f"| {r['train_per_s']:.3g} | {speedup} |")


if __name__ == "__main__":
    main()
