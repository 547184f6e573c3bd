"""Fast check of a training split before training starts: partner files and image headers.

`panopticdepth data check` decodes every pixel; this reads only what an image file says about
itself (format, mode, size), which takes about a millisecond per frame, so a missing partner file,
an unreadable header, a label of the wrong bit depth or a size mismatch stops `train` at once
instead of hours into a run. Truncated pixel data is found only by `data check`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..config.data import DataConfig
from ..errors import DataError
from .base import Problem, Record, raise_problems

log = logging.getLogger(__name__)

_16BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_8BIT_LABEL = ("L", "P")
# Modes each role's file must decode to, per dataset format (the readers' own rules).
_LABEL_MODES: dict[str, dict[str, tuple[str, ...]]] = {
    "cityscapes-dps": {"panoptic": _16BIT, "depth": _16BIT},
    "synthetic": {"panoptic": _16BIT, "depth": _16BIT},
    "custom": {"panoptic": _16BIT, "depth": _16BIT},
    "semkitti-dps": {"class": _8BIT_LABEL, "instance": _8BIT_LABEL + _16BIT, "depth": _16BIT},
    "cityscapes-panoptic": {"panoptic": ("RGB",)},
}
_ROLE_NAMES = {
    "panoptic": "panoptic label",
    "depth": "depth map",
    "class": "class map",
    "instance": "instance map",
}


def _header(path: Path) -> tuple[str, tuple[int, int]]:
    """(mode, (width, height)) from the file header; DataError naming the file otherwise."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with Image.open(path) as img:
            return img.mode, img.size
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: unreadable image header ({err})") from None


def record_problems(record: Record, dataset: str) -> list[Problem]:
    """Problems of one frame's files found from their headers."""
    problems: list[Problem] = []
    modes = _LABEL_MODES.get(dataset, {})
    try:
        image_mode, image_size = _header(record.files["image"])
    except DataError as err:
        path, _, msg = str(err).partition(": ")
        return [Problem(path, msg)]
    if image_mode == "F":
        problems.append(Problem(str(record.files["image"]), "floating-point image (mode F)"))
    expected = record.meta.get("expected_size")
    if expected is not None and (image_size[1], image_size[0]) != tuple(expected):
        problems.append(
            Problem(
                str(record.files["image"]),
                f"image is {image_size[0]}x{image_size[1]} but the index JSON says "
                f"{expected[1]}x{expected[0]}",
            )
        )
    for role, path in record.files.items():
        if role == "image":
            continue
        what = _ROLE_NAMES.get(role, role)
        try:
            mode, size = _header(path)
        except DataError as err:
            file, _, msg = str(err).partition(": ")
            problems.append(Problem(file, msg))
            continue
        allowed = modes.get(role)
        if allowed is not None and mode not in allowed:
            kind = "16-bit single-channel" if allowed[0] in _16BIT else "/".join(allowed)
            if allowed == _8BIT_LABEL:
                kind = "8-bit single-channel"
            problems.append(Problem(str(path), f"{what} must be a {kind} PNG, got mode {mode}"))
        if size != image_size:
            problems.append(
                Problem(
                    str(path),
                    f"{what} size {size[0]}x{size[1]} does not match the image size "
                    f"{image_size[0]}x{image_size[1]}",
                )
            )
    return problems


def preflight_split(data_cfg: DataConfig, split: str) -> int:
    """Check every frame of `split` from file headers; returns the number of frames.

    Raises `DataError` with the first problem, how many more there are, and the command that
    lists them all.
    """
    from .build import discover_records

    records, problems = discover_records(data_cfg, split)
    if not records and not problems:
        raise DataError(f"{data_cfg.root}: no frames found for split '{split}'")
    for rec in records:
        problems.extend(record_problems(rec, data_cfg.dataset))
    raise_problems(problems)
    log.info("pre-flight check of %s '%s': %d frames, all files present and readable", data_cfg.root,
             split, len(records))  # fmt: skip
    return len(records)
