"""The app over HTTP with a real (tiny, untrained) model: upload, views, downloads, bad uploads,
two uploads at once, large images, static files."""

from __future__ import annotations

import io
import json
import threading

import numpy as np
from PIL import Image

from panopticdepth.app.server import list_examples
from panopticdepth.modeling.predictor import Predictor

from .conftest import http, png_bytes, synthetic_image, wait_job


def _upload(base: str, data: bytes, name: str = "scene.png", extra: str = "") -> tuple[int, dict]:
    status, body, _ = http("POST", f"{base}api/predict?name={name}{extra}", data)
    return status, json.loads(body)


def test_upload_views_and_downloads_match_the_predictor(app_server, tiny_model_dir):
    base = app_server.url
    image = synthetic_image(64, 128, 0)
    status, body = _upload(base, png_bytes(image))
    assert status == 202, body
    state = wait_job(base, body["job"])
    assert state["state"] == "done", state
    res = state["result"]
    assert res["size"] == res["display_size"] == [64, 128]
    assert res["segments"], "the permissive tiny model should emit segments"
    assert sum(s["area"] for s in res["segments"]) <= 64 * 128
    assert all(s["median_depth"] is None or s["median_depth"] > 0 for s in res["segments"])
    for key in ("input", "overlay", "depth"):
        status, png, headers = http("GET", base + res["assets"][key].lstrip("/"))
        assert status == 200 and headers["Content-Type"] == "image/png"
        assert Image.open(io.BytesIO(png)).size == (128, 64)
    status, points, _ = http("GET", base + res["assets"]["points"].lstrip("/"))
    assert status == 200 and len(points) == 17 * res["points"]
    status, pixels, _ = http("GET", base + res["assets"]["pixels"].lstrip("/"))
    assert len(pixels) == 2 * 2 * 64 * 128

    # The npz is what `predict --raw` writes, and the prediction is the predictor's.
    downloads = {d["kind"]: d for d in res["downloads"]}
    kinds = {"panoptic.png", "depth.png", "panoptic_color.png", "depth_color.png", "npz", "ply"}
    assert set(downloads) == kinds
    status, npz, headers = http("GET", base + downloads["npz"]["url"].lstrip("/"))
    assert status == 200 and 'filename="scene.npz"' in headers["Content-Disposition"]
    predictor = Predictor.from_dir(tiny_model_dir, with_instance_masks=False, with_sem_seg=False)
    expected = predictor.predict(image)
    with np.load(io.BytesIO(npz)) as raw:
        assert np.array_equal(raw["panoptic"], expected.panoptic.numpy())
        np.testing.assert_allclose(raw["depth"], expected.depth.numpy(), rtol=1e-6)
        assert raw["segments"]["id"].tolist() == [s["id"] for s in res["segments"]]
    status, ply, _ = http("GET", base + downloads["ply"]["url"].lstrip("/"))
    assert status == 200 and ply.startswith(b"ply\nformat binary_little_endian")
    assert f"element vertex {int((expected.depth.numpy() > 0).sum())}".encode() in ply[:500]
    status, pan_png, _ = http("GET", base + downloads["panoptic.png"]["url"].lstrip("/"))
    pan_rgb = np.asarray(Image.open(io.BytesIO(pan_png)))
    ids = pan_rgb[..., 0].astype(np.int64) * 1000 + pan_rgb[..., 1]
    assert np.array_equal(ids, expected.panoptic.numpy())


def test_bad_uploads_get_messages_and_the_server_lives_on(app_server):
    base = app_server.url
    status, body = _upload(base, png_bytes(synthetic_image(64, 128))[:300], "cut.png")
    assert status == 400 and "corrupt or truncated" in body["error"]
    status, body = _upload(base, b"hello", "notes.txt")
    assert status == 400 and "not an image" in body["error"]
    status, body = _upload(base, b"", "empty.png")
    assert status == 400 and "empty" in body["error"]
    status, body = _upload(base, png_bytes(synthetic_image(16, 32)), "x.png", "&intrinsics=/etc/hostname")
    assert status == 400 and "fx,fy,cx,cy" in body["error"]
    old = app_server.settings.max_upload_mb
    app_server.settings.max_upload_mb = 0.001
    try:
        status, body = _upload(base, png_bytes(synthetic_image(64, 128)), "big.png")
        assert status == 413 and "at most" in body["error"]
    finally:
        app_server.settings.max_upload_mb = old
    status, body, _ = http("GET", f"{base}api/jobs/0123456789abcdef")
    assert status == 404 and "upload the image again" in json.loads(body)["error"]
    status, body, _ = http("GET", f"{base}api/info")
    assert status == 200


def test_two_uploads_at_once_both_finish(app_server):
    base = app_server.url
    results: dict[int, tuple[int, dict]] = {}
    start = threading.Barrier(2)

    def post(k: int) -> None:
        data = png_bytes(synthetic_image(48, 96, 10 + k))
        start.wait()
        results[k] = _upload(base, data, f"user{k}.png")

    threads = [threading.Thread(target=post, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [results[k][0] for k in range(2)] == [202, 202]
    states = [wait_job(base, results[k][1]["job"]) for k in range(2)]
    assert [s["state"] for s in states] == ["done", "done"]
    assert [s["name"] for s in states] == ["user0", "user1"]


def test_large_image_is_resized_for_display_only(app_server):
    base = app_server.url  # this server shows at most 128 px per side
    status, body = _upload(base, png_bytes(synthetic_image(100, 300, 3)), "wide.png")
    assert status == 202
    res = wait_job(base, body["job"])["result"]
    assert res["size"] == [100, 300] and res["display_size"] == [34, 100]
    status, png, _ = http("GET", base + res["assets"]["overlay"].lstrip("/"))
    assert Image.open(io.BytesIO(png)).size == (100, 34)
    npz_url = next(d["url"] for d in res["downloads"] if d["kind"] == "npz")
    status, npz, _ = http("GET", base + npz_url.lstrip("/"))
    with np.load(io.BytesIO(npz)) as raw:
        assert raw["panoptic"].shape == (100, 300) and raw["depth"].shape == (100, 300)


def test_page_scripts_are_local_and_examples_listed(app_server):
    base = app_server.url
    status, page, _ = http("GET", base)
    text = page.decode()
    assert status == 200 and '"three": "/static/vendor/three/three.module.min.js"' in text
    assert "http://" not in text and "https://" not in text  # no CDN: works offline
    for name in ("app.js", "style.css", "vendor/three/three.module.min.js", "vendor/three/three.core.min.js",
                 "vendor/three/OrbitControls.js", "vendor/three/LICENSE"):  # fmt: skip
        status, body, headers = http("GET", f"{base}static/{name}")
        assert status == 200 and body, name
        if name.endswith(".js"):
            assert headers["Content-Type"].startswith("text/javascript")
    status, _, _ = http("GET", f"{base}static/../service.py")
    assert status == 404
    status, _, _ = http("GET", f"{base}static/%2e%2e/service.py")
    assert status == 404
    info = json.loads(http("GET", f"{base}api/info")[1])
    assert info["examples"] == ["scene_0.png", "scene_1.png"]  # notes.txt is not an image
    assert info["classes"][13]["name"] == "car" and info["classes"][13]["thing"]
    status, png, _ = http("GET", f"{base}api/examples/scene_1.png")
    assert status == 200 and Image.open(io.BytesIO(png)).size == (128, 64)
    assert http("GET", f"{base}api/examples/..%2fmodel.safetensors")[0] == 404


def test_examples_of_a_dataset_split_folder_are_its_images(tmp_path):
    from panopticdepth.data.synthetic import write_dataset

    folder = write_dataset(tmp_path, "val", 2, height=16, width=32, seed=1)
    names = [p.name for p in list_examples(folder)]
    assert names == [
        "000000_000000_synth_000000_leftImg8bit.png",
        "000000_000001_synth_000001_leftImg8bit.png",
    ]
    assert list_examples(None) == []
