"""Coloured 3D point clouds from a depth map and a panoptic map (like the paper's Figure 4).

Camera frame (OpenCV): x to the right, y down, z forward along the optical axis, metres. A pixel
at column u, row v (integer pixel indices, as in OpenCV: the centre of the top-left pixel is
(0, 0)) with depth z lands at

    x = (u - cx) * z / fx,   y = (v - cy) * z / fy,   z = z.

Depth is the z coordinate (Cityscapes disparity-derived depth and the model's output are z
depths, not ray lengths). Pixels with depth <= 0 or not finite are dropped.

Intrinsics come from `--intrinsics fx,fy,cx,cy` (pixels, for the image as given), a Cityscapes
camera JSON (`{"intrinsic": {"fx", "fy", "u0", "v0"}}`, scaled from 2048x1024 to the image), or
the default: the Cityscapes camera (aachen sequence, `camera/*.json`) scaled to the image size.

The PLY is binary little-endian with one `vertex` element: x, y, z (float32), red, green, blue
(uint8), class (uint8 train id, 255 = void) and instance (uint16, 0 = stuff/void).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, PanopticDepthError
from ..utils.arrays import to_numpy
from ..utils.files import atomic_path
from .formats import IGNORE_LABEL, LABEL_DIVISOR, VOID_ID

# Cityscapes camera (camera/<split>/aachen/*.json): full-resolution 2048 x 1024 image.
CITYSCAPES_SIZE = (1024, 2048)  # (H, W)
CITYSCAPES_INTRINSICS = (2262.52, 2265.3017905988554, 1096.98, 513.137)  # fx, fy, u0, v0

Intrinsics = tuple[float, float, float, float]


def scale_intrinsics(intrinsics: Intrinsics, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> Intrinsics:
    """Rescale (fx, fy, cx, cy) from an image of size `from_hw` to one of size `to_hw`."""
    fx, fy, cx, cy = intrinsics
    sy = to_hw[0] / from_hw[0]
    sx = to_hw[1] / from_hw[1]
    return (fx * sx, fy * sy, cx * sx, cy * sy)


def default_intrinsics(h: int, w: int) -> Intrinsics:
    """The Cityscapes camera scaled to an (h, w) image: (fx, fy, cx, cy) in pixels."""
    return scale_intrinsics(CITYSCAPES_INTRINSICS, CITYSCAPES_SIZE, (h, w))


def read_cityscapes_camera(path: str | os.PathLike, h: int, w: int) -> Intrinsics:
    """Intrinsics from a Cityscapes camera JSON, scaled from 2048x1024 to an (h, w) image."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: camera file not found")
    try:
        intr = json.loads(path.read_text())["intrinsic"]
        values = (float(intr["fx"]), float(intr["fy"]), float(intr["u0"]), float(intr["v0"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(
            f"{path}: not a Cityscapes camera JSON (needs intrinsic.fx/fy/u0/v0): {err!r}"
        ) from None
    return scale_intrinsics(values, CITYSCAPES_SIZE, (h, w))


def parse_intrinsics(spec: str | None, h: int, w: int) -> Intrinsics:
    """`"fx,fy,cx,cy"` (pixels of this image), a Cityscapes camera JSON path, or None -> default."""
    if spec is None or str(spec).strip() == "":
        return default_intrinsics(h, w)
    text = str(spec).strip()
    if text.lower().endswith(".json") or Path(text).is_file():
        return read_cityscapes_camera(text, h, w)
    parts = [p for p in text.replace(" ", "").split(",") if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4:
        raise PanopticDepthError(
            f"--intrinsics {text!r}: expected 'fx,fy,cx,cy' (four numbers) or a camera JSON file"
        )
    if values[0] <= 0 or values[1] <= 0 or not all(np.isfinite(values)):
        raise PanopticDepthError(f"--intrinsics {text!r}: focal lengths must be positive and finite")
    return values  # type: ignore[return-value]


def backproject(depth: Any, intrinsics: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Pixels with valid depth -> camera-frame points.

    Returns `points` (N, 3) float32 in row-major pixel order and `valid` (H, W) bool, so that
    `other_hw[valid]` gives the per-point values of any other per-pixel map.
    """
    depth_hw = to_numpy(depth).astype(np.float64)
    if depth_hw.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth_hw.shape}")
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    valid = np.isfinite(depth_hw) & (depth_hw > 0)
    v_idx, u_idx = np.nonzero(valid)
    z = depth_hw[v_idx, u_idx]
    points = np.stack([(u_idx - cx) * z / fx, (v_idx - cy) * z / fy, z], axis=1)
    return points.astype(np.float32), valid


def pointcloud_arrays(
    image_rgb: Any,
    depth: Any,
    panoptic: Any | None,
    intrinsics: Intrinsics,
    label_divisor: int = LABEL_DIVISOR,
    max_depth: float | None = None,
) -> np.ndarray:
    """The PLY vertex table as a numpy structured array (see the module docstring for fields)."""
    image = to_numpy(image_rgb)
    depth_hw = to_numpy(depth).astype(np.float32)
    if max_depth is not None:
        depth_hw = np.where(depth_hw <= max_depth, depth_hw, 0.0).astype(np.float32)
    if image.shape[:2] != depth_hw.shape:
        raise ValueError(f"image {image.shape[:2]} and depth {depth_hw.shape} sizes differ")
    points, valid = backproject(depth_hw, intrinsics)
    colors = image.reshape(*image.shape[:2], -1)[valid][:, :3].astype(np.uint8)
    if panoptic is None:
        cls = np.full(len(points), IGNORE_LABEL, dtype=np.int64)
        inst = np.zeros(len(points), dtype=np.int64)
    else:
        pan = to_numpy(panoptic).astype(np.int64)
        if pan.shape != depth_hw.shape:
            raise ValueError(f"panoptic {pan.shape} and depth {depth_hw.shape} sizes differ")
        ids = pan[valid]
        cls = ids // label_divisor
        inst = ids % label_divisor
        void = (ids == VOID_ID) | (cls < 0) | (cls >= IGNORE_LABEL)
        cls = np.where(void, IGNORE_LABEL, cls)
        inst = np.where(void, 0, inst)
    vertex = np.empty(
        len(points),
        dtype=[
            ("x", "<f4"),
            ("y", "<f4"),
            ("z", "<f4"),
            ("red", "u1"),
            ("green", "u1"),
            ("blue", "u1"),
            ("class", "u1"),
            ("instance", "<u2"),
        ],
    )
    vertex["x"], vertex["y"], vertex["z"] = points[:, 0], points[:, 1], points[:, 2]
    vertex["red"], vertex["green"], vertex["blue"] = colors[:, 0], colors[:, 1], colors[:, 2]
    vertex["class"] = cls
    vertex["instance"] = inst
    return vertex


def write_pointcloud_ply(
    path: str | os.PathLike,
    image_rgb: Any,
    depth: Any,
    panoptic: Any | None,
    intrinsics: Intrinsics,
    label_divisor: int = LABEL_DIVISOR,
    max_depth: float | None = None,
) -> Path:
    """Write a binary little-endian PLY of every pixel with valid depth (atomic).

    `image_rgb` (H, W, 3) uint8 gives the point colours (pass a colourised panoptic map instead of
    the photo to colour points by segment); `panoptic` (H, W) ids give class and instance per
    point; `max_depth` drops points farther than it (e.g. the 80 m output clamp on the sky).
    """
    from plyfile import PlyData, PlyElement

    vertex = pointcloud_arrays(image_rgb, depth, panoptic, intrinsics, label_divisor, max_depth)
    fx, fy, cx, cy = intrinsics
    ply = PlyData(
        [PlyElement.describe(vertex, "vertex")],
        text=False,
        byte_order="<",
        comments=[
            "panopticdepth point cloud; camera frame OpenCV: x right, y down, z forward, metres",
            f"intrinsics fx={fx:.4f} fy={fy:.4f} cx={cx:.4f} cy={cy:.4f}",
            "class = train id (255 void), instance = 0 for stuff",
        ],
    )
    path = Path(path)
    with atomic_path(path) as tmp:
        ply.write(str(tmp))
    return path
