"""How a model's forward pass runs on the CPU: the inference engines, and the `auto` policy that picks one.

An engine maps an N x C x H x W float32 tensor to the model's output, as `module(x)` in inference mode does:

| engine | what runs |
| --- | --- |
| `eager` | the module itself, NCHW (the only engine on a GPU, where the Denoiser adds channels_last) |
| `channels_last` | a copy of the module and its input in channels-last memory format |
| `jit` | torch.jit.trace + freeze + optimize_for_inference: oneDNN's fused convolutions in its blocked layout |
| `compile` | torch.compile (inductor, dynamic shapes); its first call compiles for tens of seconds |
| `onnxruntime` | onnxruntime on an ONNX export of the module made in memory (the optional extra `onnx`) |

`auto` on a CPU, in float32, tries AUTO_ORDER in turn (the fastest first, as benchmarks/bench_cpu_engines.py
measured on dev-2core, BENCHMARKS.md) and keeps the first that builds and agrees with eager float32 within
TOLERANCE on two odd-sized random inputs; where none does it stays eager. It starts eager and builds the faster
engine once AUTO_AFTER_PIXELS have gone through the model (setting one up costs about a second on 2 cores, more
than a small photo's whole forward pass). On a GPU, or with a bf16/fp16 precision, `auto` is eager.
The channels_last, jit and onnxruntime engines hold a snapshot of the weights taken when they are set up:
after changing the module's weights, make a new engine (or Denoiser).
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import io
import logging
import math
import os
import sys
import warnings

from .errors import BfcnnError
from .receptive import pad_to

log = logging.getLogger("bfcnn")

ENGINES = ("auto", "eager", "channels_last", "jit", "compile", "onnxruntime")
AUTO_ORDER = ("onnxruntime", "jit")  # measured: see the module's docstring
CPU_ONLY = ("jit", "onnxruntime")
TOLERANCE = 1e-4  # max abs difference from eager float32 on inputs in [0, 1]
AUTO_AFTER_PIXELS = 1 << 20  # pixels through the model before `auto` sets up a faster engine
CHECK_SIZES = ((37, 53), (70, 41))  # odd sizes unlike the traced example's: a traced size would show


def check_engine_name(name):
    if name not in ENGINES:
        raise BfcnnError(f"engine must be one of {', '.join(ENGINES)}, got {name!r}")
    return name


def round_up(value, multiple):
    return -(-value // multiple) * multiple


class Engine:
    """A callable running `module`'s forward with one engine; `name` says which. Built by make_engine."""

    def __init__(self, name, fn):
        self.name, self.fn = name, fn

    def __call__(self, x):
        return self.fn(x)

    def __repr__(self):
        return f"Engine({self.name})"


class AutoEngine:
    """Eager until AUTO_AFTER_PIXELS pixels have gone through, then the first engine of AUTO_ORDER that builds
    and agrees with eager (eager where none does). `name` says which runs now."""

    def __init__(self, module, after_pixels=None):
        self.module = module
        self.after = AUTO_AFTER_PIXELS if after_pixels is None else after_pixels
        self.current, self.pixels, self.decided = eager(module), 0, False

    @property
    def name(self):
        return self.current.name

    def decide(self):
        import torch

        self.decided = True
        for name in AUTO_ORDER:
            try:
                with torch.inference_mode(False):  # tracing and exporting need ordinary tensors
                    engine = build(name, self.module)
                error = deviation(engine, self.module)
            except Exception as failure:  # a model an engine cannot take: the next one
                log.debug("engine %s unavailable for this model: %s", name, failure)
                continue
            if error <= TOLERANCE:
                log.debug("engine auto: %s (max difference from eager %.2g)", name, error)
                self.current = engine
                return
            log.debug("engine %s differs from eager by %.2g on this model: not used", name, error)

    def __call__(self, x):
        if not self.decided:
            self.pixels += x.shape[0] * x.shape[-2] * x.shape[-1]
            if self.pixels >= self.after:
                self.decide()
        return self.current(x)

    def __repr__(self):
        return f"AutoEngine({self.name})"


def eager(module):
    return Engine("eager", module)


def build(name, module):
    """One named engine for `module` (in eval mode, float32, on the CPU unless eager/channels_last/compile)."""
    import torch

    if name == "eager":
        return eager(module)
    if name == "channels_last":
        copied = copy.deepcopy(module).to(memory_format=torch.channels_last)
        return Engine(name, lambda x: copied(x.contiguous(memory_format=torch.channels_last)))
    if name == "compile":
        return Engine(name, torch.compile(module, dynamic=True))
    if name == "jit":
        return Engine(name, on_grid(module, traced(module)))
    if name == "onnxruntime":
        return Engine(name, on_grid(module, onnx_session(module)))
    raise BfcnnError(f"engine must be one of {', '.join(ENGINES)}, got {name!r}")


def grid_of(module) -> int:
    """The sizes a traced copy of `module` is made for: multiples of its size_multiple and of bfcnn.receptive's
    pad_to (a UNet's 2^(scales-1), a pixel shuffle's factor: a pad a trace would freeze at the example's size)."""
    return math.lcm(int(getattr(module, "size_multiple", 1) or 1), pad_to(module))


def on_grid(module, fn):
    """`fn` (a traced copy of `traceable(module)`) on any size: the input zero-padded on the bottom and right to
    grid_of and the output cropped back, as the model itself does; `deviation` checks it on off-grid sizes."""
    import torch.nn.functional as F

    multiple = grid_of(module)
    if multiple == 1:
        return fn

    def run(x):
        h, w = x.shape[-2:]
        ph, pw = (-h) % multiple, (-w) % multiple
        if not (ph or pw):
            return fn(x)
        return fn(F.pad(x, (0, pw, 0, ph)))[..., :h, :w]
    return run


def example_input(module, height=64, width=64, seed=0):
    import torch

    from .layers import model_channels

    multiple = int(getattr(module, "size_multiple", 1) or 1)
    generator = torch.Generator().manual_seed(seed)
    shape = (1, model_channels(module), round_up(height, multiple), round_up(width, multiple))
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    return torch.rand(shape, generator=generator).to(device)


def traceable(module):
    """What a trace of `module` is made of: its OnGridCore where it pads to its grid inside (on_grid pads outside,
    so no pad or crop runs twice), else the module."""
    from .layers import OnGridCore

    return OnGridCore(module).eval() if pad_to(module) > 1 else module


def on_grid_example(module):
    side = round_up(64, grid_of(module))
    return example_input(module, side, side)


def traced(module):
    import torch

    with warnings.catch_warnings(), torch.no_grad():  # torch.jit's deprecation and tracer notes
        warnings.simplefilter("ignore")
        frozen = torch.jit.freeze(torch.jit.trace(traceable(module), on_grid_example(module),
                                                    check_trace=False))
        return torch.jit.optimize_for_inference(frozen)


def onnx_session(module):
    """An onnxruntime session on an in-memory ONNX export (torch.onnx's TorchScript exporter: about a second on
    2 cores, against tens for the dynamo one), dynamic N, H, W, with torch's thread count."""
    import torch

    try:
        import onnxruntime
    except ImportError:
        raise BfcnnError("engine onnxruntime needs onnxruntime: pip install 'bfcnn[onnx]'") from None
    buffer = io.BytesIO()
    sizes = {0: "batch", 2: "height", 3: "width"}
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad(), native_output_silenced():
            warnings.simplefilter("ignore")
            torch.onnx.export(traceable(module), (on_grid_example(module),), buffer, input_names=["input"],
                              output_names=["output"], dynamic_axes={"input": sizes, "output": sizes},
                              opset_version=17, dynamo=False)
    finally:
        quiet.setLevel(level)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    # fatal only: a model whose export does not run at every size (a traced pad of a UNet) fails `auto`'s check
    # with an exception, which moves on to the next engine; onnxruntime's own error line would only alarm
    options.log_severity_level = 4
    # no busy-waiting between runs: onnxruntime's threads otherwise spin for a while after each run and take the
    # cores from the Denoiser's own work between tiles and from anything else the process does next
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # no memory pattern planned per input shape: with tiles of a megapixel it held ~300 MB more at the peak of a
    # 24 MP photo (1.66 GB against 1.37 GB, the same speed); without the arena too 1.18 GB, but 15% slower
    options.enable_mem_pattern = False
    session = onnxruntime.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])

    def run(x):
        array = x.detach().float().contiguous().numpy()
        return torch.from_numpy(session.run(None, {"input": array})[0])
    return run


@contextlib.contextmanager
def native_output_silenced():
    """File descriptors 1 and 2 to /dev/null: torch.onnx's TorchScript exporter prints a model's whole graph from
    C++ when it cannot export it (its log switch is always on, torch 2.13), which `auto` then simply skips."""
    try:
        libc = ctypes.CDLL(None)
        sys.stdout.flush()
        sys.stderr.flush()
        saved, null = [os.dup(1), os.dup(2)], os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError, AttributeError):
        yield
        return
    os.dup2(null, 1)
    os.dup2(null, 2)
    try:
        yield
    finally:
        libc.fflush(None)  # C++'s std::cout writes through C's stdout buffer
        for fd, copy_ in zip((1, 2), saved):
            os.dup2(copy_, fd)
            os.close(copy_)
        os.close(null)


def deviation(engine, module):
    """The largest absolute difference between `engine` and eager float32 on random inputs of CHECK_SIZES."""
    import torch

    worst = 0.0
    with torch.inference_mode():
        for seed, (height, width) in enumerate(CHECK_SIZES):
            x = example_input(module, height, width, seed=seed + 1)
            worst = max(worst, float((engine(x).float() - module(x).float()).abs().max()))
    return worst


def make_engine(module, name="auto", device="cpu", precision="fp32"):
    """The engine `name` for `module` on `device`: an AutoEngine for `auto` on a CPU in float32, else a fixed
    one. A forced engine is built and checked against eager now: one that cannot run this model, or differs
    from eager by more than TOLERANCE, is a BfcnnError (exit 2)."""
    import torch

    check_engine_name(name)
    device = torch.device(device)
    cpu_fp32 = device.type == "cpu" and precision in (None, "fp32")
    if name == "auto":
        return AutoEngine(module) if cpu_fp32 else eager(module)
    if name == "eager":
        return eager(module)
    if not cpu_fp32 and name in CPU_ONLY:
        raise BfcnnError(f"engine {name} runs on the CPU in fp32 only (here: {device.type}, {precision}); "
                         f"use auto or eager")
    try:
        with torch.inference_mode(False):
            engine = build(name, module)
        error = deviation(engine, module) if cpu_fp32 else 0.0
    except BfcnnError:
        raise
    except Exception as failure:
        first = (str(failure).splitlines() or [""])[0]
        raise BfcnnError(f"engine {name} cannot run this model: {type(failure).__name__}: "
                         f"{first[:200]}{'...' if len(first) > 200 else ''}") from None
    if error > TOLERANCE:
        raise BfcnnError(f"engine {name} differs from eager float32 by {error:.2g} on this model (more than "
                         f"{TOLERANCE}): use auto or eager")
    return engine
