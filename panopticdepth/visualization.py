"""Pictures of predictions: panoptic maps in Cityscapes colours, depth maps in metres, panels.

* `colorize_panoptic`: each pixel gets the colour of its train id in the model's label space
  (`label_space.py`; Cityscapes colours by default); every thing instance gets its own lightness
  of that colour (so two touching cars stay apart) and segment boundaries are drawn as white outlines.
* `colorize_depth`: metres -> colour (matplotlib colour map, near = bright), invalid (0) = black.
* `save_panel`: one PNG per image with the input, the panoptic segmentation and the depth map
  (with a colour bar in metres), and the ground truth beside the prediction when given;
  `panel_image` returns it as an array (the frames of `predict --vis-video`). With tracked ids a
  track keeps its colour from frame to frame, since the colour depends only on the id.

Everything is drawn with matplotlib's object API on an Agg canvas (no pyplot state), so it is
safe in scripts, tests and worker threads without a display.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .io.formats import IGNORE_LABEL, LABEL_DIVISOR
from .label_space import CITYSCAPES, LabelSpace
from .utils.arrays import to_numpy
from .utils.files import atomic_path

DEPTH_CMAP = "plasma_r"
OUTLINE_COLOR = (255, 255, 255)
VOID_COLOR = (0, 0, 0)
# Strength of the per-instance lightness variation: a blend factor in [-0.4, 0.4] towards
# white (positive) or black (negative).
_SHADE_SPAN = 0.8


def class_palette(label_space: LabelSpace = CITYSCAPES) -> np.ndarray:
    """(256, 3) uint8 colour per train id of `label_space`, black for every other id."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:] = VOID_COLOR
    palette[: label_space.num_classes] = np.array(label_space.colors, dtype=np.uint8)
    return palette


def instance_shade(instance_ids: np.ndarray) -> np.ndarray:
    """Blend factor in [-0.4, 0.4] per instance id (0 -> 0): golden-ratio spread, deterministic."""
    inst = np.asarray(instance_ids, dtype=np.float64)
    frac = np.mod(inst * 0.6180339887498949, 1.0)
    shade = (frac - 0.5) * _SHADE_SPAN
    return np.where(inst > 0, shade, 0.0)


def segment_boundaries(ids: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose right or lower neighbour belongs to another segment (1 px lines)."""
    ids = np.asarray(ids)
    edge = np.zeros(ids.shape, dtype=bool)
    diff_x = ids[:, 1:] != ids[:, :-1]
    diff_y = ids[1:, :] != ids[:-1, :]
    edge[:, :-1] |= diff_x
    edge[:-1, :] |= diff_y
    return edge


def colorize_panoptic(
    panoptic: Any,
    label_divisor: int = LABEL_DIVISOR,
    shade_instances: bool = True,
    outline: bool = True,
    label_space: LabelSpace = CITYSCAPES,
) -> np.ndarray:
    """(H, W) ids = train id * 1000 + instance -> (H, W, 3) uint8 RGB.

    Class colour from the Cityscapes palette; thing instances (instance > 0) are lightened or
    darkened by an instance-specific amount; boundaries between segments are white. Ids whose
    class is not a train id (void 32000, 255 * 1000) are black.
    """
    pan = to_numpy(panoptic).astype(np.int64)
    if pan.ndim != 2:
        raise ValueError(f"panoptic map must be (H, W), got shape {pan.shape}")
    # Work per unique segment id (few) instead of per pixel, then scatter back.
    uniq, inverse = np.unique(pan, return_inverse=True)
    cls = uniq // label_divisor
    inst = uniq % label_divisor
    valid = (cls >= 0) & (cls < label_space.num_classes)
    palette = class_palette(label_space)
    colors = palette[np.where(valid, cls, IGNORE_LABEL)].astype(np.float64)
    if shade_instances:
        shade = instance_shade(np.where(valid, inst, 0))
        # Dark classes (car, truck, bus) only get lighter and bright ones only darker, so that every
        # instance stays visibly apart from black outlines / void and from white outlines.
        luma = colors @ np.array([0.299, 0.587, 0.114])
        shade = np.where(luma < 90, np.abs(shade), np.where(luma > 170, -np.abs(shade), shade))[:, None]
        toward = np.where(shade > 0, 255.0, 0.0)
        colors = colors + np.abs(shade) * (toward - colors)
    out = np.round(colors).astype(np.uint8)[inverse.reshape(pan.shape)]
    if outline:
        out[segment_boundaries(pan)] = OUTLINE_COLOR
    return out


def colorize_depth(depth: Any, max_depth: float = 80.0, cmap: str = DEPTH_CMAP) -> np.ndarray:
    """(H, W) metres -> (H, W, 3) uint8 RGB on [0, max_depth] (near bright); invalid (<= 0, NaN) black."""
    from matplotlib import colormaps

    d = to_numpy(depth).astype(np.float64)
    if d.ndim != 2:
        raise ValueError(f"depth map must be (H, W), got shape {d.shape}")
    valid = np.isfinite(d) & (d > 0)
    norm = np.clip(np.where(valid, d, 0.0) / float(max_depth), 0.0, 1.0)
    rgb = (colormaps[cmap](norm)[..., :3] * 255.0 + 0.5).astype(np.uint8)
    rgb[~valid] = 0
    return rgb


def overlay(image_rgb: np.ndarray, colors_rgb: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Alpha-blend a colour map onto the input image (uint8 RGB, same size)."""
    blend = (1.0 - alpha) * image_rgb.astype(np.float32) + alpha * colors_rgb.astype(np.float32)
    return np.clip(blend + 0.5, 0, 255).astype(np.uint8)


def save_colorized_panoptic(path: str | os.PathLike, panoptic: Any) -> Path:
    """Write the coloured panoptic map alone as a PNG (atomic)."""
    from .io.formats import write_image_rgb

    return write_image_rgb(path, colorize_panoptic(panoptic))


def save_colorized_depth(path: str | os.PathLike, depth: Any, max_depth: float = 80.0) -> Path:
    """Write the coloured depth map alone as a PNG (atomic)."""
    from .io.formats import write_image_rgb

    return write_image_rgb(path, colorize_depth(depth, max_depth=max_depth))


def auto_max_depth(*depths: np.ndarray | None) -> float:
    """A round colour-bar top covering the 99th percentile of every valid depth shown."""
    vals = [d[np.isfinite(d) & (d > 0)] for d in depths if d is not None]
    vals = [v for v in vals if v.size]
    if not vals:
        return 80.0
    top = float(np.percentile(np.concatenate(vals), 99))
    step = 10.0 if top > 20 else 5.0
    return max(step, float(np.ceil(top / step) * step))


def _legend_handles(panoptic_maps: list[np.ndarray], label_space: LabelSpace) -> list:
    from matplotlib.patches import Patch

    palette = class_palette(label_space)
    names = label_space.names
    present = set()
    for pan in panoptic_maps:
        cls = np.unique(pan // LABEL_DIVISOR)
        present.update(int(c) for c in cls if 0 <= c < label_space.num_classes)
    return [Patch(facecolor=palette[c] / 255.0, edgecolor="none", label=names[c]) for c in sorted(present)]


def save_panel(
    path: str | os.PathLike,
    image_rgb: Any,
    result: Any,
    gt: dict | None = None,
    max_depth: float | None = None,
    title: str | None = None,
    dpi: int = 100,
    label_space: LabelSpace = CITYSCAPES,
) -> Path:
    """Write a PNG panel: input | panoptic | depth (colour bar in metres), ground truth below.

    `result` is a `PanopticDepthResult` (or anything with `.panoptic` and `.depth`); `gt` is an
    optional dict with numpy `panoptic` (ids, void 32000) and/or `depth` (metres, 0 invalid).
    `max_depth=None` picks a round colour-bar top shared by the prediction and the ground truth.
    """
    fig = _panel_figure(image_rgb, result, gt, max_depth, title, dpi, label_space)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def panel_image(
    image_rgb: Any,
    result: Any,
    gt: dict | None = None,
    max_depth: float | None = None,
    title: str | None = None,
    dpi: int = 100,
    label_space: LabelSpace = CITYSCAPES,
) -> np.ndarray:
    """The panel of `save_panel` as an (H, W, 3) uint8 RGB array (frames of a video).

    Keep `max_depth` fixed over a video so that one colour means one depth in every frame.
    """
    fig = _panel_figure(image_rgb, result, gt, max_depth, title, dpi, label_space)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _panel_figure(
    image_rgb: Any, result: Any, gt: dict | None, max_depth: float | None, title, dpi: int, space: LabelSpace
):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    image = to_numpy(image_rgb).astype(np.uint8)
    pred_pan = to_numpy(result.panoptic).astype(np.int64)
    pred_depth = None if result.depth is None else to_numpy(result.depth).astype(np.float32)
    gt = gt or {}
    gt_pan = None if gt.get("panoptic") is None else to_numpy(gt["panoptic"]).astype(np.int64)
    gt_depth = None if gt.get("depth") is None else to_numpy(gt["depth"]).astype(np.float32)
    has_gt = gt_pan is not None or gt_depth is not None
    if max_depth is None:
        max_depth = auto_max_depth(pred_depth, gt_depth)

    h, w = image.shape[:2]
    rows = 2 if has_gt else 1
    panel_w = 4.2
    panel_h = panel_w * h / w
    fig = Figure(figsize=(3 * panel_w + 0.9, rows * (panel_h + 0.35) + 0.75), dpi=dpi)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(rows, 3, wspace=0.04, hspace=0.12)
    norm = Normalize(vmin=0.0, vmax=max_depth)

    def show(r: int, c: int, rgb: np.ndarray | None, label: str):
        ax = fig.add_subplot(grid[r, c])
        ax.set_axis_off()
        ax.set_title(label, fontsize=10)
        if rgb is None:
            ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes, color="0.5")
        else:
            ax.imshow(rgb, interpolation="nearest")
        return ax

    show(0, 0, image, "input")
    show(0, 1, colorize_panoptic(pred_pan, label_space=space), "panoptic (prediction)")
    pred_depth_rgb = None if pred_depth is None else colorize_depth(pred_depth, max_depth)
    depth_axes = [show(0, 2, pred_depth_rgb, "depth (prediction)")]
    if has_gt:
        show(
            1,
            0,
            overlay(image, colorize_panoptic(pred_pan, outline=False, label_space=space)),
            "prediction on input",
        )
        show(
            1,
            1,
            None if gt_pan is None else colorize_panoptic(gt_pan, label_space=space),
            "panoptic (ground truth)",
        )
        gt_depth_rgb = None if gt_depth is None else colorize_depth(gt_depth, max_depth)
        depth_axes.append(show(1, 2, gt_depth_rgb, "depth (ground truth)"))

    handles = _legend_handles([pred_pan] + ([gt_pan] if gt_pan is not None else []), space)
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 10), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    legend_rows = -(-len(handles) // 10)
    bottom = (0.25 + 0.2 * legend_rows) / fig.get_figheight() if handles else 0.02
    fig.subplots_adjust(left=0.01, right=0.93, top=1.0 - 0.45 / fig.get_figheight(), bottom=bottom)

    # Colour bar beside the depth column, as tall as the drawn images (known only once the
    # equal-aspect axes have been shrunk to their images).
    from matplotlib.cm import ScalarMappable

    for ax in depth_axes:
        ax.apply_aspect()
    boxes = [ax.get_position() for ax in depth_axes]
    y0, y1 = min(b.y0 for b in boxes), max(b.y1 for b in boxes)
    cax = fig.add_axes((boxes[0].x1 + 0.008, y0, 0.012, y1 - y0))
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=DEPTH_CMAP), cax=cax)
    bar.set_label("depth [m]")
    return fig


def render_pointcloud(
    points: np.ndarray,
    colors: np.ndarray,
    intrinsics: tuple[float, float, float, float],
    size_hw: tuple[int, int],
    elevation_deg: float = 15.0,
    yaw_deg: float = -20.0,
    splat: int = 3,
    background: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """Render a point cloud from a virtual camera orbiting above and to the side (Figure 4 style).

    The virtual camera turns about a pivot on the optical axis at the median depth: `elevation_deg`
    up (looking down on the street) and `yaw_deg` sideways, then backs off so the scene stays in
    view. Points are projected with the focal lengths of `intrinsics`, fitted into the canvas and
    drawn far to near as `splat` x `splat` squares (a painter's z-buffer), all vectorised.
    Returns (H, W, 3) uint8.
    """
    h, w = size_hw
    fx, fy = float(intrinsics[0]), float(intrinsics[1])
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    rgb = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    out = np.empty((h, w, 3), dtype=np.uint8)
    out[:] = background
    if len(pts) == 0:
        return out
    zc = float(np.median(pts[:, 2]))
    pivot = np.array([0.0, 0.0, zc])
    a, b = np.deg2rad(elevation_deg), np.deg2rad(yaw_deg)
    # Virtual camera axes (columns: right, down, forward) in the camera frame (x right, y down,
    # z forward): pitched down by `a`, then turned about the vertical by `b`.
    pitch = np.array([[1, 0, 0], [0, np.cos(a), np.sin(a)], [0, -np.sin(a), np.cos(a)]])
    yaw = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    axes = yaw @ pitch
    center = pivot - 1.4 * zc * axes[:, 2]  # on the orbit, 1.4x the pivot's depth away
    q = (pts - center) @ axes
    front = q[:, 2] > 0.1
    q, rgb = q[front], rgb[front]
    u = fx * q[:, 0] / q[:, 2]
    v = fy * q[:, 1] / q[:, 2]
    # Fit the projected cloud (1st-99th percentile box) into the canvas, same scale on both axes.
    (u0, u1), (v0, v1) = np.percentile(u, [1, 99]), np.percentile(v, [1, 99])
    scale = 0.94 * min(w / max(u1 - u0, 1e-6), h / max(v1 - v0, 1e-6))
    u = np.round((u - (u0 + u1) / 2) * scale + w / 2).astype(np.int64)
    v = np.round((v - (v0 + v1) / 2) * scale + h / 2).astype(np.int64)
    order = np.argsort(-q[:, 2], kind="stable")  # far first: nearer points overwrite them
    u, v, rgb = u[order], v[order], rgb[order]
    for dy in range(splat):
        for dx in range(splat):
            uu, vv = u + dx, v + dy
            ok = (uu >= 0) & (uu < w) & (vv >= 0) & (vv < h)
            out[vv[ok], uu[ok]] = rgb[ok]
    return out


def save_pointcloud_view(
    path: str | os.PathLike,
    points: np.ndarray,
    colors: np.ndarray,
    intrinsics: tuple[float, float, float, float],
    size_hw: tuple[int, int],
    title: str | None = None,
    dpi: int = 100,
    label_space: LabelSpace = CITYSCAPES,
) -> Path:
    """A PNG of a point cloud for readers without a PLY viewer: an oblique view from above and
    beside the camera (`render_pointcloud`) and the bird's-eye view (x right, z forward)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pts = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    rgb = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    h, w = size_hw
    view = render_pointcloud(pts, rgb, intrinsics, (h, w))
    fig = Figure(figsize=(12.0, 12.0 * 0.62 * h / w + 0.9), dpi=dpi)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(1, 2, width_ratios=[2.0, 1.0], wspace=0.08)
    ax1 = fig.add_subplot(grid[0, 0])
    ax1.imshow(view, interpolation="nearest")
    ax1.set_axis_off()
    ax1.set_title("3D points, seen from above and beside the camera", fontsize=10)
    ax2 = fig.add_subplot(grid[0, 1])
    if len(pts):
        zmax = max(float(np.percentile(pts[:, 2], 99)), 1.0)
        xr = max(float(np.percentile(np.abs(pts[:, 0]), 99)), 1.0)
        near_first = np.argsort(pts[:, 1])[::-1]  # draw low points first, tall objects on top
        ax2.scatter(pts[near_first, 0], pts[near_first, 2], c=rgb[near_first] / 255.0, s=1.0, marker=".",
                    linewidths=0)  # fmt: skip
        ax2.set_xlim(-xr, xr)
        ax2.set_ylim(0, zmax)
    ax2.set_aspect("equal", adjustable="box")
    ax2.set_xlabel("x (right) [m]")
    ax2.set_ylabel("z (forward) [m]")
    ax2.set_title("bird's-eye view", fontsize=10)
    ax2.grid(True, linewidth=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(left=0.01, right=0.98, top=0.88 if title else 0.92, bottom=0.1)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path
