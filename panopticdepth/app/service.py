"""One model, one worker thread, a queue of jobs: what the web server calls into.

The network runs on a single background thread per model, so two uploads at the same time are
queued (each page sees its place in the queue) instead of competing for the CPU or for the
model's state; the HTTP threads only decode uploads and serve finished bytes. A failing job is
reported on its page and the worker carries on with the next one.

Downloads are written on first request with the same writers as `panopticdepth predict --raw
--pointcloud` (`cli.predict.write_outputs`), at the uploaded image's full resolution.
"""

from __future__ import annotations

import argparse
import io
import logging
import queue
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PanopticDepthError
from ..io.pointcloud import Intrinsics, parse_intrinsics
from ..label_space import CITYSCAPES
from .views import Views, build_views

logger = logging.getLogger(__name__)

# Download name -> (file written by write_outputs or here, label on the page).
DOWNLOADS = {
    "panoptic.png": ("{stem}_panoptic.png", "panoptic PNG (R = class, G = instance)"),
    "depth.png": ("{stem}_depth.png", "depth PNG (uint16, metres x 256)"),
    "panoptic_color.png": ("{stem}_panoptic_color.png", "coloured panoptic PNG"),
    "depth_color.png": ("{stem}_depth_color.png", "coloured depth PNG"),
    "npz": ("{stem}.npz", "raw arrays (.npz)"),
    "ply": ("{stem}.ply", "point cloud (.ply)"),
}
_NUMERIC_INTRINSICS = re.compile(r"^[0-9eE+\-., ]*$")


class UploadError(PanopticDepthError):
    """A problem with what the user sent; its message is shown on the page."""


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Uploaded bytes -> (H, W, 3) uint8 RGB, camera EXIF orientation applied (as `predict`)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise UploadError("the upload is empty")
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if max_pixels and w * h > max_pixels:
                raise UploadError(
                    f"the image has {w}x{h} = {w * h / 1e6:.1f} megapixels; this server accepts at most "
                    f"{max_pixels / 1e6:.1f} (serve --max-megapixels)"
                )
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb = np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except UploadError:
        raise
    except UnidentifiedImageError:
        raise UploadError(
            "this file is not an image that Pillow can read (PNG, JPEG, BMP, WebP, ...)"
        ) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UploadError(f"the image is corrupt or truncated: {err}") from None
    if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise UploadError(f"the image has no pixels (shape {rgb.shape})")
    return rgb


def safe_stem(name: str | None) -> str:
    """A file-system and header safe stem from an uploaded file name."""
    stem = Path(str(name or "")).stem
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-")[:64]
    return stem or "image"


def job_intrinsics(spec: str | None, default_spec: str | None, h: int, w: int) -> Intrinsics:
    """Intrinsics for one upload: the page's 'fx,fy,cx,cy' if given, else the server's `--intrinsics`
    (numbers or a camera JSON), else the Cityscapes camera scaled to the image (as `predict`)."""
    if spec is not None and spec.strip():
        # Only numbers from the page: a path here would let a visitor probe the server's files.
        if not _NUMERIC_INTRINSICS.match(spec):
            raise UploadError(f"intrinsics {spec!r}: expected 'fx,fy,cx,cy' in pixels")
        try:
            return parse_intrinsics(spec, h, w)
        except PanopticDepthError as err:
            raise UploadError(str(err)) from None
    return parse_intrinsics(default_spec, h, w)


@dataclass
class Job:
    """One upload from submission to its finished views and downloads."""

    id: str
    name: str
    image: np.ndarray | None
    intrinsics: Intrinsics
    state: str = "queued"  # queued -> running -> done | error
    stage: str = "waiting in the queue"
    error: str | None = None
    created: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    result: Any = None  # PanopticDepthResult
    views: Views | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    files_dir: Path | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class InferenceService:
    """A `Predictor` behind a FIFO queue served by one worker thread."""

    def __init__(
        self,
        predictor: Any,
        max_display_side: int = 1024,
        max_queue: int = 8,
        keep_jobs: int = 16,
        intrinsics: str | None = None,
        class_names: list[str] | None = None,
        warmup: bool = True,
    ) -> None:
        self.predictor = predictor
        self.max_display_side = int(max_display_side)
        self.max_queue = int(max_queue)
        self.keep_jobs = max(int(keep_jobs), 1)
        self.default_intrinsics = intrinsics
        self.class_names = class_names
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._pending: list[str] = []  # queued job ids, oldest first
        self._lock = threading.Lock()
        self._tmp = Path(tempfile.mkdtemp(prefix="panopticdepth-app-"))
        self._closed = False
        self._warmup = warmup
        self._worker = threading.Thread(target=self._work, name="panopticdepth-inference", daemon=True)
        self._worker.start()

    # -- submission and status -------------------------------------------------------------
    def submit(self, image: np.ndarray, name: str, intrinsics_spec: str | None = None) -> Job:
        """Queue a decoded image; raises `UploadError` when the queue is full or the camera is bad."""
        h, w = image.shape[:2]
        intr = job_intrinsics(intrinsics_spec, self.default_intrinsics, h, w)
        job = Job(id=uuid.uuid4().hex, name=safe_stem(name), image=image, intrinsics=intr)
        with self._lock:
            if self._closed:
                raise UploadError("the server is shutting down")
            if len(self._pending) >= self.max_queue:
                raise UploadError(
                    f"the server is busy ({len(self._pending)} images waiting); try again shortly"
                )
            self._jobs[job.id] = job
            self._pending.append(job.id)
            self._evict_locked()
        self._queue.put(job)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def position(self, job: Job) -> int:
        """How many queued or running jobs are ahead of `job` (0 when it runs or is finished)."""
        with self._lock:
            if job.id not in self._pending:
                return 0
            ahead = self._pending.index(job.id)
            running = any(j.state == "running" for j in self._jobs.values())
            return ahead + int(running)

    def _evict_locked(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.state in ("done", "error")]
        while len(finished) > self.keep_jobs:
            old = self._jobs.pop(finished.pop(0))
            if old.files_dir is not None:
                shutil.rmtree(old.files_dir, ignore_errors=True)

    # -- the worker ------------------------------------------------------------------------
    def _warm_up(self) -> None:
        """One small prediction before the first upload: lazy imports (matplotlib's colour maps),
        first-call allocations and kernel selection then do not count against the first user."""
        t = time.perf_counter()
        try:
            image = np.full((64, 128, 3), 128, dtype=np.uint8)
            job = Job(id="warmup", name="warmup", image=image, intrinsics=(100.0, 100.0, 64.0, 32.0))
            self._run(job)
        except Exception:  # a failing warm-up shows up again, with its message, on the first upload
            logger.debug("warm-up prediction failed", exc_info=True)
        logger.debug("warm-up took %.2f s", time.perf_counter() - t)

    def _work(self) -> None:
        if self._warmup:
            self._warm_up()
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                if job.id in self._pending:
                    self._pending.remove(job.id)
                job.state, job.stage, job.started = "running", "running the network", time.monotonic()
            try:
                self._run(job)
                job.state = "done"
            except Exception as err:  # the server must outlive any single bad request
                logger.exception("prediction failed for %s", job.name)
                job.error = str(err) if isinstance(err, PanopticDepthError) else f"prediction failed: {err!r}"
                job.state = "error"
            finally:
                job.image = None if job.state == "error" else job.image
                job.finished = time.monotonic()
                job.stage = job.state
                with self._lock:
                    self._evict_locked()

    def _run(self, job: Job) -> None:
        assert job.image is not None
        t = time.perf_counter()
        result = self.predictor.predict(job.image)
        job.seconds["predict"] = time.perf_counter() - t
        job.stage = "preparing the views"
        t = time.perf_counter()
        panoptic = result.panoptic.cpu().numpy().astype(np.int32)
        depth = None if result.depth is None else result.depth.float().cpu().numpy().astype(np.float32)
        job.views = build_views(
            job.image,
            panoptic,
            depth,
            result.segments,
            job.intrinsics,
            self.max_display_side,
            self.class_names,
            getattr(self.predictor, "label_space", CITYSCAPES),
        )
        job.result = result
        job.seconds["views"] = time.perf_counter() - t

    # -- downloads -------------------------------------------------------------------------
    def download(self, job: Job, kind: str) -> tuple[str, bytes]:
        """(file name, bytes) of a full-resolution download; written once per job, on first request."""
        if kind not in DOWNLOADS:
            raise KeyError(kind)
        if job.state != "done" or job.result is None or job.image is None:
            raise UploadError("this prediction is not finished")
        if job.result.depth is None and kind in ("depth.png", "depth_color.png", "ply"):
            raise UploadError("the model predicts no depth")
        with job.lock:
            if job.files_dir is None:
                job.files_dir = self._write_downloads(job)
        name = DOWNLOADS[kind][0].format(stem=job.name)
        return name, (job.files_dir / name).read_bytes()

    def _write_downloads(self, job: Job) -> Path:
        from ..cli.predict import write_outputs
        from ..visualization import save_colorized_depth, save_colorized_panoptic

        out = self._tmp / job.id
        out.mkdir(parents=True, exist_ok=True)
        fx, fy, cx, cy = job.intrinsics
        args = argparse.Namespace(
            raw=True, vis=False, pointcloud=True, intrinsics=f"{fx!r},{fy!r},{cx!r},{cy!r}"
        )
        write_outputs(
            out, job.name, job.image, job.result, args, getattr(self.predictor, "label_space", CITYSCAPES)
        )
        save_colorized_panoptic(out / f"{job.name}_panoptic_color.png", job.result.panoptic)
        if job.result.depth is not None:
            top = job.views.depth_range if job.views and job.views.depth_range else 80.0
            save_colorized_depth(out / f"{job.name}_depth_color.png", job.result.depth, max_depth=top)
        return out

    # -- shutdown --------------------------------------------------------------------------
    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker after the running job and delete the downloads' temporary folder."""
        with self._lock:
            self._closed = True
        self._queue.put(None)
        self._worker.join(timeout)
        shutil.rmtree(self._tmp, ignore_errors=True)
