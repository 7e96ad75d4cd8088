"""Built-in exporters: `exporter(model, output_dir, example) -> dict`, a report that names the files written
(`files`, a list; `variants` maps float32 / float16 / int8 to its file).

Every export checks itself: the exported file, run through bfcnn.runtime (the torch-free runtime users run),
against the torch model on random inputs and on real images at several sizes. A float32 export must agree to
`tolerance` (1e-4 by default; one grey level for `io: uint8`), else the export fails (RunError). The report is
also written next to the files as `<file>.report.json`; its `tiling` (the model's receptive radius and sampling
grid) is what bfcnn.runtime tiles the files with, so large images come out as the whole image would.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
from io import StringIO
import json
import logging
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bfcnn.registry import hookimpl
from bfcnn.errors import BfcnnError, MissingDependencyError, RunError
from bfcnn.layers import OnGridCore, model_channels
from bfcnn.receptive import pad_to, tiling_context

log = logging.getLogger("bfcnn")

ONNX_MODULES = ("onnx", "onnxscript", "onnxruntime")
TFLITE_MODULES = ("litert_torch",)
TFLITE_INTERPRETERS = ("ai_edge_litert", "tflite_runtime")
DEFAULT_SIZES = [[64, 64], [97, 131], [256, 192]]
SAMPLE_IMAGES = ("astronaut.png", "coffee.png")  # ship with scikit-image: the real images when no data folder
NOISE_SIGMA = 25.0
QUALITY_SET = "test/Kodak24"


def missing(modules) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def require(*modules, extra):
    gone = missing(modules)
    if gone:
        raise MissingDependencyError(f"needs {', '.join(gone)}: pip install 'bfcnn[{extra}]'")


def tflite_missing() -> list[str]:
    gone = missing(TFLITE_MODULES)
    if len(missing(TFLITE_INTERPRETERS)) == len(TFLITE_INTERPRETERS):
        gone.append("ai_edge_litert")
    return gone


def data_root():
    """../shared/data beside the repository (or the working directory), where present."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = (base / ".." / "shared" / "data").resolve()
        if candidate.is_dir():
            return candidate
    return None


class Uint8Image(nn.Module):
    """The seed's signature: N x H x W x C uint8 in, uint8 out; scaling, clipping and rounding in the graph."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        x = image.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        y = self.model(x)
        return torch.round(torch.clamp(y * 255.0, 0.0, 255.0)).to(torch.uint8).permute(0, 2, 3, 1)


def to_io(x: np.ndarray, io: str) -> np.ndarray:
    """A float32 N x C x H x W array in the file's own signature."""
    if io == "float32":
        return np.ascontiguousarray(x, dtype=np.float32)
    return np.ascontiguousarray(np.round(np.clip(x, 0, 1) * 255).astype(np.uint8).transpose(0, 2, 3, 1))


def from_io(y: np.ndarray, io: str) -> np.ndarray:
    if io == "float32":
        return np.asarray(y, dtype=np.float32)
    return y.transpose(0, 3, 1, 2).astype(np.float32) / 255.0


def image_files(folder, limit=None) -> list[Path]:
    from bfcnn.images import find_images

    files = find_images(folder) if folder is not None and Path(folder).is_dir() else []
    return files[:limit] if limit else files


def real_images(channels: int, source, limit: int) -> tuple[str, list]:
    """(where from, [(name, H x W x C float32)]): `source` a folder, or "auto" (Kodak24, else scikit-image's)."""
    from bfcnn.images import read_image

    mode = {1: "grayscale", 3: "rgb", 4: "rgba"}.get(channels)
    if mode is None:
        return f"no real images for {channels} channels", []
    if source == "auto":
        root = data_root()
        folder = root / QUALITY_SET if root is not None and (root / QUALITY_SET).is_dir() else None
        if folder is None:
            import skimage

            sample_dir = Path(skimage.__file__).parent / "data"
            files = [sample_dir / n for n in SAMPLE_IMAGES if (sample_dir / n).is_file()][:limit]
            return "scikit-image sample images", [(f.name, read_image(f, mode)) for f in files]
        source = folder
    files = image_files(source, limit)
    if not files:
        raise BfcnnError(f"no images found in {source}")
    return str(source), [(f.name, read_image(f, mode)) for f in files]


def check_inputs(channels: int, sizes, image_source, seed=0) -> list:
    """[(label, float32 N x C x H x W)]: uniform random arrays, then noisy crops of real images, at each size."""
    rng = np.random.default_rng(seed)
    inputs = []
    for i, (h, w) in enumerate(sizes):
        n = 2 if i == 0 else 1  # a batch of two checks the batch dimension too
        inputs.append((f"random {n}x{channels}x{h}x{w}", rng.random((n, channels, h, w), dtype=np.float32)))
    if image_source is None:
        return inputs
    _, images = real_images(channels, image_source, limit=2)
    for name, image in images:
        for h, w in sizes:
            crop = image[:h, :w]
            noisy = crop + rng.normal(0, NOISE_SIGMA / 255, crop.shape).astype(np.float32)
            inputs.append((f"{name} {crop.shape[0]}x{crop.shape[1]} + noise {NOISE_SIGMA:g}",
                           noisy.transpose(2, 0, 1)[None].astype(np.float32)))
    return inputs


def psnr(prediction: np.ndarray, target: np.ndarray) -> float:
    mse = float(np.mean((np.clip(prediction, 0, 1).astype(np.float64) - target) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


class Exporter:
    """What every exporter shares: prepare the module, convert, check against torch, report."""

    backend = ""
    suffix = ""
    resize_hint = ""  # added to a check that fails on a size or batch the file was not converted at
    core_on_grid = False  # convert a model that pads to its grid as its core (OnGridCore), the runtime padding

    def __init__(self, filename=None, io="float32", tolerance=None, check_sizes=None, check_images="auto"):
        self.filename = filename or f"model{self.suffix}"
        self.io = io
        self.tolerance = tolerance if tolerance is not None else (1e-4 if io == "float32" else 1.0)
        self.check_sizes = [list(s) for s in (check_sizes or DEFAULT_SIZES)]
        self.check_images = check_images

    def prepare(self, model, example, core=False):
        """A CPU float32 copy in eval mode (the caller's model is left alone; with `core`, its OnGridCore), wrapped
        for the chosen io, and a sample (on the model's pad_to grid)."""
        model = copy.deepcopy(model).float().cpu().eval()
        channels = example.shape[1] if example is not None else model_channels(model)
        h, w = (int(example.shape[2]), int(example.shape[3])) if example is not None else (64, 64)
        m = pad_to(model)
        sample = torch.rand(2, channels, -(-h // m) * m, -(-w // m) * m)  # a batch of two: the batch stays dynamic
        if core and m > 1:
            model = OnGridCore(model).eval()
        if self.io == "uint8":
            return Uint8Image(model).eval(), torch.from_numpy(to_io(sample.numpy(), "uint8")), channels
        return model, sample, channels

    def convert(self, module, sample, path: Path, report: dict) -> dict:
        """Write the file(s); return {variant: path}, float32 first. May add notes to `report`."""
        raise NotImplementedError

    def reference(self, module, x_io: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x_io)).numpy()

    def compare(self, runner, module, inputs) -> dict:
        """Max abs difference of the exported file against torch on each input (in the file's units)."""
        rows, worst = [], 0.0
        for label, x in inputs:
            x_io = to_io(x, self.io)
            try:
                expected = self.reference(module, x_io)
            except Exception as error:  # e.g. a U-Net that needs sizes divisible by 8: not the export's fault
                rows.append({"input": label, "skipped": f"torch cannot run it: {type(error).__name__}: {error}"})
                continue
            try:
                got = runner.raw(x_io)
            except Exception as error:
                raise RunError(f"{self.backend} export check: {runner.path.name} failed on {label} "
                               f"(torch runs it): {type(error).__name__}: {error}{self.resize_hint}") from error
            if got.shape != expected.shape:
                raise RunError(f"{self.backend} export check: output shape {got.shape} != torch's {expected.shape} "
                               f"on {label}{self.resize_hint}")
            diff = float(np.abs(got.astype(np.float64) - expected.astype(np.float64)).max())
            if not math.isfinite(diff):  # NaN or inf in either output: never a pass
                diff = math.inf
            worst = max(worst, diff)
            rows.append({"input": label, "max_abs_difference": diff})
        if all("skipped" in row for row in rows):
            raise RunError(f"{self.backend} export check: torch itself runs none of the check inputs "
                           f"({rows[0]['skipped'] if rows else 'no inputs'}); set check_sizes")
        return {"max_abs_difference": worst, "inputs": rows}

    def check_files(self, runners: dict, module, channels: int, report: dict):
        """Check the float32 file strictly; measure the others (fp16, int8 variants)."""
        inputs = check_inputs(channels, self.check_sizes, self.check_images)
        report["check"] = {"tolerance": self.tolerance, "units": "grey levels (0..255)" if self.io == "uint8"
                           else "[0, 1] float", "sizes": self.check_sizes}
        for variant, runner in runners.items():
            result = self.compare(runner, module, inputs)
            report["check"][variant] = result
            if variant == "float32" and not result["max_abs_difference"] <= self.tolerance:
                bad = max(result["inputs"], key=lambda r: r.get("max_abs_difference", -1.0))
                raise RunError(f"{self.backend} export check failed: {runner.path.name} differs from torch by "
                               f"{result['max_abs_difference']:.3g} > {self.tolerance:g} (worst on {bad['input']})")

    def __call__(self, model, output_dir, example):
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        path = output_dir / self.filename
        module, sample, channels = self.prepare(model, example, core=self.core_on_grid)
        # converters may rewrite the module they are given: check against a copy of the whole model
        reference = self.prepare(model, example)[0]
        started = time.perf_counter()
        report = {"format": self.backend, "io": self.io,
                  "layout": "N x H x W x C uint8" if self.io == "uint8" else "N x C x H x W float32",
                  "tiling": tiling_context(model)}  # what bfcnn.runtime tiles the files with (see report_of)
        files = self.convert(module, sample, path, report)
        report["files"] = [str(p) for p in files.values()]
        report["variants"] = {variant: str(p) for variant, p in files.items()}
        report["file_bytes"] = {variant: p.stat().st_size for variant, p in files.items()}
        from bfcnn.runtime import load

        runners = {variant: load(p, self.backend) for variant, p in files.items()}
        for runner in runners.values():  # what the report beside the files will tell the runtime
            runner.pad_to = report["tiling"]["pad_to"]
        try:
            self.check_files(runners, reference, channels, report)
            self.quality(runners, reference, channels, report)
        finally:
            report["seconds"] = round(time.perf_counter() - started, 2)
            path.with_name(path.name + ".report.json").write_text(json.dumps(report, indent=2, default=str))
        return report

    def quality(self, runners, module, channels, report):
        """Nothing by default; the TFLite exporter measures what its fp16/int8 variants lose."""


class OnnxExporter(Exporter):
    """ONNX through torch.onnx (dynamo exporter), dynamic N, H and W, checked with onnxruntime."""

    backend, suffix = "onnx", ".onnx"

    def __init__(self, filename="model.onnx", opset=18, io="float32", tolerance=None, check_sizes=None,
                 check_images="auto"):
        require(*ONNX_MODULES, extra="onnx")
        super().__init__(filename, io, tolerance, check_sizes, check_images)
        self.opset = opset

    def convert(self, module, sample, path, report):
        spatial = (1, 2) if self.io == "uint8" else (2, 3)
        dims = {0: torch.export.Dim("batch", min=1, max=4096),
                spatial[0]: torch.export.Dim("height", min=1, max=65536),
                spatial[1]: torch.export.Dim("width", min=1, max=65536)}
        # torch.onnx logs a warning for every torchvision op it cannot register when torchvision is absent:
        # noise for a denoiser that uses none of them
        registration_log = logging.getLogger("torch.onnx._internal.exporter._registration")
        level = registration_log.level
        registration_log.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():  # torch.onnx's own deprecation chatter, not the user's business
                warnings.simplefilter("ignore", FutureWarning)
                torch.onnx.export(module, (sample,), str(path), input_names=["input"], output_names=["output"],
                                  dynamic_shapes=(dims,), opset_version=self.opset, external_data=False,
                                  dynamo=True, verbose=False)
        except Exception as error:
            raise RunError(f"onnx export failed: {type(error).__name__}: {str(error).splitlines()[0]}") from error
        finally:
            registration_log.setLevel(level)
        report["opset"] = self.opset
        report["dynamic_axes"] = ["batch", "height", "width"]
        return {"float32": path}


class TfliteExporter(Exporter):
    """TFLite through litert-torch; fp16 and dynamic-range int8 variants through ai-edge-quantizer."""

    backend, suffix = "tflite", ".tflite"
    core_on_grid = True  # litert-torch 0.10 keeps a converted pad's size; the core of a UNet resizes
    resize_hint = ("; litert-torch 0.10 converts at a fixed size, and the multiscale and pooling UNet models' "
                   "graphs keep that size in their pad, resize and crop ops: export those to "
                   "ONNX")
    VARIANT_SUFFIX = {"float32": "", "float16": "_fp16", "int8": "_int8"}

    def __init__(self, filename="model.tflite", io="float32", variants=("float32",), tolerance=None,
                 check_sizes=None, check_images="auto", quality_images="auto", quality_max_images=None,
                 quality_sigma=NOISE_SIGMA, variant_min_psnr=25.0, dynamic_signature=True):
        gone = tflite_missing()
        if gone:
            raise MissingDependencyError(f"needs {', '.join(gone)}: pip install 'bfcnn[tflite]'")
        super().__init__(filename, io, tolerance, check_sizes, check_images)
        self.variants = ["float32"] + [v for v in dict.fromkeys(variants) if v != "float32"]
        self.quality_images, self.quality_max_images = quality_images, quality_max_images
        self.quality_sigma, self.variant_min_psnr = quality_sigma, variant_min_psnr
        self.dynamic_signature = dynamic_signature

    def convert(self, module, sample, path, report):
        os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")  # litert-torch prints progress lines otherwise
        # litert-torch imports torchao, which logs a warning for each CUDA kernel library a CPU machine lacks
        for name in ("torchao", "torch.utils._pytree"):
            logging.getLogger(name).setLevel(logging.ERROR)
        from bfcnn.runtime import quiet_native_logs

        with quiet_native_logs():  # the converter's C++ info lines (absl, oneDNN, op counts)
            import litert_torch
            return self.convert_quietly(litert_torch, module, sample, path, report)

    def convert_quietly(self, litert_torch, module, sample, path, report):
        spatial = (1, 2) if self.io == "uint8" else (2, 3)
        dims = {spatial[0]: torch.export.Dim("height", min=8, max=16384),
                spatial[1]: torch.export.Dim("width", min=8, max=16384)}
        edge = None
        if self.dynamic_signature:  # dynamic H and W in the file's signature: litert-torch 0.10 lowers
            try:                    # convolutions that way but not yet elementwise ops (e.g. a residual x - f(x))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)
                    edge = litert_torch.convert(module, (sample[:1],), dynamic_shapes=(dims,))
                report["shape_signature"] = "dynamic height and width"
            except Exception as error:
                log.debug("tflite: dynamic-shape conversion failed (%s); converting at a fixed size", error)
        if edge is None:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)
                    edge = litert_torch.convert(module, (sample[:1],))
            except Exception as error2:
                raise RunError(f"tflite conversion failed: {type(error2).__name__}: "
                               f"{str(error2).splitlines()[0] if str(error2) else ''}") from error2
            report["shape_signature"] = (f"fixed at {list(sample[:1].shape)}; the interpreter resizes the input to "
                                         "any N, H and W (resize_tensor_input), which the checks below exercise")
        edge.export(str(path))
        files = {"float32": path}
        for variant in self.variants[1:]:
            target = path.with_name(path.stem + self.VARIANT_SUFFIX[variant] + path.suffix)
            target.write_bytes(quantize(path.read_bytes(), variant))
            files[variant] = target
        return files

    def check_files(self, runners, module, channels, report):
        super().check_files(runners, module, channels, report)
        # the variants are not held to the float tolerance, but a broken one (garbage out) is still an error
        if len(self.variants) < 2:
            return
        for size in self.check_sizes:  # the first size torch runs (the float check has shown there is one)
            _, x = check_inputs(channels, [size], None, seed=1)[0]
            x_io = to_io(x, self.io)
            try:
                expected = np.clip(from_io(self.reference(module, x_io), self.io), 0, 1)
                break
            except Exception:
                continue
        for variant in self.variants[1:]:
            worst = psnr(from_io(runners[variant].raw(x_io), self.io), expected)
            report["check"][variant]["psnr_vs_torch_db"] = round(worst, 2)
            if worst < self.variant_min_psnr:
                raise RunError(f"tflite {variant} variant is broken: {worst:.1f} dB against torch's output "
                               f"< variant_min_psnr {self.variant_min_psnr:g}")

    def quality(self, runners, module, channels, report):
        """PSNR of every variant and of torch on noisy images (Kodak24 when present), and what each variant loses."""
        if len(runners) < 2 or self.quality_images is None:
            return
        source, images = real_images(channels, self.quality_images, self.quality_max_images or 10**6)
        sigma = self.quality_sigma
        scores = {name: [] for name in ["torch", *runners]}
        for index, (name, clean) in enumerate(images):
            noise = np.random.default_rng(index).normal(0, sigma / 255, clean.shape).astype(np.float32)
            x = (clean + noise).transpose(2, 0, 1)[None]
            target = clean.transpose(2, 0, 1)[None]
            x_io = to_io(x, self.io)
            try:
                reference = self.reference(module, x_io)
            except Exception as error:
                log.warning("tflite quality: torch cannot run %s (%s); skipped", name, error)
                continue
            scores["torch"].append(psnr(from_io(reference, self.io), target))
            for variant, runner in runners.items():
                scores[variant].append(psnr(from_io(runner.raw(x_io), self.io), target))
        if not scores["torch"]:
            return
        means = {k: float(np.mean(v)) for k, v in scores.items()}
        report["quality"] = {
            "images": source, "count": len(scores["torch"]), "sigma": sigma,
            "protocol": "Gaussian noise at sigma/255 (one fixed seed per image), unclipped"
                        + (", then quantized to uint8 (io uint8)" if self.io == "uint8" else "")
                        + "; PSNR of the clamped output, data range 1, whole images",
            "psnr_db": {k: round(v, 3) for k, v in means.items()},
            "psnr_loss_db": {k: round(means["torch"] - v, 3) + 0.0 for k, v in means.items() if k != "torch"},
        }


def quantize(model_bytes: bytes, variant: str) -> bytes:
    """fp16 weights (float compute) or dynamic-range int8 (int8 weights, activations quantized on the fly)."""
    require("ai_edge_quantizer", extra="tflite")
    from ai_edge_quantizer import qtyping, quantizer, recipe
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    q = quantizer.Quantizer(model_bytes)
    if variant == "int8":
        q.load_quantization_recipe(recipe.dynamic_wi8_afp32())
    elif variant == "float16":
        q.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                 algorithm_key=AlgorithmName.FLOAT_CASTING)
    else:
        raise BfcnnError(f"unknown tflite variant {variant!r}")
    with contextlib.redirect_stdout(StringIO()):  # the quantizer prints a summary of its own
        return bytes(q.quantize().quantized_model)


CHECK_PROPERTIES = {
    "io": {"enum": ["float32", "uint8"], "default": "float32",
           "description": "float32: N x C x H x W float in [0, 1]; uint8: N x H x W x C uint8 images in and out, "
                          "with scaling, clipping and rounding inside the graph (the seed's signature)"},
    "tolerance": {"type": "number", "exclusiveMinimum": 0,
                  "description": "largest allowed |exported - torch| (default 1e-4; 1 grey level for io uint8)"},
    "check_sizes": {"type": "array", "minItems": 1,
                    "items": {"type": "array", "items": {"type": "integer", "minimum": 8}, "minItems": 2, "maxItems": 2},
                    "description": "[height, width] sizes the check runs at (default 64x64, 97x131, 256x192)"},
    "check_images": {"type": ["string", "null"], "default": "auto",
                     "description": "folder of real images for the check; auto: Kodak24 beside the repository, "
                                    "else scikit-image's samples; null: random inputs only"},
}


@hookimpl
def register_exporters(register):
    onnx_missing = missing(ONNX_MODULES)
    register("onnx", OnnxExporter, {
        "type": "object", "additionalProperties": False,
        "properties": {"filename": {"type": "string", "default": "model.onnx"},
                       "opset": {"type": "integer", "minimum": 18, "default": 18}, **CHECK_PROPERTIES},
        "examples": [{"io": "uint8", "filename": "model_uint8.onnx"}],
    }, "ONNX via torch.onnx, dynamic N/H/W, checked with onnxruntime"
       + (f" (unavailable, needs {', '.join(onnx_missing)}: pip install 'bfcnn[onnx]')" if onnx_missing else ""))
    tflite_gone = tflite_missing()
    register("tflite", TfliteExporter, {
        "type": "object", "additionalProperties": False,
        "properties": {
            "filename": {"type": "string", "default": "model.tflite"},
            "variants": {"type": "array", "items": {"enum": ["float32", "float16", "int8"]}, "uniqueItems": True,
                         "default": ["float32"],
                         "description": "float32 always; float16 (fp16 weights) and int8 (dynamic range) add files"},
            "quality_images": {"type": ["string", "null"], "default": "auto",
                               "description": "images for the variants' PSNR loss; auto: Kodak24 where present"},
            "quality_max_images": {"type": ["integer", "null"], "minimum": 1},
            "quality_sigma": {"type": "number", "minimum": 0, "default": NOISE_SIGMA},
            "variant_min_psnr": {"type": "number", "default": 25.0,
                                 "description": "a variant whose output is further than this PSNR (dB) from torch's fails the export"},
            "dynamic_signature": {"type": "boolean", "default": True,
                                  "description": "try a dynamic H/W signature first (the file is resizable either way)"},
            **CHECK_PROPERTIES,
        },
        "examples": [{"variants": ["float32", "float16", "int8"], "quality_max_images": 4}],
    }, "TFLite via litert-torch (+ fp16/int8 variants), checked with the LiteRT interpreter"
       + (f" (unavailable, needs {', '.join(tflite_gone)}: pip install 'bfcnn[tflite]')" if tflite_gone else ""))
