"""Input iteration for `predict`: image files, folders / image sequences, glob patterns and videos.

Every frame comes out as an `InputFrame` with a unique output stem: an image's file stem, or
`<videostem>_<frame:06d>` for the frames of a video, and a sequence key for tracking: the video's
path, or the folder's (pattern's) name for the images of a folder or glob, split further by the
leading `SSSSSS_FFFFFF_` sequence field of Cityscapes-DVPS-style names. Images given one by one,
and the synthetic generator's independent scenes (`is_still_frame`), belong to no sequence. Videos
are decoded with PyAV (`av`, optional dependency, imported only when a video is given).
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .formats import read_image_rgb

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif"}


@dataclass
class InputFrame:
    stem: str  # output file stem, unique within one run
    image: np.ndarray  # (H, W, 3) uint8 RGB
    source: Path  # image or video file
    frame: int | None = None  # frame index within a video
    sequence: str | None = None  # frames of one sequence come in order; None: a lone image


@dataclass
class InputItem:
    """One resolved input: an image file or a video file."""

    path: Path
    is_video: bool
    group: str | None = None  # folder or glob the image came from (its frames form sequences)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def resolve_inputs(specs: Sequence[str | os.PathLike]) -> list[InputItem]:
    """Files, folders (their images and videos, sorted, recursively) and glob patterns, in order."""
    items: list[InputItem] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and (_is_image(p) or _is_video(p)))
            if not found:
                raise DataError(f"{path}: folder contains no image or video files")
            found = _camera_images_only(found)
            items.extend(InputItem(p, _is_video(p), path.name or str(path)) for p in found)
        elif path.is_file():
            if _is_video(path):
                items.append(InputItem(path, True))
            elif _is_image(path):
                items.append(InputItem(path, False))
            else:
                raise DataError(f"{path}: not an image or video file (unknown extension {path.suffix!r})")
        elif glob.has_magic(str(spec)):
            found = sorted(Path(p) for p in glob.glob(str(spec), recursive=True))
            found = [p for p in found if p.is_file() and (_is_image(p) or _is_video(p))]
            if not found:
                raise DataError(f"{spec}: pattern matches no image or video file")
            group = Path(str(spec).split("*")[0] or ".").name or "frames"
            items.extend(InputItem(p, _is_video(p), group) for p in found)
        else:
            raise DataError(f"{path}: input not found")
    return items


CAMERA_IMAGE_SUFFIX = "_leftImg8bit"  # Cityscapes(-DVPS) and SemKITTI-DVPS name their RGB frames so


def _camera_images_only(found: list[Path]) -> list[Path]:
    """In a dataset split folder (frames named `*_leftImg8bit.*` beside label and depth PNGs) keep
    the camera frames only, so `predict --input SPLIT_DIR` does not run on the labels."""
    if not any(p.stem.endswith(CAMERA_IMAGE_SUFFIX) for p in found):
        return found
    return [p for p in found if p.stem.endswith(CAMERA_IMAGE_SUFFIX) or _is_video(p)]


_SEQUENCE_FIELD = re.compile(r"^(\d+)_\d+_")

# The city field of the synthetic generator's independent scenes (`SSSSSS_FFFFFF_synth_IIIIII`):
# named like Cityscapes-DVPS frames so that the DVPQ evaluator groups them, but no two of them show
# the same scene, so there is nothing to track from one to the next.
STILL_FRAMES_CITY = "synth"


def is_still_frame(stem: str) -> bool:
    """True for `SSSSSS_FFFFFF_synth_...` names (independent synthetic scenes, not a video)."""
    parts = stem.split("_")
    return len(parts) >= 3 and parts[0].isdigit() and parts[1].isdigit() and parts[2] == STILL_FRAMES_CITY


def image_sequence(item: InputItem) -> str | None:
    """Sequence name of an image input (None for an image given by itself or a still frame)."""
    if item.group is None or is_still_frame(item.path.stem):
        return None
    m = _SEQUENCE_FIELD.match(item.path.stem)
    return f"{item.group}_{m.group(1)}" if m else item.group


def _open_video(path: Path):
    try:
        import av
    except ImportError:
        raise DataError(f"{path}: reading videos needs PyAV (pip install av)") from None
    try:
        return av.open(str(path))
    except (OSError, ValueError) as err:  # av.error.* derive from OSError / ValueError
        raise DataError(f"{path}: cannot open video ({err})") from None


def video_frame_count(path: Path) -> int | None:
    """Frame count from the container metadata (None when unknown)."""
    with _open_video(path) as container:
        if not container.streams.video:
            raise DataError(f"{path}: no video stream")
        frames = container.streams.video[0].frames
        return int(frames) if frames else None


def iter_video(path: Path) -> Iterator[np.ndarray]:
    """Decoded frames of the first video stream as (H, W, 3) uint8 RGB."""
    with _open_video(path) as container:
        if not container.streams.video:
            raise DataError(f"{path}: no video stream")
        stream = container.streams.video[0]
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: video decoding failed ({err})") from None


def count_frames(items: Sequence[InputItem]) -> int | None:
    """Total number of frames (None if a video does not say)."""
    total = 0
    for item in items:
        if item.is_video:
            n = video_frame_count(item.path)
            if n is None:
                return None
            total += n
        else:
            total += 1
    return total


def iter_frames(
    items: Sequence[InputItem], on_error: Callable[[Path, DataError], None] | None = None
) -> Iterator[InputFrame]:
    """Frames of all inputs in order; duplicate stems get a `_<n>` suffix (with a warning).

    An unreadable image or video raises `DataError`; with `on_error`, it is handed to
    `on_error(path, error)` instead and the remaining inputs are still read.
    """
    used: set[str] = set()

    def unique(stem: str) -> str:
        candidate, n = stem, 0
        while candidate in used:
            n += 1
            candidate = f"{stem}_{n}"
        if n:
            logger.warning("output stem %s used twice; writing %s", stem, candidate)
        used.add(candidate)
        return candidate

    for item in items:
        try:
            if item.is_video:
                for k, frame in enumerate(iter_video(item.path)):
                    stem = unique(f"{item.path.stem}_{k:06d}")
                    yield InputFrame(stem, frame, item.path, k, sequence=f"{item.path}")
            else:
                image = read_image_rgb(item.path, exif_transpose=True)
                yield InputFrame(unique(item.path.stem), image, item.path, sequence=image_sequence(item))
        except DataError as err:
            if on_error is None:
                raise
            on_error(item.path, err)
