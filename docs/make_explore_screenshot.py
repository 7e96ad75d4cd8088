"""Take docs/explore.png, the README's picture of `bfcnn explore` (run from the repository root).

  python docs/make_explore_screenshot.py [--chromium /usr/bin/chromium] [--out docs/explore.png]

Starts `bfcnn explore` (shipped default model, 127.0.0.1, a free port), opens it in headless Chromium with
Playwright, shows scikit-image's astronaut at sigma 50, clicks a pixel in a flat patch of the cheek, computes the
spread map and the dimensionality curve, zooms in around the pixel, and saves the page as a 256-colour PNG (small enough to commit).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--out", default=str(REPO / "docs" / "explore.png"))
    parser.add_argument("--pixel", default="190,128", help="x,y of the pixel clicked (default: a flat patch of the cheek)")
    parser.add_argument("--sigma", default="50")
    args = parser.parse_args()

    from PIL import Image
    from playwright.sync_api import sync_playwright

    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONPATH": str(REPO)}
    server = subprocess.Popen([sys.executable, "-m", "bfcnn", "explore", "--port", "0"], stdout=subprocess.PIPE,
                              text=True, cwd=REPO, env=env)
    try:
        line = server.stdout.readline()
        url = line.split("serving at ")[1].split()[0]
        x, y = (int(v) for v in args.pixel.split(","))
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1240, "height": 900})
            page.goto(url)
            idle = "document.body.dataset.ready && document.body.dataset.view && !document.body.dataset.busy"
            page.wait_for_function(idle, timeout=300_000)
            page.fill("#sigma", args.sigma)
            page.wait_for_function(f"window.explore.views.length && window.explore.views[0].sigma === {float(args.sigma)}",
                                   timeout=300_000)
            page.wait_for_function(idle, timeout=300_000)
            box = page.locator("#panel-noisy img").bounding_box()
            page.mouse.click(box["x"] + (x + 0.5) * box["width"] / 512, box["y"] + (y + 0.5) * box["height"] / 512)
            page.wait_for_selector("#filter-0", timeout=120_000)
            for _ in range(3):  # zoom in around the pixel (every panel follows) to show the filter over the image
                page.mouse.move(box["x"] + (x + 0.5) * box["width"] / 512, box["y"] + (y + 0.5) * box["height"] / 512)
                page.mouse.wheel(0, -500)
                page.wait_for_timeout(200)
            page.click("#spread-button")
            page.wait_for_selector("#panel-spread", timeout=600_000)
            page.click("#dims-button")
            page.wait_for_selector("#dims svg", timeout=600_000)
            shot = page.screenshot(full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(30)
    image = Image.open(io.BytesIO(shot)).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    image.save(args.out, optimize=True)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
