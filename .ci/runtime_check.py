"""Torch-free environment (numpy < 2, tflite-runtime): run the files .ci/runtime_fixture.py exported through
bfcnn/runtime.py loaded as a plain module, and compare with torch's outputs saved beside them."""

import importlib.util
import sys
from pathlib import Path

import numpy as np

folder = Path(sys.argv[1])
root = Path(__file__).resolve().parents[1]
assert importlib.util.find_spec("torch") is None, "this environment must not have torch"
spec = importlib.util.spec_from_file_location("bfcnn_runtime", root / "bfcnn" / "runtime.py")
runtime = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runtime)
assert runtime.available_backends() == ["tflite"], runtime.available_backends()
from tflite_runtime.interpreter import Interpreter  # noqa: E402

assert runtime.tflite_interpreter_class() is Interpreter, "expected tflite-runtime's interpreter"

data = np.load(folder / "expected.npz")
failures, checks = [], 0


def check(name, got, expected, tolerance):
    global checks
    checks += 1
    diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
    status = "ok" if diff <= tolerance else "FAILED"
    print(f"  {name}: max abs difference {diff:.3g} (tolerance {tolerance:g}) {status}")
    if status != "ok":
        failures.append(name)


model = runtime.load(folder / "model_float32.tflite")
check("float32 file, batch of 2, 37x29", model(data["small"]), data["small_out"], 1e-4)
assert (model.margin, model.align) == (int(data["margin"]), 1), "the tiling context from the export report"
tiled = runtime.denoise_array(data["image"], folder / "model_float32.tflite", tile=64, blend=8)
check("float32 file, 150x200 image in 64-pixel tiles (the report's margin)", tiled, data["image_out"], 1e-4)
model = runtime.load(folder / "model_uint8.tflite")
assert model.io == "uint8" and model.raw(np.zeros((1, 9, 7, 3), np.uint8)).dtype == np.uint8
check("uint8 file, batch of 2, 37x29", model(data["small"]), data["small_uint8_out"], 1 / 255 + 1e-6)
assert "torch" not in sys.modules
print(f"runtime environment (numpy {np.__version__}, tflite-runtime, no torch): "
      f"{checks - len(failures)} of {checks} checks ok")
sys.exit(1 if failures else 0)
