"""Built-in exporters: `exporter(model, output_dir, example) -> dict`, a report that names the files written."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from bfcnn import hookimpl
from bfcnn.errors import MissingDependencyError, RunError


def require(*modules, extra):
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependencyError(f"needs {', '.join(missing)}: pip install 'bfcnn[{extra}]'")


class OnnxExporter:
    def __init__(self, filename="model.onnx", opset=18, tolerance=1e-4):
        require("onnx", "onnxscript", "onnxruntime", extra="onnx")
        self.filename, self.opset, self.tolerance = filename, opset, tolerance

    def __call__(self, model, output_dir, example):
        import onnxruntime

        path = Path(output_dir) / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        model = model.eval().float().cpu()
        dims = {0: torch.export.Dim("n", min=1), 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
        torch.onnx.export(model, (example,), str(path), input_names=["input"], output_names=["output"],
                          dynamic_shapes={"x": dims}, opset_version=self.opset, external_data=False)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        worst = 0.0
        for shape in (tuple(example.shape), (2, example.shape[1], 37, 53)):
            x = torch.rand(shape)
            with torch.no_grad():
                expected = model(x).numpy()
            got = session.run(None, {"input": x.numpy()})[0]
            worst = max(worst, float(np.abs(got - expected).max()))
        if worst > self.tolerance:
            raise RunError(f"onnx export check failed: max abs difference {worst:.3g} > {self.tolerance}")
        return {"files": [str(path)], "max_abs_difference": worst}


@hookimpl
def register_exporters(register):
    available = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))
    register("onnx", OnnxExporter, {
        "type": "object", "additionalProperties": False,
        "properties": {"filename": {"type": "string"}, "opset": {"type": "integer", "minimum": 17},
                       "tolerance": {"type": "number", "exclusiveMinimum": 0}},
    }, "ONNX via torch.onnx, checked with onnxruntime" + ("" if available else " (unavailable: pip install 'bfcnn[onnx]')"))
