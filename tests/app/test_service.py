"""The queue behind the page: uploads decoded or refused with a message, one prediction at a time,
a failing prediction reported without stopping the worker (a fake predictor, no network)."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from panopticdepth.app.service import InferenceService, UploadError, decode_image, job_intrinsics, safe_stem
from panopticdepth.io.pointcloud import default_intrinsics
from panopticdepth.modeling.outputs import PanopticDepthResult, Segment


def _encode(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def test_decode_image_formats_to_rgb():
    rgb = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    assert np.array_equal(decode_image(_encode(rgb), 10**6), rgb)
    gray = rgb[..., 0]
    assert np.array_equal(decode_image(_encode(gray), 10**6), np.repeat(gray[..., None], 3, axis=2))
    rgba = np.concatenate([rgb, np.full((7, 9, 1), 7, np.uint8)], axis=2)
    assert np.array_equal(decode_image(_encode(rgba), 10**6), rgb)
    assert decode_image(_encode(rgb, "JPEG"), 10**6).shape == (7, 9, 3)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"%PDF-1.4 this is not an image", "not an image"),
        (_encode(np.zeros((40, 40, 3), np.uint8))[:60], "corrupt or truncated"),
    ],
)
def test_decode_image_refuses_with_a_message(data, message):
    with pytest.raises(UploadError, match=message):
        decode_image(data, 10**6)


def test_decode_image_pixel_limit_refuses_instead_of_resizing():
    data = _encode(np.zeros((100, 200, 3), np.uint8))
    assert decode_image(data, 20_000).shape == (100, 200, 3)
    with pytest.raises(UploadError, match="megapixels"):
        decode_image(data, 19_999)


def test_job_intrinsics_page_numbers_server_default_and_no_paths(tmp_path):
    assert job_intrinsics("100, 101,50,25", None, 50, 100) == (100.0, 101.0, 50.0, 25.0)
    assert job_intrinsics(None, None, 64, 128) == default_intrinsics(64, 128)
    assert job_intrinsics("", "10,11,12,13", 64, 128) == (10.0, 11.0, 12.0, 13.0)
    camera = tmp_path / "camera.json"
    camera.write_text('{"intrinsic": {"fx": 2000, "fy": 2000, "u0": 1000, "v0": 500}}')
    assert job_intrinsics(None, str(camera), 1024, 2048) == (2000.0, 2000.0, 1000.0, 500.0)
    with pytest.raises(UploadError, match="fx,fy,cx,cy"):
        job_intrinsics(str(camera), None, 1024, 2048)  # a visitor cannot name server files
    with pytest.raises(UploadError, match="four numbers"):
        job_intrinsics("1,2,3", None, 10, 10)


def test_safe_stem():
    assert safe_stem("../../etc/my photo (1).JPG") == "my_photo_1"
    assert safe_stem('a"b\r\nc.png') == "a_b_c"
    assert safe_stem("") == safe_stem(None) == "image"


class FakePredictor:
    """Returns a fixed two-segment result; records overlap; fails on an all-zero image."""

    def __init__(self, delay: float = 0.05) -> None:
        self.delay = delay
        self.active = 0
        self.max_active = 0
        self.calls = 0
        self.lock = threading.Lock()
        self.gate = threading.Event()
        self.gate.set()

    def predict(self, image):
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.calls += 1
        try:
            self.gate.wait(10)
            time.sleep(self.delay)
            if image.max() == 0:
                raise RuntimeError("boom")
            h, w = image.shape[:2]
            pan = torch.zeros((h, w), dtype=torch.int64)
            pan[:, w // 2 :] = 13001
            depth = torch.full((h, w), 10.0)
            segs = [
                Segment(13001, 13, 1, True, 0.9, int((pan == 13001).sum())),
                Segment(0, 0, 0, False, 0.8, int((pan == 0).sum())),
            ]
            return PanopticDepthResult(panoptic=pan, semantic=pan // 1000, depth=depth, segments=segs)
        finally:
            with self.lock:
                self.active -= 1


def _wait(job, timeout=20.0):
    end = time.monotonic() + timeout
    while job.state not in ("done", "error"):
        assert time.monotonic() < end, f"job stuck in {job.state}"
        time.sleep(0.01)
    return job


def test_one_prediction_at_a_time_in_order_with_queue_positions():
    pred = FakePredictor()
    service = InferenceService(pred, warmup=False, max_queue=8)
    try:
        pred.gate.clear()  # hold the first job in the network
        image = np.full((8, 16, 3), 9, np.uint8)
        jobs = [service.submit(image, f"img{k}.png") for k in range(4)]
        end = time.monotonic() + 10
        while jobs[0].state != "running":
            assert time.monotonic() < end
            time.sleep(0.01)
        assert [service.position(j) for j in jobs] == [0, 1, 2, 3]
        assert [j.state for j in jobs[1:]] == ["queued"] * 3
        pred.gate.set()
        for j in jobs:
            _wait(j)
        assert [j.state for j in jobs] == ["done"] * 4
        assert pred.max_active == 1
        assert sorted(jobs, key=lambda j: j.started) == jobs  # first come, first served
        assert jobs[0].views.segments[0]["name"] == "car"
    finally:
        service.close()


def test_failing_prediction_is_reported_and_the_worker_goes_on():
    pred = FakePredictor(delay=0.0)
    service = InferenceService(pred, warmup=False)
    try:
        bad = service.submit(np.zeros((8, 16, 3), np.uint8), "black.png")
        good = service.submit(np.full((8, 16, 3), 5, np.uint8), "ok.png")
        assert _wait(bad).state == "error" and "boom" in bad.error
        assert _wait(good).state == "done"
    finally:
        service.close()


def test_full_queue_refuses_with_a_message_and_old_jobs_expire():
    pred = FakePredictor(delay=0.0)
    service = InferenceService(pred, warmup=False, max_queue=2, keep_jobs=2)
    try:
        pred.gate.clear()
        image = np.full((8, 16, 3), 9, np.uint8)
        first = service.submit(image, "a")
        end = time.monotonic() + 10
        while first.state != "running":
            assert time.monotonic() < end
            time.sleep(0.01)
        queued = [service.submit(image, "b"), service.submit(image, "c")]
        with pytest.raises(UploadError, match="busy"):
            service.submit(image, "d")
        pred.gate.set()
        for j in queued:
            _wait(j)
        later = [service.submit(image, f"e{k}") for k in range(2)]
        for j in later:
            _wait(j)
        time.sleep(0.05)
        assert service.get(first.id) is None  # only the last keep_jobs finished jobs are kept
        assert service.get(later[-1].id) is later[-1]
    finally:
        service.close()


def test_downloads_are_the_predict_files(tmp_path):
    pred = FakePredictor(delay=0.0)
    service = InferenceService(pred, warmup=False)
    try:
        job = _wait(service.submit(np.full((8, 16, 3), 9, np.uint8), "street.png", "20,20,8,4"))
        name, body = service.download(job, "npz")
        assert name == "street.npz"
        with np.load(io.BytesIO(body)) as raw:
            assert raw["panoptic"].dtype == np.int32 and raw["panoptic"].shape == (8, 16)
            assert raw["segments"]["area"].tolist() == [64, 64]
        name, body = service.download(job, "ply")
        assert name == "street.ply" and b"element vertex 128" in body[:400]
        assert b"fx=20.0000" in body[:400]  # the job's intrinsics
        with pytest.raises(KeyError):
            service.download(job, "passwd")
    finally:
        service.close()
