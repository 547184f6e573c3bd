"""A faster PNG reader for the two layouts the evaluator reads most: 8-bit RGB and 16-bit gray.

OpenCV's decoder (libpng) is somewhat faster than Pillow's on these files and, like Pillow's, runs
without the GIL, so reader threads decode in parallel. It is used only where its array is
exactly Pillow's: the header must say 8-bit truecolour (colour type 2) or 16-bit grayscale
(colour type 0), the file must end with an IEND chunk (complete), and the decoded array must
have the expected shape and dtype. Everything else (palette, gray 8-bit, alpha, 16-bit RGB,
damaged files, no OpenCV) returns None, and the caller reads the file with Pillow, which also
produces the error messages.
"""

from __future__ import annotations

import os
import struct

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
# (bit depth, colour type) -> (channels, dtype) of the array Pillow gives for that layout
_FAST_LAYOUTS = {(8, 2): (3, np.uint8), (16, 0): (1, np.uint16)}

try:  # OpenCV is a dependency, but the reader must not require it.
    import cv2
except ImportError:  # pragma: no cover - exercised only without OpenCV
    cv2 = None


def png_layout(data: bytes) -> tuple[int, int, int, int] | None:
    """(width, height, bit depth, colour type) from a PNG's IHDR chunk, or None if not a PNG."""
    if len(data) < 33 or not data.startswith(_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    return width, height, depth, colour


def read_png_fast(path: str | os.PathLike) -> np.ndarray | None:
    """The array `np.asarray(PIL.Image.open(path))` would give, for 8-bit RGB and 16-bit gray PNGs.

    Like Pillow's, the array is read-only; RGB is a view in R, G, B order (OpenCV decodes B, G, R).
    Returns None for every other file (see the module docstring); the caller then uses Pillow.
    """
    if cv2 is None:
        return None
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    layout = png_layout(data)
    if layout is None or not data.endswith(_IEND):
        return None
    width, height, depth, colour = layout
    expected = _FAST_LAYOUTS.get((depth, colour))
    if expected is None or width == 0 or height == 0:
        return None
    channels, dtype = expected
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    shape = (height, width) if channels == 1 else (height, width, channels)
    if arr is None or arr.shape != shape or arr.dtype != dtype:
        return None  # e.g. a tRNS chunk turned into an alpha channel
    if channels == 3:
        arr = arr[..., ::-1]
    arr.flags.writeable = False
    return arr
