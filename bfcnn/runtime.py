"""Run exported denoisers (ONNX, TFLite) without torch: this module imports only numpy and an interpreter.

    from bfcnn.runtime import load, denoise_array
    model = load("export/model.tflite")            # backend from the suffix, or backend="onnx" / "tflite"
    y = model(x)                                   # float32 N x C x H x W in [0, 1] -> the same shape
    out = denoise_array(image, "export/model.onnx", tile=512)   # H x W x C float32, tiled like the torch path

Tiles get the model's receptive radius of context and start on its sampling grid, as the exporter wrote them
into the report beside the file (`<file>.report.json`): keep the report with the file for exact tiling.
Without it, tiles get DEFAULT_MARGIN pixels of context and blending hides what differs.

Interpreters: onnxruntime for .onnx; for .tflite ai-edge-litert, or tflite-runtime where that is installed
(tflite-runtime 2.14 runs only with numpy < 2). Models exported with `io: uint8` take and give N x H x W x C
uint8 images; `load` hides that: its callable still takes and gives float32 N x C x H x W (quantized to 8 bits
on the way in and out). Nothing here imports torch, and the file also works as a plain module outside the
bfcnn package (copy runtime.py and tiling.py side by side).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

try:
    from .errors import BfcnnError
    from .tiling import tiled_apply
except ImportError:  # loaded as a plain module, without the bfcnn package: tiling.py sits beside this file
    import importlib.util as _util

    _spec = _util.spec_from_file_location("_bfcnn_tiling", Path(__file__).with_name("tiling.py"))
    _tiling = _util.module_from_spec(_spec)
    _spec.loader.exec_module(_tiling)
    tiled_apply = _tiling.tiled_apply

    class BfcnnError(Exception):
        """Bad input (a path, a backend, a shape): the bfcnn CLI maps it to exit code 2."""

        exit_code = 2

BACKENDS = ("onnx", "tflite")
SUFFIXES = {".onnx": "onnx", ".tflite": "tflite"}
DEFAULT_MARGIN = 32  # context for a file whose export report is not beside it
__all__ = ["BACKENDS", "DEFAULT_MARGIN", "ExportedModel", "available_backends", "backend_of", "cached_load",
           "denoise_array", "denoise_file_array", "load", "quiet_native_logs", "report_of",
           "tflite_interpreter_class"]

# Info lines that TFLite's C++ code (and the converter's absl logging) writes straight to the process's
# stderr, past Python's logging: "I0000 00:00:... port.cc:153] ...", absl's preamble, XNNPACK's greeting.
NATIVE_INFO = re.compile(r"(I\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] |WARNING: All log messages before absl::InitializeLog"
                         r"|INFO: Created TensorFlow Lite XNNPACK delegate)")


@contextlib.contextmanager
def quiet_native_logs():
    """Hide those native info lines; everything else written to stderr meanwhile (warnings, errors) is
    passed on when the block ends."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no file descriptor 2 to borrow: leave stderr alone
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().splitlines(keepends=True)
            kept = [line for line in lines if not NATIVE_INFO.match(line.decode(errors="replace"))]
            if kept:
                os.write(2, b"".join(kept))


def tflite_interpreter_class():
    """The TFLite Interpreter class: ai-edge-litert first, tflite-runtime otherwise; None if neither is installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter
        return Interpreter
    except ImportError:
        return None


def available_backends() -> list[str]:
    import importlib.util

    found = []
    if importlib.util.find_spec("onnxruntime") is not None:
        found.append("onnx")
    if any(importlib.util.find_spec(m) is not None for m in ("ai_edge_litert", "tflite_runtime")):
        found.append("tflite")
    return found


def backend_of(model_file, backend=None) -> str:
    """The backend asked for, or the one a file's suffix names."""
    if backend is not None:
        if backend not in BACKENDS:
            hint = " (torch models run through bfcnn.load_model)" if backend == "torch" else ""
            raise BfcnnError(f"unknown runtime backend {backend!r}{hint}: choose one of {', '.join(BACKENDS)}")
        return backend
    suffix = Path(model_file).suffix.lower()
    if suffix not in SUFFIXES:
        raise BfcnnError(f"{model_file}: cannot tell the backend from the suffix {suffix!r}; "
                         f"name it ({', '.join(BACKENDS)})")
    return SUFFIXES[suffix]


def report_of(model_file):
    """The exporter's report on a model file: `<file>.report.json`, or a report beside it that lists the file
    among its variants (a TFLite export's fp16 and int8 files); None where there is none that can be read."""
    path = Path(model_file)
    own = path.with_name(path.name + ".report.json")
    for candidate in [own] + sorted(p for p in path.parent.glob("*.report.json") if p != own):
        try:
            report = json.loads(candidate.read_text())
            variants = report.get("variants") or {}
            if candidate == own or path.name in {Path(str(v)).name for v in variants.values()}:
                return report
        except (OSError, ValueError, AttributeError):  # unreadable, not JSON, or not a report's shape
            continue
    return None


def tiling_in(model_file):
    """The `tiling` of the file's export report, or None."""
    return (report_of(model_file) or {}).get("tiling")


def margin_and_align(tiling):
    """(margin, align) from a report's `tiling`, else (DEFAULT_MARGIN, 1)."""
    try:
        margin, align = int(tiling["margin"]), int(tiling["align"])
    except (TypeError, KeyError, ValueError):
        return DEFAULT_MARGIN, 1
    return (margin, align) if margin >= 0 and align >= 1 else (DEFAULT_MARGIN, 1)


def pad_multiple(tiling) -> int:
    """The multiple inputs are zero-padded to, from a report's `tiling.pad_to` (a UNet exported as its on-grid
    core), else 1."""
    try:
        multiple = int(tiling.get("pad_to", 1))
    except (AttributeError, TypeError, ValueError):
        return 1
    return multiple if multiple >= 1 else 1


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class ExportedModel:
    """An exported denoiser. Call it on float32 N x C x H x W in [0, 1]; `raw` runs the file's own signature.

    Attributes: backend, path, io ("float32": N x C x H x W float32, or "uint8": N x H x W x C uint8),
    channels (None where the file leaves it open), margin and align, the context and grid that tiles get, and
    pad_to, the multiple every input is zero-padded to and cropped back from (a UNet's core; from the export
    report beside the file; DEFAULT_MARGIN, 1 and 1 without one).
    """

    def __init__(self, path, backend, threads=None):
        self.path, self.backend = Path(path), backend
        self.threads = threads or default_threads()
        if not self.path.is_file():
            raise BfcnnError(f"model file not found: {self.path}")
        tiling = tiling_in(self.path)  # the report is read once
        self.margin, self.align = margin_and_align(tiling)
        self.pad_to = pad_multiple(tiling)
        self._shape, self._greeted = None, False
        if backend == "onnx":
            self._open_onnx()
        else:
            self._open_tflite()

    def _open_onnx(self):
        try:
            import onnxruntime
        except ImportError:
            raise BfcnnError("the onnx backend needs onnxruntime: pip install onnxruntime (or 'bfcnn[onnx]')") from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.log_severity_level = 3
        # as bfcnn.engines: no threads spinning between tiles, no memory plan per tile shape (the 24 MP peak)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.enable_mem_pattern = False
        try:
            self._session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types for unreadable files
            raise BfcnnError(f"{self.path}: not a model onnxruntime can load: {error}") from None
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise BfcnnError(f"{self.path}: a denoiser has one input, this file has {len(inputs)}")
        self._input_name = inputs[0].name
        self.io = "uint8" if inputs[0].type == "tensor(uint8)" else "float32"
        shape = inputs[0].shape
        channel = shape[3] if self.io == "uint8" else shape[1]
        self.channels = channel if isinstance(channel, int) else None

    def _open_tflite(self):
        interpreter_class = tflite_interpreter_class()
        if interpreter_class is None:
            raise BfcnnError("the tflite backend needs an interpreter: pip install ai-edge-litert "
                             "(or tflite-runtime with numpy < 2)")
        try:
            self._interpreter = interpreter_class(model_path=str(self.path), num_threads=self.threads)
        except (ValueError, RuntimeError) as error:
            raise BfcnnError(f"{self.path}: not a model the TFLite interpreter can load: {error}") from None
        inputs = self._interpreter.get_input_details()
        if len(inputs) != 1:
            raise BfcnnError(f"{self.path}: a denoiser has one input, this file has {len(inputs)}")
        self._input = inputs[0]
        self._output_index = self._interpreter.get_output_details()[0]["index"]
        self.io = "uint8" if np.dtype(self._input["dtype"]) == np.uint8 else "float32"
        shape = list(self._input["shape"])
        self.channels = int(shape[3] if self.io == "uint8" else shape[1])

    @property
    def layout(self) -> str:
        return "NHWC" if self.io == "uint8" else "NCHW"

    def raw(self, array: np.ndarray) -> np.ndarray:
        """Run the file's own signature: float32 N x C x H x W, or uint8 N x H x W x C for `io: uint8` files."""
        dtype = np.uint8 if self.io == "uint8" else np.float32
        array = np.ascontiguousarray(array, dtype=dtype)
        if array.ndim != 4:
            raise BfcnnError(f"the model takes a 4-d {self.layout} array, got shape {array.shape}")
        channels = array.shape[3] if self.io == "uint8" else array.shape[1]
        if self.channels is not None and channels != self.channels:
            raise BfcnnError(f"the model takes {self.channels} channel(s), got {channels} (shape {array.shape}, "
                             f"layout {self.layout})")
        height, width = array.shape[1:3] if self.io == "uint8" else array.shape[2:4]
        m = self.pad_to
        if m > 1 and (height % m or width % m):  # zeros on the bottom and right, as the model pads itself
            pads = [(0, 0), (0, -height % m), (0, -width % m)]
            array = np.pad(array, pads + [(0, 0)] if self.io == "uint8" else [(0, 0)] + pads)
            result = self._run(array)
            return result[:, :height, :width] if self.io == "uint8" else result[:, :, :height, :width]
        return self._run(array)

    def _run(self, array):
        if self.backend == "onnx":
            return self._session.run(None, {self._input_name: array})[0]
        if self._greeted:
            return self._invoke(array)
        with quiet_native_logs():  # the first run applies XNNPACK, which greets on stderr
            result = self._invoke(array)
        self._greeted = True
        return result

    def _invoke(self, array):
        interpreter = self._interpreter
        if array.shape != self._shape:  # a new size: resize the input and plan the buffers again
            interpreter.resize_tensor_input(self._input["index"], list(array.shape))
            interpreter.allocate_tensors()
            self._shape = array.shape
        interpreter.set_tensor(self._input["index"], array)
        interpreter.invoke()
        return interpreter.get_tensor(self._output_index).copy()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """float32 N x C x H x W in [0, 1] -> float32 N x C x H x W."""
        x = np.asarray(x, dtype=np.float32)
        if self.io == "float32":
            return np.asarray(self.raw(x), dtype=np.float32)
        image = np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8).transpose(0, 2, 3, 1)
        return self.raw(image).transpose(0, 3, 1, 2).astype(np.float32) / 255.0

    def __repr__(self):
        return f"ExportedModel({str(self.path)!r}, backend={self.backend!r}, io={self.io!r}, channels={self.channels})"


def load(model_file, backend=None, threads=None) -> ExportedModel:
    """An exported model, ready to call on float32 N x C x H x W arrays; the backend defaults from the suffix."""
    return ExportedModel(model_file, backend_of(model_file, backend), threads)


_CACHE: dict = {}
_CACHE_SIZE = 4


def cached_load(model_file, backend=None, threads=None) -> ExportedModel:
    """`load`, reusing the session/interpreter of the last few files (a folder of images opens the file once)."""
    path = Path(model_file)
    try:
        stamp = path.resolve().stat().st_mtime_ns
    except OSError:
        return load(path, backend, threads)  # load says what is wrong
    key = (str(path.resolve()), backend_of(path, backend), threads, stamp)
    if key not in _CACHE:
        while len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = load(path, backend, threads)
    return _CACHE[key]


def denoise_array(image: np.ndarray, model, backend=None, tile=512, margin=None, blend=16, threads=None,
                  out=None, align=None) -> np.ndarray:
    """Denoise an H x W x C float32 image in [0, 1] with an exported model (a path or a loaded ExportedModel).

    Images larger than `tile` are processed tile by tile with `margin` pixels of context, windows starting on
    multiples of `align` (bfcnn.tiling), so memory stays bounded; both default to the model's (its export
    report's). `tile=None` runs the whole image at once. The result is float32 H x W x C, not clipped.
    A path is opened once and kept for the next calls (the last few files).
    """
    if not isinstance(model, ExportedModel):
        model = cached_load(model, backend, threads)
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise BfcnnError(f"an image is H x W x C, got shape {image.shape}")
    if model.channels is not None and image.shape[2] != model.channels:
        raise BfcnnError(f"{model.path.name} takes {model.channels}-channel images, this one has {image.shape[2]}")
    if tile is None or max(image.shape[:2]) <= tile:
        return model(image.transpose(2, 0, 1)[None])[0].transpose(1, 2, 0)
    margin = model.margin if margin is None else margin
    align = model.align if align is None else align
    return tiled_apply(image, model, tile=tile, margin=margin, blend=blend, out=out, align=align)


denoise_file_array = denoise_array  # the name the `bfcnn denoise` command was promised
