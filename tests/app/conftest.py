"""Fixtures of the web app tests: a tiny untrained model, and a running server on a free port."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

# Untrained weights segment nothing at the released thresholds; these let an untrained small
# model emit a few segments with depth, so that every view has something to draw. top_num keeps
# the post-processing cheap.
PERMISSIVE = [
    "model.inference.thing_threshold=0.0",
    "model.inference.top_num=10",
    "model.inference.stuff_threshold=0.0",
    "model.inference.stuff_region_threshold=0.0",
    "model.inference.rescore_min=0.0",
    "model.inference.combine_instance_threshold=0.0",
    "model.inference.stuff_area_limit=16",
]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The demo's architecture (configs/synthetic/small_cpu.yaml), random weights, seed 0."""
    import torch

    from panopticdepth.checkpoint.model_dir import save_model_dir
    from panopticdepth.config import load_config
    from panopticdepth.demo import find_demo_config
    from panopticdepth.modeling.network import build_model

    cfg = load_config(find_demo_config(), PERMISSIVE)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("app_model") / "model"
    save_model_dir(out, build_model(cfg.model), cfg)
    return out


def synthetic_image(h: int, w: int, index: int = 0) -> np.ndarray:
    """A held-out-like synthetic street scene (the demo's renderer, a seed no test trains on)."""
    from panopticdepth.data.synthetic.writer import generate

    return generate(4242, index, h, w).image


def png_bytes(image: np.ndarray) -> bytes:
    from panopticdepth.app.views import png_bytes as encode

    return encode(image)


def http(method: str, url: str, data: bytes | None = None, timeout: float = 60.0) -> tuple[int, bytes, dict]:
    """(status, body, headers) without raising on 4xx/5xx."""
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def wait_job(base: str, job_id: str, timeout: float = 180.0) -> dict:
    """Poll a job until it is done or failed."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status, body, _ = http("GET", f"{base}api/jobs/{job_id}")
        assert status == 200, body
        state = json.loads(body)
        if state["state"] in ("done", "error"):
            return state
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


@pytest.fixture(scope="module")
def app_server(tiny_model_dir, tmp_path_factory):
    """A server on a free localhost port (display limit 128 px) with two example images."""
    from panopticdepth.app import make_server
    from panopticdepth.io.formats import write_image_rgb
    from panopticdepth.modeling.predictor import Predictor

    examples = tmp_path_factory.mktemp("examples")
    for k in range(2):
        write_image_rgb(examples / f"scene_{k}.png", synthetic_image(64, 128, k))
    (examples / "notes.txt").write_text("not an image")
    predictor = Predictor.from_dir(tiny_model_dir, with_instance_masks=False, with_sem_seg=False)
    server = make_server(predictor, port=0, examples=examples, model_name="tiny", max_display_side=128)
    server.start_background()
    yield server
    server.shutdown_all()
