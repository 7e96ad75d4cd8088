"""Main environment: export a tiny bias-free model to TFLite (float32 and uint8 signatures) into DIR, with inputs
and torch's outputs in DIR/expected.npz, for .ci/runtime_check.py to run in the torch-free environment."""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's bfcnn, whatever is installed
import bfcnn  # noqa: E402
from bfcnn.denoise import receptive_radius  # noqa: E402

folder = Path(sys.argv[1])
torch.manual_seed(0)
model = bfcnn.build("model", {"type": "dncnn", "channels": 3, "depth": 5, "filters": 8}).eval()
for io in ("float32", "uint8"):
    spec = {"type": "tflite", "io": io, "filename": f"model_{io}.tflite", "check_sizes": [[16, 16], [40, 24]],
            "check_images": None}
    bfcnn.build("exporter", spec)(model, folder, torch.rand(1, 3, 32, 32))
rng = np.random.default_rng(0)
small = rng.random((2, 3, 37, 29), dtype=np.float32)
image = rng.random((150, 200, 3), dtype=np.float32)  # tiled in the check, compared with one whole-image pass
quantized = np.round(small * 255) / 255
with torch.no_grad():
    expected = {
        "small": small,
        "small_out": model(torch.from_numpy(small)).numpy(),
        "small_uint8_out": np.clip(model(torch.from_numpy(quantized.astype(np.float32))).numpy(), 0, 1),
        "image": image,
        "image_out": model(torch.from_numpy(image.transpose(2, 0, 1)[None].copy())).numpy()[0].transpose(1, 2, 0),
        "margin": np.array(receptive_radius(model)),  # what the report beside the file must say
    }
np.savez(folder / "expected.npz", **expected)
print(f"runtime fixture: exported to {folder}")
