"""Writing mp4 videos with PyAV (`av`, the optional `video` extra), e.g. the panels of `predict`.

H.264 (libx264) when the PyAV build has it, MPEG-4 part 2 otherwise; yuv420p needs even sizes, so
odd frames are padded by one black row / column. The file is written beside its final name and
moved there on `close`, so an interrupted run leaves no half-written video under that name.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import numpy as np

from ..errors import DataError


class VideoWriter:
    """Append (H, W, 3) uint8 RGB frames of one size; `close` (or the `with` block) finishes the file."""

    def __init__(self, path: str | os.PathLike, fps: float = 5.0) -> None:
        try:
            import av
        except ImportError:
            raise DataError(f"{path}: writing videos needs PyAV (pip install av)") from None
        self._av = av
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001)
        self._tmp = self.path.with_name(f".{self.path.stem}.tmp-{os.getpid()}{self.path.suffix}")
        self._container = av.open(str(self._tmp), "w")
        self._stream = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def _open_stream(self, h: int, w: int) -> None:
        codec = "libx264" if "libx264" in self._av.codecs_available else "mpeg4"
        self._stream = self._container.add_stream(codec, rate=self.fps)
        self._stream.height, self._stream.width = h + h % 2, w + w % 2
        self._stream.pix_fmt = "yuv420p"
        self._size = (h, w)

    def write(self, frame_rgb: np.ndarray) -> None:
        """Encode one frame; every frame must have the size of the first."""
        frame = np.ascontiguousarray(frame_rgb, dtype=np.uint8)
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB frame, got shape {frame.shape}")
        h, w = frame.shape[:2]
        if self._stream is None:
            self._open_stream(h, w)
        elif (h, w) != self._size:
            raise ValueError(f"{self.path}: frame size {h}x{w} differs from the first frame's {self._size}")
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))
        for packet in self._stream.encode(self._av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> Path | None:
        """Flush and move the file into place; returns its path (None when no frame was written)."""
        if self._container is None:
            return self.path if self.frames else None
        if self._stream is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()
        self._container = None
        if not self.frames:
            self._tmp.unlink(missing_ok=True)
            return None
        os.replace(self._tmp, self.path)
        return self.path

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:  # no half-written video under the final name
            if self._container is not None:
                self._container.close()
                self._container = None
            self._tmp.unlink(missing_ok=True)
