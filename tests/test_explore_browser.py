"""bfcnn explore in a real browser: headless Chromium (Debian's `chromium` package) driven by Playwright.

The test starts the command (`bfcnn explore --port 0`, on 127.0.0.1), opens the page, uploads a test image, sets
the noise level, clicks a pixel and checks that the filter the page shows is the one bfcnn.explain gives.
It skips, saying why, where Playwright or a Chromium browser is not installed (.ci/run installs both).
"""

import io
import json
import os
import shutil

import numpy as np
import pytest
import torch

from _explore_common import serve

pytest.importorskip("starlette", reason="the explore extra is not installed: pip install 'bfcnn[explore]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (the test extra: "
                               "pip install playwright; its own browser download is not needed)")

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path():
    """BFCNN_CHROMIUM, else a Chromium on PATH (Debian's package installs /usr/bin/chromium)."""
    if os.environ.get("BFCNN_CHROMIUM"):
        return os.environ["BFCNN_CHROMIUM"]
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture
def browser():
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium browser installed (apt-get install chromium, or set BFCNN_CHROMIUM)")
    with sync_api.sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        except Exception as error:  # a browser Playwright cannot drive
            pytest.skip(f"Playwright cannot start {executable}: {str(error).splitlines()[0]}")
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the tests here, given a small image to show first (the page opens on a given image)."""
    from PIL import Image
    from skimage import data

    first = tmp_path_factory.mktemp("given") / "first.png"
    Image.fromarray(data.coffee()[100:148, 200:264]).save(first)
    process, url = serve(str(first))
    yield url, first
    process.terminate()
    process.wait(30)


def idle(page, timeout=60_000):
    page.wait_for_function("document.body.dataset.ready && document.body.dataset.view && !document.body.dataset.busy",
                           timeout=timeout)


def test_click_a_pixel_see_its_filter(browser, server, tmp_path):
    url, _ = server
    from PIL import Image
    from skimage import data

    import bfcnn
    from bfcnn.explain import adaptive_filters, noisy_version

    array = data.astronaut()[150:246, 180:308].copy()  # 128 x 96: a face and an edge
    Image.fromarray(array).save(tmp_path / "test image.png")
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    idle(page)  # the first image (the one given on the command line) is denoised on its own
    assert page.inner_text("#image option:checked") == "first.png"

    page.set_input_files("#upload", str(tmp_path / "test image.png"))
    page.wait_for_function("document.querySelector('#image').value.startsWith('u-')")
    idle(page)
    page.fill("#sigma", "40")  # the slider
    page.wait_for_function("window.explore.views.length && window.explore.views[0].sigma === 40")
    idle(page)
    assert "σ = 40" in page.inner_text("#panel-noisy .title")

    x, y = 70, 41
    box = page.locator("#panel-noisy img").bounding_box()  # the image as shown, zoomed to fit
    page.mouse.click(box["x"] + (x + 0.5) * box["width"] / 128, box["y"] + (y + 0.5) * box["height"] / 96)
    page.wait_for_selector("#filter-0")
    shown = page.locator("#filter-0")
    assert (int(shown.get_attribute("data-x")), int(shown.get_attribute("data-y"))) == (x, y)
    origin = int(shown.get_attribute("data-origin-x")), int(shown.get_attribute("data-origin-y"))
    w, h = int(shown.get_attribute("data-width")), int(shown.get_attribute("data-height"))
    gray = np.array(json.loads(shown.get_attribute("data-gray")), dtype=np.float64).reshape(h, w)

    model = bfcnn.load_model().module  # the shipped default, what the page uses without --model
    clean = torch.from_numpy(array.astype(np.float32) / 255).permute(2, 0, 1)[None].contiguous()
    noisy = noisy_version(clean, 40.0, 0)[1]
    expected = adaptive_filters(model, noisy, [(x, y)])[0].sum(0).double()
    window = expected[origin[1]:origin[1] + h, origin[0]:origin[0] + w].numpy()
    np.testing.assert_allclose(gray, window, atol=5e-6)
    assert float(np.abs(window).sum()) >= 0.99 * float(expected.abs().sum())  # the window holds the filter
    weight_sum = float(shown.get_attribute("data-weight-sum"))
    assert weight_sum == pytest.approx(float(expected.sum()), abs=1e-5)
    assert f"weight sum   {weight_sum:.4f}" in shown.inner_text()
    # the heat map is drawn: the canvas has the window's size, its centre pixel coloured by the filter's sign
    canvas = page.locator("#filter-0 canvas.gray")
    assert (int(canvas.get_attribute("width")), int(canvas.get_attribute("height"))) == (w, h)
    png = Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")
    assert len(np.unique(np.asarray(png).reshape(-1, 3), axis=0)) > 10  # a heat map, not a blank canvas
    # zoom in one panel: every panel follows
    page.mouse.move(box["x"] + 20, box["y"] + 20)
    page.mouse.wheel(0, -400)
    transforms = page.eval_on_selector_all(".stage", "stages => stages.map(s => s.style.transform)")
    assert len(set(transforms)) == 1 and len(transforms) >= 2
    assert not errors, errors


def test_bad_upload_is_a_message_in_the_page(browser, server, tmp_path):
    url, _ = server
    (tmp_path / "notes.png").write_text("not an image")
    page = browser.new_page()
    page.goto(url)
    idle(page)
    page.set_input_files("#upload", str(tmp_path / "notes.png"))
    page.wait_for_selector("#message.shown")
    assert "notes.png is not a readable image" in page.inner_text("#message")
    page.fill("#sigma", "10")  # the page and the server go on
    page.wait_for_function("window.explore.views[0].sigma === 10")
    idle(page)


def test_two_browsers_at_once(browser, server):
    """Two browser contexts (separate sessions) at two noise levels, clicking at the same time: each page shows
    the filter of its own noisy image."""
    import bfcnn
    from bfcnn.explain import adaptive_filters, noisy_version
    from bfcnn.images import read_image

    url, first = server
    sigmas = (10.0, 60.0)
    pages = []
    for sigma in sigmas:
        page = browser.new_context().new_page()
        page.goto(url)
        idle(page)
        page.fill("#sigma", f"{sigma:g}")
        pages.append(page)
    for page, sigma in zip(pages, sigmas):
        page.wait_for_function(f"window.explore.views[0].sigma === {sigma}")
        idle(page)
    for page in pages:  # both clicks go out before either answer is read
        box = page.locator("#panel-noisy img").bounding_box()
        page.mouse.click(box["x"] + 30.5 * box["width"] / 64, box["y"] + 20.5 * box["height"] / 48)
    model = bfcnn.load_model().module
    clean = torch.from_numpy(read_image(first)).permute(2, 0, 1)[None].contiguous()
    shown_filters = []
    for page, sigma in zip(pages, sigmas):
        page.wait_for_selector("#filter-0")
        shown = page.locator("#filter-0")
        assert (int(shown.get_attribute("data-x")), int(shown.get_attribute("data-y"))) == (30, 20)
        expected = adaptive_filters(model, noisy_version(clean, sigma, 0)[1], [(30, 20)])[0].sum(0).double()
        x0, y0 = int(shown.get_attribute("data-origin-x")), int(shown.get_attribute("data-origin-y"))
        w, h = int(shown.get_attribute("data-width")), int(shown.get_attribute("data-height"))
        gray = np.array(json.loads(shown.get_attribute("data-gray"))).reshape(h, w)
        np.testing.assert_allclose(gray, expected[y0:y0 + h, x0:x0 + w].numpy(), atol=5e-6)
        assert float(shown.get_attribute("data-weight-sum")) == pytest.approx(float(expected.sum()), abs=1e-5)
        shown_filters.append(gray)
    a, b = shown_filters  # the two sessions show different filters
    assert a.shape != b.shape or np.abs(a - b).max() > 1e-3
