"""The HTTP side of the app: one HTML page, its scripts, and a small JSON API, on the standard library.

Routes (all GET unless said):

* `/` the page; `/static/...` its script, style sheet and the vendored three.js (`static/vendor/three`);
* `/api/info` model name, classes, example images, limits;
* `/api/examples/<name>` an example image (only names listed by `/api/info`);
* `POST /api/predict?name=NAME[&intrinsics=fx,fy,cx,cy]` with the image file as the request body:
  `202 {"job": ID}`, or `400` / `413` / `503` with `{"error": message}` for a bad, too large or
  unqueueable upload;
* `/api/jobs/<id>` state, stage, place in the queue, and the result table once done;
* `/api/jobs/<id>/<asset>` `input.png`, `overlay.png`, `depth.png`, `pixels.bin`, `points.bin`;
* `/api/jobs/<id>/download/<kind>` full-resolution files (see `service.DOWNLOADS`).

`ThreadingHTTPServer` answers each connection on its own thread; inference itself is serialised by
`InferenceService`. Nothing here is loaded from the network, so the page works offline.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .service import DOWNLOADS, InferenceService, UploadError, decode_image

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".md": "text/plain",
          ".bin": "application/octet-stream", ".png": "image/png", "": "text/plain"}  # fmt: skip


@dataclass
class AppSettings:
    """Limits and labels of one server."""

    model_name: str = "model"
    max_upload_mb: float = 50.0
    max_megapixels: float = 40.0
    examples: list[Path] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    class_colors: list[str] = field(default_factory=list)
    thing_ids: list[int] = field(default_factory=list)
    default_intrinsics: str | None = None


def list_examples(folder: str | Path | None, limit: int = 24) -> list[Path]:
    """Image files directly in `folder` (sorted, at most `limit`). In a Cityscapes-style split
    folder, which also holds label and depth PNGs, only the `*_leftImg8bit` images."""
    if not folder:
        return []
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    photos = [p for p in files if p.stem.endswith("_leftImg8bit")]
    return (photos or files)[:limit]


class AppServer(ThreadingHTTPServer):
    """`ThreadingHTTPServer` holding the inference service and the settings for its handlers."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], service: InferenceService, settings: AppSettings) -> None:
        super().__init__(address, _Handler)
        self.service = service
        self.settings = settings
        self.examples = {p.name: p for p in settings.examples}

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{shown}:{port}/"

    def start_background(self) -> threading.Thread:
        """Serve on a daemon thread (tests, `demo --serve`); stop with `shutdown_all()`."""
        thread = threading.Thread(target=self.serve_forever, name="panopticdepth-http", daemon=True)
        thread.start()
        return thread

    def shutdown_all(self) -> None:
        self.shutdown()
        self.server_close()
        self.service.close()


class _Handler(BaseHTTPRequestHandler):
    server: AppServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        logger.debug("%s %s", self.address_string(), format % args)

    # -- responses -------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the browser went away: nothing to do
            pass

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj, allow_nan=False).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    # -- GET -------------------------------------------------------------------------------
    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        path = unquote(urlsplit(self.path).path)
        try:
            if path in ("/", "/index.html"):
                return self._static("index.html")
            if path.startswith("/static/"):
                return self._static(path[len("/static/") :])
            if path == "/api/info":
                return self._json(200, self._info())
            if path.startswith("/api/examples/"):
                return self._example(path[len("/api/examples/") :])
            if path.startswith("/api/jobs/"):
                return self._job_get(path[len("/api/jobs/") :].split("/"))
            return self._error(404, f"no such page: {path}")
        except Exception as err:  # never let one request take the server down
            logger.exception("GET %s failed", path)
            return self._error(500, f"internal error: {err!r}")

    def _static(self, rel: str) -> None:
        target = (STATIC_DIR / rel).resolve()
        if not target.is_relative_to(STATIC_DIR) or not target.is_file():
            return self._error(404, f"no such file: {rel}")
        ctype = (
            _TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        )
        if ctype.startswith("text/"):
            ctype += "; charset=utf-8"
        self._send(200, target.read_bytes(), ctype)

    def _info(self) -> dict[str, Any]:
        s = self.server.settings
        classes = [
            {"id": i, "name": n, "color": s.class_colors[i] if i < len(s.class_colors) else "#000000",
             "thing": i in s.thing_ids}
            for i, n in enumerate(s.class_names)
        ]  # fmt: skip
        return {
            "model": s.model_name,
            "classes": classes,
            "examples": list(self.server.examples),
            "max_upload_mb": s.max_upload_mb,
            "max_megapixels": s.max_megapixels,
            "max_display_side": self.server.service.max_display_side,
            "default_intrinsics": s.default_intrinsics,
        }

    def _example(self, name: str) -> None:
        path = self.server.examples.get(name)
        if path is None or not path.is_file():
            return self._error(404, f"no such example: {name}")
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self._send(200, path.read_bytes(), ctype)

    def _job_get(self, parts: list[str]) -> None:
        service = self.server.service
        job = service.get(parts[0])
        if job is None:
            return self._error(404, "unknown or expired prediction; upload the image again")
        if len(parts) == 1:
            return self._json(200, self._job_status(job))
        if job.state != "done" or job.views is None:
            return self._error(409, "this prediction is not finished")
        views = job.views
        if parts[1] == "download" and len(parts) == 3:
            try:
                name, body = service.download(job, parts[2])
            except KeyError:
                return self._error(404, f"no such download: {parts[2]}")
            except UploadError as err:
                return self._error(404, str(err))
            ctype = _TYPES.get(Path(name).suffix, "application/octet-stream")
            return self._send(200, body, ctype, {"Content-Disposition": f'attachment; filename="{name}"'})
        assets = {
            "input.png": views.input_png,
            "overlay.png": views.overlay_png,
            "depth.png": views.depth_png,
            "pixels.bin": views.pixels_bin,
            "points.bin": views.points_bin,
        }
        body = assets.get(parts[1]) if len(parts) == 2 else None
        if body is None:
            return self._error(404, f"no such asset: {'/'.join(parts[1:])}")
        self._send(200, body, _TYPES[Path(parts[1]).suffix])

    def _job_status(self, job: Any) -> dict[str, Any]:
        now = time.monotonic()
        out: dict[str, Any] = {
            "id": job.id,
            "name": job.name,
            "state": job.state,
            "stage": job.stage,
            "ahead": self.server.service.position(job) if job.state == "queued" else 0,
            "elapsed": round((job.finished or now) - job.created, 3),
            "error": job.error,
        }
        if job.state == "done" and job.views is not None:
            v = job.views
            base = f"/api/jobs/{job.id}"
            downloads = []
            for kind, (fname, label) in DOWNLOADS.items():
                if v.depth_png is None and kind in ("depth.png", "depth_color.png", "ply"):
                    continue
                url = f"{base}/download/{kind}"
                downloads.append(
                    {"kind": kind, "label": label, "filename": fname.format(stem=job.name), "url": url}
                )
            out["result"] = {
                "size": list(v.size),
                "display_size": list(v.display_size),
                "segments": v.segments,
                "legend": v.legend,
                "depth_range": v.depth_range,
                "colorbar": v.colorbar,
                "points": v.num_points,
                "intrinsics": [round(float(x), 4) for x in job.intrinsics],
                "seconds": {k: round(s, 3) for k, s in job.seconds.items()},
                "assets": {
                    "input": f"{base}/input.png",
                    "overlay": f"{base}/overlay.png",
                    "depth": f"{base}/depth.png" if v.depth_png is not None else None,
                    "pixels": f"{base}/pixels.bin",
                    "points": f"{base}/points.bin",
                },
                "downloads": downloads,
            }
        return out

    # -- POST ------------------------------------------------------------------------------
    def do_POST(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        if url.path != "/api/predict":
            self._drain()
            return self._error(404, f"no such endpoint: {url.path}")
        try:
            self._predict(parse_qs(url.query))
        except UploadError as err:
            self.close_connection = True  # the body may be unread: do not reuse the connection
            self._error(400, str(err))
        except Exception as err:
            logger.exception("POST /api/predict failed")
            self.close_connection = True
            self._error(500, f"internal error: {err!r}")

    def _drain(self) -> None:
        """Read and drop a request body we will not use, so the connection stays usable."""
        length = int(self.headers.get("Content-Length") or 0)
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 20))
            if not chunk:
                break
            length -= len(chunk)

    def _predict(self, query: dict[str, list[str]]) -> None:
        s = self.server.settings
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            raise UploadError("the upload has no Content-Length") from None
        if length > s.max_upload_mb * 1e6:
            self.close_connection = True  # do not read a body this large
            return self._error(
                413, f"the file is {length / 1e6:.1f} MB; this server accepts at most {s.max_upload_mb:g} MB"
            )
        data = self.rfile.read(length)
        if len(data) != length:
            raise UploadError("the upload was cut off")
        image = decode_image(data, int(s.max_megapixels * 1e6))
        name = (query.get("name") or ["image"])[0]
        intrinsics = (query.get("intrinsics") or [None])[0]
        job = self.server.service.submit(image, name, intrinsics)
        self._json(202, {"job": job.id, "size": list(image.shape[:2])})


def make_server(
    predictor: Any,
    host: str = "127.0.0.1",
    port: int = 7860,
    examples: str | Path | None = None,
    model_name: str = "model",
    intrinsics: str | None = None,
    max_display_side: int = 1024,
    max_upload_mb: float = 50.0,
    max_megapixels: float = 40.0,
    max_queue: int = 8,
) -> AppServer:
    """Build the server (bound, not yet serving) around a `Predictor`; `port=0` picks a free port."""
    from ..label_space import CITYSCAPES
    from ..visualization import class_palette

    space = getattr(predictor, "label_space", CITYSCAPES)  # the model's classes, names and colours
    names = list(space.names)
    palette = class_palette(space)
    settings = AppSettings(
        model_name=model_name,
        max_upload_mb=max_upload_mb,
        max_megapixels=max_megapixels,
        examples=list_examples(examples),
        class_names=names,
        class_colors=["#{:02x}{:02x}{:02x}".format(*palette[i]) for i in range(len(names))],
        thing_ids=list(space.thing_train_ids),
        default_intrinsics=intrinsics,
    )
    service = InferenceService(
        predictor, max_display_side=max_display_side, max_queue=max_queue, intrinsics=intrinsics,
        class_names=names,
    )  # fmt: skip
    try:
        return AppServer((host, int(port)), service, settings)
    except OSError:
        service.close()
        raise
