"""Speed of `bfcnn explore` (run from the repository root; needs the explore extra and httpx).

  python benchmarks/bench_explore.py [--clicks 30] [--json FILE]

Through the app's HTTP API (Starlette's TestClient: the same handlers, JSON encoding included, no sockets), with
the shipped default model on the CPU, as `bfcnn explore` runs it (glibc malloc told to keep freed memory):

- click latency on a 512 x 512 photo (scikit-image's astronaut, sigma 25): the filter of one pixel, the first
  click and the distribution over --clicks distinct random pixels (target: under 0.5 s);
- first denoise of a 2 MP photo (the astronaut resized to 1732 x 1155), uploaded as PNG: the upload (decode,
  checks) and the view (seeded noise, tiled denoise), each timed (target: view under 5 s), and, in the same run,
  the bare tiled denoise of the same photo (`Denoiser.denoise`), so the app's overhead is a ratio;
- for reference: the 512 x 512 view, its spread map and net bias, its dimensionality curve.

The load average before and after is printed: on a shared machine say so beside the figures.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's bfcnn, not an installed one

import numpy as np  # noqa: E402


def png(array) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=30)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()

    import torch
    from skimage import data
    from skimage.transform import resize
    from starlette.testclient import TestClient

    from bfcnn import explore_app
    from bfcnn.devices import keep_freed_memory

    keep_freed_memory()
    figures = {"machine": platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        explorer = explore_app.Explorer([None], [], workdir=workdir, device="cpu")
        figures["start_s"] = time.perf_counter() - start  # model load + warm-up
        client = TestClient(explore_app.create_app(explorer))

        def timed(call, *a, **k):
            t = time.perf_counter()
            response = call(*a, **k)
            assert response.status_code == 200, response.text
            return response.json(), time.perf_counter() - t

        view, figures["view_512_s"] = timed(client.post, "/api/views",
                                            json={"image": "s-astronaut", "sigma": 25, "model": "m0"})
        rng = np.random.default_rng(0)
        pixels = list({(int(x), int(y)) for x, y in rng.integers(0, 512, size=(args.clicks + 1, 2))})[:args.clicks + 1]
        first, figures["first_click_s"] = timed(client.get, f"/api/views/{view['id']}/filter?x={pixels[0][0]}&y={pixels[0][1]}")
        times = [timed(client.get, f"/api/views/{view['id']}/filter?x={x}&y={y}")[1] for x, y in pixels[1:]]
        figures["click_s"] = {"median": float(np.median(times)), "p90": float(np.quantile(times, 0.9)),
                              "max": float(max(times)), "n": len(times), "window": [first["width"], first["height"]]}
        _, figures["cached_click_s"] = timed(client.get, f"/api/views/{view['id']}/filter?x={pixels[0][0]}&y={pixels[0][1]}")

        big = (resize(data.astronaut(), (1155, 1732), order=1, anti_aliasing=False) * 255).round().astype(np.uint8)
        body = png(big)
        image, figures["upload_2mp_s"] = timed(client.post, "/api/images", content=body,
                                               headers={"X-Filename": "astronaut_2mp.png"})
        big_view, figures["first_denoise_2mp_s"] = timed(client.post, "/api/views",
                                                         json={"image": image["id"], "sigma": 25, "model": "m0"})
        figures["first_denoise_2mp_model_s"] = big_view["denoise_seconds"]
        t = time.perf_counter()  # the same model on the same photo outside the app, for the ratio
        explorer.models["m0"].denoiser.denoise(big)
        figures["bare_denoise_2mp_s"] = time.perf_counter() - t
        figures["app_over_bare_2mp"] = figures["first_denoise_2mp_s"] / figures["bare_denoise_2mp_s"]
        _, figures["first_click_2mp_s"] = timed(client.get, f"/api/views/{big_view['id']}/filter?x=900&y=600")
        t = time.perf_counter()
        assert client.get(f"/api/views/{big_view['id']}/noisy.png").status_code == 200
        assert client.get(f"/api/views/{big_view['id']}/denoised.png").status_code == 200
        figures["pngs_2mp_s"] = time.perf_counter() - t

        spread, figures["spread_512_s"] = timed(client.get, f"/api/views/{view['id']}/spread")
        figures["net_bias_512"] = spread["net_bias"]
        _, figures["dimensionality_512_s"] = timed(client.get, f"/api/views/{view['id']}/dimensionality?x=256&y=256")
    figures["load_after"] = os.getloadavg()
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
