"""bfcnn explore: the web app's API (Starlette's TestClient, no server, no browser) and the command that serves it.

The page itself, in a real browser, is tested in test_explore_browser.py.
"""

import base64
import io
import json
import os
import subprocess
import sys
import threading
import urllib.request

import numpy as np
import pytest
import torch

pytest.importorskip("starlette", reason="the explore extra is not installed: pip install 'bfcnn[explore]'")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx (the test extra)")

import bfcnn  # noqa: E402
from bfcnn import explore_app  # noqa: E402
from bfcnn.checkpoint import save_model  # noqa: E402
from bfcnn.explain import adaptive_filters, effective_dimensionality, noisy_version, spread_map  # noqa: E402
from _explore_common import serve  # noqa: E402
from conftest import REPO  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

TINY = {"type": "dncnn", "channels": 3, "depth": 3, "filters": 4}


def png(array) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def photo(height=40, width=56, top=180, left=200):
    from skimage import data

    return data.astronaut()[top:top + height, left:left + width].copy()


def floats(text, shape):
    return np.frombuffer(base64.b64decode(text), "<f4").reshape(shape)


@pytest.fixture(scope="module")
def shipped():
    return bfcnn.load_model()  # the shipped default model, as `bfcnn explore` uses without --model


@pytest.fixture
def explorer(tmp_path):
    explorer = explore_app.Explorer([None], [], workdir=tmp_path / "app", device="cpu")
    return explorer


@pytest.fixture
def client(explorer):
    return TestClient(explore_app.create_app(explorer))


def upload(client, array, name="crop.png"):
    response = client.post("/api/images", content=png(array), headers={"X-Filename": name})
    assert response.status_code == 200, response.text
    return response.json()


def upload_model(client, folder, spec, name, seed=0):
    """A model with random weights (seeded), saved as `name` and uploaded in the page: (model, response)."""
    torch.manual_seed(seed)
    model = bfcnn.build("model", spec).eval()
    save_model(folder / name, model, spec)
    return model, client.post("/api/models", content=(folder / name).read_bytes(), headers={"X-Filename": name})


def make_view(client, image, sigma, model="m0"):
    response = client.post("/api/views", json={"image": image, "sigma": sigma, "model": model})
    assert response.status_code == 200, response.text
    return response.json()


def expected_rows(module, array, sigma, pixel, seed=0):
    clean = torch.from_numpy(array.astype(np.float32) / 255).permute(2, 0, 1)[None].contiguous()
    noisy = noisy_version(clean, sigma, seed)[1] if sigma > 0 else clean
    return adaptive_filters(module, noisy, [pixel])[0], noisy


def check_filter(result, rows):
    """The page's filter window equals the row of J that bfcnn.explain gives, and holds all of its weight."""
    c, h, w = result["channels"], result["height"], result["width"]
    x0, y0 = result["origin"]
    window = rows[:, y0:y0 + h, x0:x0 + w].numpy()
    np.testing.assert_allclose(floats(result["per_channel"], (c, h, w)), window, atol=2e-6)
    np.testing.assert_allclose(floats(result["gray"], (h, w)), window.sum(0), atol=5e-6)
    assert result["weight_sum"] == pytest.approx(float(rows.sum()), abs=1e-5)
    assert result["channel_sums"] == pytest.approx(rows.double().sum(dim=(1, 2)).tolist(), abs=1e-5)
    # the window holds the filter: at least 99% of sum |w| (its 99% radius and 2 pixels more)
    assert float(np.abs(window).sum()) >= 0.99 * float(rows.abs().sum())
    r = result["radius_99"] + 2
    assert max(w, h) <= 2 * max(r, explore_app.MIN_WINDOW) + 1


def test_page_and_state(client):
    page = client.get("/")
    assert page.status_code == 200
    for element in ('id="sigma"', 'id="upload"', 'id="as-given"', 'id="image"', 'id="model-upload"',
                    'id="spread-button"', 'id="dims-button"'):
        assert element in page.text
    state = client.get("/api/state").json()
    from bfcnn.denoise import DEFAULT_MODEL

    assert [m["name"] for m in state["models"]] == [DEFAULT_MODEL]
    assert state["models"][0]["bias_free"] is True
    names = {i["name"] for i in state["images"] if i["source"] == "sample"}
    assert {"astronaut", "coffee", "chelsea"} <= names
    assert state["max_megapixels"] == 24.0


def test_click_gives_the_row_of_the_jacobian(client, shipped):
    array = photo()
    image = upload(client, array)
    assert (image["width"], image["height"]) == (56, 40)
    view = make_view(client, image["id"], 30)
    assert (view["width"], view["height"], view["sigma"]) == (56, 40, 30.0)
    for pixel in [(20, 17), (0, 0), (55, 39), (3, 30)]:  # inside, corners, near an edge
        result = client.get(f"/api/views/{view['id']}/filter?x={pixel[0]}&y={pixel[1]}").json()
        rows, noisy = expected_rows(shipped.module, array, 30, pixel)
        check_filter(result, rows)
        assert (result["x"], result["y"], result["cached"]) == (*pixel, False)
        assert result["noisy_value"] == pytest.approx(noisy[0, :, pixel[1], pixel[0]].tolist(), abs=1e-6)
    again = client.get(f"/api/views/{view['id']}/filter?x=3&y=30").json()
    assert again["cached"] is True and again["gray"] == result["gray"]


def test_denoised_image_and_download(client, shipped, explorer, tmp_path):
    from PIL import Image

    array = photo(33, 47)
    image = upload(client, array)
    view = make_view(client, image["id"], None)  # as given: no noise added
    noisy = np.asarray(Image.open(io.BytesIO(client.get(f"/api/views/{view['id']}/noisy.png").content)))
    np.testing.assert_array_equal(noisy, array)
    expected = shipped.denoise(array.astype(np.float32) / 255)
    response = client.get(f"/api/views/{view['id']}/download")
    assert response.status_code == 200 and "attachment" in response.headers["content-disposition"]
    assert "as_given" in response.headers["content-disposition"]
    downloaded = np.asarray(Image.open(io.BytesIO(response.content)))
    np.testing.assert_array_equal(downloaded, np.round(np.clip(expected, 0, 1) * 255).astype(np.uint8))
    shown = np.asarray(Image.open(io.BytesIO(client.get(f"/api/views/{view['id']}/denoised.png").content)))
    np.testing.assert_array_equal(shown, downloaded)
    # a noise level: seeded, the same noise as bfcnn explain adds
    view = make_view(client, image["id"], 50)
    noisy = np.asarray(Image.open(io.BytesIO(client.get(f"/api/views/{view['id']}/noisy.png").content)))
    _, expected_noisy = expected_rows(shipped.module, array, 50, (0, 0))
    np.testing.assert_array_equal(noisy, np.round(np.clip(expected_noisy[0].permute(1, 2, 0).numpy(), 0, 1) * 255))


def test_spread_map_and_net_bias(client, shipped):
    array = photo(24, 30)
    view = make_view(client, upload(client, array)["id"], 25)
    info = client.get(f"/api/views/{view['id']}/spread").json()
    _, noisy = expected_rows(shipped.module, array, 25, (0, 0))
    expected = spread_map(shipped.module, noisy)
    assert info["net_bias"] == pytest.approx(expected["net_bias"], abs=1e-7) and info["net_bias"] < 1e-5
    finite = expected["spread"][torch.isfinite(expected["spread"])]
    assert info["median_spread"] == pytest.approx(float(finite.median()), rel=0.05)
    assert info["median_weight_sum"] == pytest.approx(float(expected["weight_sum"].median()), rel=0.05)
    for which in ("spread", "weight_sum"):
        response = client.get(f"/api/views/{view['id']}/{which}.png")
        assert response.status_code == 200 and response.content[:4] == b"\x89PNG"


def test_dimensionality_against_sigma(client, shipped):
    array = photo(20, 20)
    view = make_view(client, upload(client, array)["id"], 40)
    result = client.get(f"/api/views/{view['id']}/dimensionality?x=5&y=5").json()
    assert result["crop"] == [0, 0, 20, 20] and result["dimensions"] == 1200
    sigmas = [level["sigma"] for level in result["levels"]]
    assert 40.0 in sigmas and sigmas == sorted(sigmas)
    clean = torch.from_numpy(array.astype(np.float32) / 255).permute(2, 0, 1)[None].contiguous()
    noise = noisy_version(clean, 0, 0)[0]
    level = result["levels"][sigmas.index(40.0)]
    expected = effective_dimensionality(shipped.module, clean + 40 / 255 * noise, probes=result["probes"], seed=0)
    assert level["frobenius"] == pytest.approx(expected["frobenius"], rel=1e-4)
    # a denoiser keeps fewer dimensions the noisier its input
    assert result["levels"][0]["fraction"] > result["levels"][-1]["fraction"]


def test_bad_input_is_a_message_and_the_server_keeps_serving(client, explorer):
    def refused(response, status, *words):
        assert response.status_code == status, response.text
        message = response.json()["error"]
        for word in words:
            assert word in message, message
        assert "Traceback" not in message and str(explorer.workdir) not in message
        assert client.get("/api/state").status_code == 200  # still serving

    refused(client.post("/api/images", content=b"GIF89a not really", headers={"X-Filename": "x.gif"}), 400,
            "x.gif", "not a readable image")
    refused(client.post("/api/images", content=b"", headers={"X-Filename": "empty.png"}), 400, "empty")
    refused(client.post("/api/models", content=b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage",
                        headers={"X-Filename": "m.safetensors"}), 400, "m.safetensors", "not a bfcnn model")
    refused(client.post("/api/models", content=b"weights", headers={"X-Filename": "m.pt"}), 400, "not a bfcnn model")
    view = make_view(client, upload(client, photo(16, 16))["id"], 10)
    kept = set((explorer.workdir / "uploads").iterdir())
    assert len(kept) == 1  # the accepted upload only
    refused(client.get(f"/api/views/{view['id']}/filter?x=16&y=0"), 400, "outside")
    refused(client.get(f"/api/views/{view['id']}/filter?x=a&y=0"), 400, "integers")
    refused(client.post("/api/views", json={"image": view["image"], "sigma": 101, "model": "m0"}), 400, "sigma")
    refused(client.post("/api/views", json={"image": "nope", "sigma": 5, "model": "m0"}), 400, "no image")
    refused(client.get("/api/views/vdeadbeef/filter?x=1&y=1"), 404, "no longer cached")
    explorer.max_pixels = 200  # the size limit, read from the header before decoding
    refused(client.post("/api/images", content=png(photo(16, 16)), headers={"X-Filename": "big.png"}), 400,
            "big.png", "16 x 16", "over the limit")
    explorer.max_bytes = 100  # the upload limit: refused while streaming
    refused(client.post("/api/images", content=png(photo(16, 16)), headers={"X-Filename": "big.png"}), 413,
            "upload limit")
    assert set((explorer.workdir / "uploads").iterdir()) == kept  # refused uploads leave nothing behind


def test_a_second_model_uploaded_in_the_page(client, tmp_path):
    model, response = upload_model(client, tmp_path, TINY, "tiny.safetensors")
    assert response.status_code == 200, response.text
    info = response.json()
    assert info["name"] == "tiny.safetensors" and info["receptive_radius"] == 3
    assert [m["id"] for m in client.get("/api/state").json()["models"]] == ["m0", info["id"]]
    array = photo(20, 24)
    view = make_view(client, upload(client, array)["id"], 20, info["id"])
    result = client.get(f"/api/views/{view['id']}/filter?x=10&y=9").json()
    check_filter(result, expected_rows(model, array, 20, (10, 9))[0])


def test_a_model_without_a_known_receptive_field_uses_the_whole_image(client, explorer, shipped):
    entry = explorer.models["m0"]
    entry.context = {**entry.context, "exact": False}  # as for a plugin model that bfcnn cannot measure
    array = photo(30, 30)
    view = make_view(client, upload(client, array)["id"], 15)
    result = client.get(f"/api/views/{view['id']}/filter?x=12&y=14").json()
    assert result["support"] == "whole image"
    check_filter(result, expected_rows(shipped.module, array, 15, (12, 14))[0])


def test_two_browsers_at_once(explorer, shipped):
    """Two clients, each with its own image and noise level, clicking in parallel threads: each gets its own."""
    app = explore_app.create_app(explorer)
    arrays = [photo(24, 32, 100, 100), photo(32, 24, 250, 300)]
    results, errors = {}, []

    def browse(k):
        try:
            with TestClient(app) as client:
                view = make_view(client, upload(client, arrays[k], f"image{k}.png")["id"], 10 + 30 * k)
                results[k] = [client.get(f"/api/views/{view['id']}/filter?x={x}&y={x}").json() for x in range(0, 20, 4)]
        except Exception as error:  # reported below, with the thread's error
            errors.append(error)

    threads = [threading.Thread(target=browse, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    for k in range(2):
        for result in results[k]:
            x = result["x"]
            check_filter(result, expected_rows(shipped.module, arrays[k], 10 + 30 * k, (x, x))[0])


def test_nothing_is_written_outside_the_apps_folder(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    explorer = explore_app.Explorer([None], [], workdir=tmp_path / "app", device="cpu")
    client = TestClient(explore_app.create_app(explorer))
    view = make_view(client, upload(client, photo(16, 20))["id"], 25)
    assert client.get(f"/api/views/{view['id']}/download").status_code == 200
    assert client.get(f"/api/views/{view['id']}/spread").status_code == 200
    assert not list(cwd.iterdir())
    written = sorted(p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*") if p.is_file())
    assert written and set(written) == {"app"}


def test_given_images_and_their_errors(tmp_path):
    from bfcnn.errors import BfcnnError

    path = tmp_path / "given.png"
    path.write_bytes(png(photo(12, 14)))
    explorer = explore_app.Explorer([None], [path], workdir=tmp_path / "app")
    given = [i for i in explorer.state()["images"] if i["source"] == "file"]
    assert given == [{"id": "f0", "name": "given.png", "source": "file", "width": 14, "height": 12}]
    (tmp_path / "bad.png").write_bytes(b"no")
    with pytest.raises(BfcnnError, match="bad.png"):
        explore_app.Explorer([None], [tmp_path / "bad.png"], workdir=tmp_path / "app2")
    with pytest.raises(BfcnnError, match="over the limit"):
        explore_app.Explorer([None], [path], workdir=tmp_path / "app3", max_megapixels=1e-4)
    (tmp_path / "model.safetensors").write_bytes(b"not a model")
    with pytest.raises(BfcnnError, match="not a bfcnn model"):
        explore_app.Explorer([str(tmp_path / "model.safetensors")], [], workdir=tmp_path / "app4")


# ----------------------------------------------------------------------------------------------------------------
# the command

def test_bad_arguments_exit_2(tmp_path, capsys):
    from bfcnn import cli

    (tmp_path / "bad.safetensors").write_bytes(b"not a model")
    assert cli.main(["explore", "--model", str(tmp_path / "bad.safetensors"), "--port", "0"]) == 2
    assert "not a bfcnn model" in capsys.readouterr().err
    assert cli.main(["explore", str(tmp_path / "missing.png"), "--port", "0"]) == 2
    assert "image not found" in capsys.readouterr().err
    assert cli.main(["explore", "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err
    assert cli.main(["explore", "--max-megapixels", "0"]) == 2
    assert "--max-megapixels" in capsys.readouterr().err


def test_without_the_extra_the_command_says_what_to_install(monkeypatch, capsys):
    from bfcnn import cli

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if the explore extra were not installed
    assert cli.main(["explore", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "uvicorn is missing" in err and "pip install 'bfcnn[explore]'" in err


def test_the_cli_does_not_import_the_web_stack():
    code = "import sys, bfcnn.cli; bfcnn.cli.build_parser(); print(sorted({m.split('.')[0] for m in sys.modules} & " \
           "{'starlette', 'uvicorn', 'httpx', 'playwright'}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.strip() == "[]", out.stderr


def test_the_command_serves_on_localhost(tmp_path):
    process, url = serve(env={"TMPDIR": str(tmp_path)})
    try:
        assert url.startswith("http://127.0.0.1:")
        state = json.loads(urllib.request.urlopen(url + "api/state", timeout=30).read())
        from bfcnn.denoise import DEFAULT_MODEL

        assert state["models"][0]["name"] == DEFAULT_MODEL
        assert b"bfcnn explore" in urllib.request.urlopen(url, timeout=30).read()
    finally:
        process.terminate()
        process.wait(30)
    assert process.returncode == 0, process.stderr.read()
    assert not list(tmp_path.iterdir())  # its temporary folder is gone


def test_views_are_forgotten_oldest_first(client, monkeypatch):
    monkeypatch.setattr(explore_app, "MAX_VIEWS", 2)
    image = upload(client, photo(12, 12))["id"]
    views = [make_view(client, image, sigma)["id"] for sigma in (5, 10, 15)]
    assert client.get(f"/api/views/{views[0]}/filter?x=1&y=1").status_code == 404
    assert all(client.get(f"/api/views/{v}/filter?x=1&y=1").status_code == 200 for v in views[1:])
    monkeypatch.setattr(explore_app, "MAX_VIEW_BYTES", 1)  # by memory: only the newest stays
    newest = make_view(client, image, 20)["id"]
    assert client.get(f"/api/views/{views[2]}/filter?x=1&y=1").status_code == 404
    assert client.get(f"/api/views/{newest}/filter?x=1&y=1").status_code == 200


@pytest.mark.parametrize("spec", [
    {"type": "resnet", "levels": 3, "filters": 4, "no_layers": 1, "channels": 3},  # a pyramid: radius 40, grid 4
    {"type": "unet", "channels": 3, "filters": 4, "downsamplings": 2},  # pooling: radius 27, grid 4
])
def test_resampling_models_get_the_same_row_from_their_crop(client, tmp_path, spec):
    """The crop of a click starts on the model's grid and holds its radius: the row equals the whole image's."""
    model, response = upload_model(client, tmp_path, spec, "resampling.safetensors")
    info = response.json()
    array = photo(110, 120)
    view = make_view(client, upload(client, array)["id"], 25, info["id"])
    for pixel in [(61, 50), (117, 3)]:
        result = client.get(f"/api/views/{view['id']}/filter?x={pixel[0]}&y={pixel[1]}").json()
        assert result["support"] == "receptive field" and result["width"] < 120  # a crop, not the whole image
        check_filter(result, expected_rows(model, array, 25, pixel)[0])


def test_a_gray_model_sees_the_image_in_gray(client, tmp_path):
    from PIL import Image

    spec = {**TINY, "channels": 1}
    model, response = upload_model(client, tmp_path, spec, "gray.safetensors", seed=1)
    info = response.json()
    array = photo(18, 22)
    view = make_view(client, upload(client, array)["id"], 30, info["id"])
    assert view["channels"] == 1
    gray = np.asarray(Image.fromarray(array).convert("L"))[..., None]  # what bfcnn.images reads for a gray model
    result = client.get(f"/api/views/{view['id']}/filter?x=7&y=9").json()
    assert result["channels"] == 1
    check_filter(result, expected_rows(model, gray, 30, (7, 9))[0])
