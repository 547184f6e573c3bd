"""What the page shows for one prediction: PNGs, the segment table and binary arrays for the 3D view.

Everything here is plain numpy + Pillow on top of `visualization` (colours, overlays) and
`io.pointcloud` (back-projection), so the page and `predict --vis --pointcloud` agree.

Large images are shown smaller: the *display* grid samples the full-resolution prediction every
`step` pixels (nearest pixel, so ids and depths are exact values of the prediction, never blends)
and the 3D view gets one point per display pixel. Inference always runs on the image as uploaded;
the downloads (`downloads.py`) are at full resolution.

Binary layouts (little-endian, read by `static/app.js`):

* `points.bin`: N x 3 float32 camera-frame xyz (OpenCV: x right, y down, z forward, metres), then
  N uint16 segment indices (0 = void, k = k-th row of the segment table), then N x 3 uint8 RGB of
  the input image. N is `points` in the result JSON.
* `pixels.bin`: the display grid, h x w uint16 segment indices, then h x w uint16 depth in
  metres x 256 (the depth PNG's encoding; 0 = no depth).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from ..io.formats import DEPTH_SCALE, IGNORE_LABEL
from ..io.pointcloud import Intrinsics, backproject
from ..label_space import CITYSCAPES, LabelSpace
from ..visualization import (
    DEPTH_CMAP,
    auto_max_depth,
    class_palette,
    colorize_depth,
    colorize_panoptic,
    overlay,
    segment_boundaries,
)

OVERLAY_ALPHA = 0.55
COLORBAR_STOPS = 11


@dataclass
class Views:
    """Display products of one prediction (bytes ready to send)."""

    size: tuple[int, int]  # (H, W) of the uploaded image (= the prediction)
    display_size: tuple[int, int]  # (h, w) of the pictures and of the 3D point grid
    input_png: bytes
    overlay_png: bytes
    depth_png: bytes | None
    pixels_bin: bytes
    points_bin: bytes
    num_points: int
    segments: list[dict[str, Any]]
    legend: list[dict[str, Any]]
    depth_range: float | None  # colour-bar top in metres
    colorbar: list[str] = field(default_factory=list)  # CSS colours, near (0 m) to far


def display_step(h: int, w: int, max_side: int) -> int:
    """Integer subsampling step so that the longer side is at most `max_side` (1 = full size)."""
    if max_side <= 0:
        return 1
    return max(1, -(-max(h, w) // int(max_side)))


def png_bytes(image: np.ndarray, compress_level: int = 1) -> bytes:
    """uint8 (H, W, 3) -> PNG bytes (fast zlib level: the page is local, time matters more)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(
        buf, format="PNG", compress_level=compress_level
    )
    return buf.getvalue()


def segment_index_map(panoptic: np.ndarray, segment_ids: np.ndarray) -> np.ndarray:
    """(H, W) panoptic ids -> uint16 1-based row of `segment_ids` (0 where the id is not listed)."""
    out = np.zeros(panoptic.shape, dtype=np.uint16)
    if len(segment_ids) == 0:
        return out
    order = np.argsort(segment_ids, kind="stable")
    sorted_ids = segment_ids[order]
    pos = np.clip(np.searchsorted(sorted_ids, panoptic), 0, len(sorted_ids) - 1)
    found = sorted_ids[pos] == panoptic
    out[found] = (order[pos[found]] + 1).astype(np.uint16)
    return out


def median_per_index(index_hw: np.ndarray, values_hw: np.ndarray, count: int) -> list[float | None]:
    """Median of the valid (> 0, finite) values per index 1..count (one sort for all segments)."""
    flat_idx = index_hw.reshape(-1).astype(np.int64)
    vals = values_hw.reshape(-1)
    ok = (flat_idx > 0) & np.isfinite(vals) & (vals > 0)
    flat_idx, vals = flat_idx[ok], vals[ok]
    order = np.lexsort((vals, flat_idx))
    flat_idx, vals = flat_idx[order], vals[order]
    starts = np.searchsorted(flat_idx, np.arange(1, count + 1), side="left")
    ends = np.searchsorted(flat_idx, np.arange(1, count + 1), side="right")
    out: list[float | None] = []
    for s, e in zip(starts, ends):
        out.append(None if e <= s else float(np.median(vals[s:e])))
    return out


def _hex(rgb: Any) -> str:
    r, g, b = (int(v) for v in rgb)
    return f"#{r:02x}{g:02x}{b:02x}"


def _instance_color(index: int, class_rgb: np.ndarray, is_thing: bool) -> np.ndarray:
    """A colour per segment for the 'by instance' 3D mode: golden-ratio hues for things, the class
    colour darkened for stuff (so objects stand out against the scenery)."""
    if not is_thing:
        return (class_rgb * 0.45).astype(np.uint8)
    import colorsys

    hue = (index * 0.6180339887498949) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
    return np.array([r * 255, g * 255, b * 255]).round().astype(np.uint8)


def segment_table(
    segments: list,
    panoptic: np.ndarray,
    depth: np.ndarray | None,
    class_names: list[str],
    label_space: LabelSpace = CITYSCAPES,
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Rows for the page (class, instance, score, area, median depth, colours) and the index map."""
    ids = np.array([int(s.id) for s in segments], dtype=np.int64)
    index = segment_index_map(panoptic, ids)
    medians = median_per_index(index, depth, len(segments)) if depth is not None else [None] * len(segments)
    palette = class_palette(label_space)
    # Thing instances get the same shade as in the overlay (colorize_panoptic on the ids alone).
    shaded = (
        colorize_panoptic(ids.reshape(1, -1), outline=False, label_space=label_space)[0]
        if len(ids)
        else np.zeros((0, 3))
    )
    rows = []
    for k, seg in enumerate(segments):
        cls = int(seg.category)
        class_rgb = palette[cls if 0 <= cls < label_space.num_classes else IGNORE_LABEL].astype(np.float64)
        name = class_names[cls] if 0 <= cls < len(class_names) else f"class {cls}"
        rows.append(
            {
                "index": k + 1,
                "id": int(seg.id),
                "category": cls,
                "name": name,
                "instance": int(seg.instance),
                "is_thing": bool(seg.is_thing),
                "score": round(float(seg.score), 4),
                "area": int(seg.area),
                "median_depth": None if medians[k] is None else round(medians[k], 3),
                "color": _hex(shaded[k]),
                "class_color": _hex(class_rgb),
                "instance_color": _hex(_instance_color(k + 1, class_rgb, bool(seg.is_thing))),
            }
        )
    return rows, index


def legend_entries(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per class present, in train-id order, with its pixel count."""
    by_class: dict[int, dict[str, Any]] = {}
    for row in rows:
        entry = by_class.setdefault(
            row["category"], {"category": row["category"], "name": row["name"], "color": row["class_color"],
                              "area": 0, "segments": 0},
        )  # fmt: skip
        entry["area"] += row["area"]
        entry["segments"] += 1
    return [by_class[c] for c in sorted(by_class)]


def colorbar_colors(n: int = COLORBAR_STOPS) -> list[str]:
    """CSS colours of the depth colour map from 0 m (first) to the top of the bar (last)."""
    from matplotlib import colormaps

    cmap = colormaps[DEPTH_CMAP]
    return [_hex(np.round(np.array(cmap(t)[:3]) * 255)) for t in np.linspace(0.0, 1.0, n)]


def build_views(
    image: np.ndarray,
    panoptic: np.ndarray,
    depth: np.ndarray | None,
    segments: list,
    intrinsics: Intrinsics,
    max_display_side: int = 1024,
    class_names: list[str] | None = None,
    label_space: LabelSpace = CITYSCAPES,
) -> Views:
    """All display products of one prediction (see the module docstring for the layouts)."""
    class_names = class_names or list(label_space.names)
    h, w = panoptic.shape
    rows, index = segment_table(segments, panoptic, depth, class_names, label_space)
    step = display_step(h, w, max_display_side)
    if step > 1:
        ys, xs = np.arange(0, h, step), np.arange(0, w, step)
        pan_d = panoptic[ys][:, xs]
        index_d = index[ys][:, xs]
        depth_d = None if depth is None else depth[ys][:, xs]
        dh, dw = pan_d.shape
        image_d = np.asarray(Image.fromarray(image).resize((dw, dh), Image.Resampling.BOX))
        # Pixel centre of display pixel j is at full-resolution column j * step (exact sampling).
        fx, fy, cx, cy = intrinsics
        intr_d = (fx / step, fy / step, cx / step, cy / step)
    else:
        pan_d, index_d, depth_d, image_d = panoptic, index, depth, image
        dh, dw = h, w
        intr_d = tuple(intrinsics)
    colors = colorize_panoptic(pan_d, outline=False, label_space=label_space)
    over = overlay(image_d, colors, alpha=OVERLAY_ALPHA)
    over[segment_boundaries(pan_d)] = (255, 255, 255)
    depth_png, depth_range, depth_u16 = None, None, np.zeros((dh, dw), dtype=np.uint16)
    points = np.zeros((0, 3), dtype=np.float32)
    point_index = np.zeros(0, dtype=np.uint16)
    point_rgb = np.zeros((0, 3), dtype=np.uint8)
    if depth_d is not None:
        depth_range = auto_max_depth(depth)
        depth_png = png_bytes(colorize_depth(depth_d, max_depth=depth_range))
        depth_u16 = np.clip(np.round(np.nan_to_num(depth_d) * DEPTH_SCALE), 0, 65535).astype(np.uint16)
        points, valid = backproject(depth_d, intr_d)  # type: ignore[arg-type]
        point_index = index_d[valid]
        point_rgb = image_d.reshape(dh, dw, 3)[valid]
    points_bin = (
        np.ascontiguousarray(points, dtype="<f4").tobytes()
        + np.ascontiguousarray(point_index, dtype="<u2").tobytes()
        + np.ascontiguousarray(point_rgb, dtype=np.uint8).tobytes()
    )
    pixels_bin = np.ascontiguousarray(index_d, dtype="<u2").tobytes() + depth_u16.astype("<u2").tobytes()
    return Views(
        size=(h, w),
        display_size=(dh, dw),
        input_png=png_bytes(image_d),
        overlay_png=png_bytes(over),
        depth_png=depth_png,
        pixels_bin=pixels_bin,
        points_bin=points_bin,
        num_points=len(points),
        segments=rows,
        legend=legend_entries(rows),
        depth_range=depth_range,
        colorbar=colorbar_colors() if depth_d is not None else [],
    )
