"""Vectorised ray casting of a `Scene`: analytic planes (ground, facade rows, street end) for
every pixel at once, then all box primitives at once on the (pixel, box) pairs inside each box's
projected bounding rectangle, merged by a z-buffer (`np.minimum.at`).

Returns the image, the panoptic ids (train_id*1000 + instance, VOID 32000 on the ego hood) and
the depth (camera z in metres, quantised to 1/256 m as in the PNG, 0 = sky / > 80 m / hood).
Surfaces carry a palette index and a brightness factor; colours are looked up once at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...io.formats import DEPTH_SCALE, LABEL_DIVISOR, VOID_ID
from ..classes import TRAIN_ID
from .scene import Scene

MAX_DEPTH = 80.0
SKY_TOP = np.array([70, 110, 170], np.float32)
SKY_HORIZON = np.array([175, 195, 215], np.float32)
HAZE = np.array([170, 180, 190], np.float32)
HOOD = np.array([35, 35, 40], np.float32)
# Fixed palette entries; facade and box colours are appended per scene.
ROAD, SIDEWALK, MARKING, TERRAIN, WINDOW, END, FIXED = 0, 1, 2, 3, 4, 5, 6
BASE_COLORS = np.array(
    [[85, 85, 90], [150, 140, 140], [220, 220, 215], [125, 145, 75], [55, 65, 80]], np.float32
)


@dataclass
class Rendered:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    panoptic: np.ndarray  # (H, W) int32
    depth: np.ndarray  # (H, W) float32 metres, multiples of 1/256, 0 = invalid
    scene: Scene


def _frac(x: np.ndarray, period: float) -> np.ndarray:
    """Position within a period, in [0, 1) (cheaper than np.mod)."""
    y = x * np.float32(1.0 / period)
    with np.errstate(invalid="ignore"):  # inf (no hit) -> nan -> compares False
        return y - np.floor(y)


def _box_pairs(scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, column, box index) for every pixel inside each box's projected bounding rectangle."""
    cam = scene.camera
    lo, hi = scene.lo.astype(np.float64), scene.hi.astype(np.float64)
    sel = np.arange(8)[:, None]
    corners = np.stack(
        [
            np.where(sel & 1, hi[None, :, 0], lo[None, :, 0]),
            np.where(sel & 2, hi[None, :, 1], lo[None, :, 1]),
            np.where(sel & 4, hi[None, :, 2], lo[None, :, 2]),
        ],
        axis=-1,
    )  # fmt: skip  (8, P, 3)
    u, v, _ = cam.project(corners.reshape(-1, 3))
    u, v = u.reshape(8, -1), v.reshape(8, -1)
    u0 = np.clip(np.floor(u.min(0)), 0, cam.width).astype(np.int64)
    u1 = np.clip(np.ceil(u.max(0)) + 1, 0, cam.width).astype(np.int64)
    v0 = np.clip(np.floor(v.min(0)), 0, cam.height).astype(np.int64)
    v1 = np.clip(np.ceil(v.max(0)) + 1, 0, cam.height).astype(np.int64)
    bw, bh = np.maximum(u1 - u0, 0), np.maximum(v1 - v0, 0)
    counts = bw * bh
    box = np.repeat(np.arange(len(counts)), counts)
    start = np.cumsum(counts) - counts
    local = np.arange(int(counts.sum())) - start[box]
    bwb = np.maximum(bw[box], 1)
    return v0[box] + local // bwb, u0[box] + local % bwb, box


def _planes(scene: Scene, d: np.ndarray):
    """Ground, facade rows and street end for all pixels -> (t, ids, palette index, brightness).

    With a pitch-only camera a ray's x depends on the column only and its y, z on the row only, so
    ground and street-end distances are per row and facade distances per column (outer products).
    """
    cam = scene.camera
    h, w = cam.height, cam.width
    d_hw = d.reshape(3, h, w)
    dx_c, dy_r, dz_r = d_hw[0, 0], d_hw[1, :, 0], d_hw[2, :, 0]
    hc = np.float32(cam.height_m)
    # Ground plane Y = 0: t = h / -dy.
    down_r = dy_r < -1e-6
    tg_r = np.where(down_r, hc / np.where(down_r, -dy_r, 1.0), np.inf).astype(np.float32)
    t = np.repeat(tg_r[:, None], w, axis=1)
    with np.errstate(invalid="ignore"):
        gx, gz_r = tg_r[:, None] * dx_c[None, :], tg_r * dz_r
    if scene.z_offset:  # texture in world coordinates: markings slide past a driving camera
        gz_r = gz_r + np.float32(scene.z_offset)
    on_road = (gx >= scene.road_left) & (gx <= scene.road_right)
    between = (gx > scene.facades[0].x) & (gx < scene.facades[1].x)
    sidewalk = between & ~on_road
    cls = np.where(on_road, TRAIN_ID["road"], np.where(between, TRAIN_ID["sidewalk"], TRAIN_ID["terrain"]))
    cls[~down_r] = TRAIN_ID["sky"]  # no hit so far: sky unless a facade or box is hit below
    mat = np.where(on_road, ROAD, np.where(between, SIDEWALK, TERRAIN)).astype(np.int32)
    gain = np.ones_like(t)
    # Road markings (dashed lane lines, solid edges) and paving joints: texture only, label stays.
    near_line = np.zeros_like(on_road)
    for xl in scene.lane_lines:
        near_line |= np.abs(gx - xl) < 0.07
    dashed = near_line & (_frac(gz_r, 9.0) < 1.0 / 3.0)[:, None]
    edge = on_road & ((gx - scene.road_left < 0.15) | (scene.road_right - gx < 0.15))
    mat[dashed | edge] = MARKING
    gain[sidewalk & ((_frac(gz_r, 1.2) < 0.05)[:, None] | (_frac(gx, 1.2) < 0.05))] = 0.8
    ids = cls * LABEL_DIVISOR
    n_pal = FIXED
    # Facade rows X = x (vertical planes along the street), heights piecewise in Z; a facade is
    # only seen by the columns whose rays point to its side (a contiguous column range).
    for fac in scene.facades:
        cols = np.nonzero(dx_c * fac.x > 1e-9)[0]
        if cols.size == 0:
            continue
        cs = slice(int(cols[0]), int(cols[-1]) + 1)
        tf_c = (np.float32(fac.x) / dx_c[cs]).astype(np.float32)
        fz, fy = dz_r[:, None] * tf_c[None, :], hc + dy_r[:, None] * tf_c[None, :]
        seg = np.clip(np.searchsorted(fac.z_edges, fz) - 1, 0, len(fac.heights) - 1)
        t_blk = t[:, cs]  # views: writing into them writes into t, ids, mat, gain
        hit = (tf_c[None, :] < t_blk) & (fz >= fac.z_edges[0]) & (fz < fac.z_edges[-1])
        hit &= (fy >= 0) & (fy <= fac.heights[seg])
        fseg = seg[hit]
        zl, yl = fz[hit] - fac.z_edges[fseg], fy[hit]
        tid = fac.train_ids[fseg]
        building = tid == TRAIN_ID["building"]
        fz_frac, fy_frac = _frac(zl, 2.6), _frac(yl, 3.2)
        window = (
            building & (fz_frac > 0.27) & (fz_frac < 0.73) & (fy_frac > 0.34) & (fy_frac < 0.75) & (yl > 3.0)
        )
        t_blk[hit] = np.broadcast_to(tf_c[None, :], hit.shape)[hit]
        ids[:, cs][hit] = fac.train_ids[fseg] * LABEL_DIVISOR
        mat[:, cs][hit] = np.where(window, WINDOW, n_pal + fseg)
        lit = np.float32(0.8 if fac.x < 0 else 0.9)
        g = np.where(building & (yl < 3.0), np.float32(0.6), lit)
        # Fence slats (dark gaps every 0.3 m) and a wall's light coping (top 0.15 m).
        g = np.where((tid == TRAIN_ID["fence"]) & (_frac(zl, 0.3) < 0.35), np.float32(0.45) * lit, g)
        g = np.where((tid == TRAIN_ID["wall"]) & (yl > fac.heights[fseg] - 0.15), np.float32(1.2) * lit, g)
        gain[:, cs][hit] = g
        n_pal += len(fac.heights)
    # Street end Z = end_z: distance per row.
    ahead_r = dz_r > 1e-6
    te_r = np.where(ahead_r, np.float32(scene.end_z) / np.where(ahead_r, dz_r, 1.0), np.inf).astype(
        np.float32
    )
    ey_r = hc + te_r * dy_r
    rows_ok = ahead_r & (ey_r >= 0) & (ey_r <= scene.end_height)
    ex = te_r[:, None] * dx_c[None, :]
    hit = rows_ok[:, None] & (te_r[:, None] < t) & (ex > scene.facades[0].x) & (ex < scene.facades[1].x)
    t[hit] = np.broadcast_to(te_r[:, None], hit.shape)[hit]
    ids[hit] = TRAIN_ID["building"] * LABEL_DIVISOR
    mat[hit] = END
    return t.ravel(), ids.astype(np.int32).ravel(), mat.ravel(), gain.ravel()


def render(scene: Scene, rng: np.random.Generator) -> Rendered:
    """Ray cast `scene`; `rng` only adds texture noise (labels and depth do not depend on it)."""
    cam = scene.camera
    h, w = cam.height, cam.width
    d = cam.ray_directions().reshape(3, -1)
    d[np.abs(d) < 1e-9] = 1e-9  # no division by an exact 0 below
    t, ids, mat, gain = _planes(scene, d)
    palette = [BASE_COLORS, scene.end_color[None].astype(np.float32)]
    palette += [f.colors for f in scene.facades]
    n_fixed = FIXED + sum(len(f.heights) for f in scene.facades)
    if len(scene.ids):
        rows, cols, box = _box_pairs(scene)
        # Slab test; ray x depends on the column only, y and z on the row only (pitch-only camera).
        d_hw = d.reshape(3, h, w)
        inv_x, inv_y, inv_z = 1.0 / d_hw[0, 0], 1.0 / d_hw[1, :, 0], 1.0 / d_hw[2, :, 0]
        lo, hi = scene.lo - cam.origin.astype(np.float32), scene.hi - cam.origin.astype(np.float32)
        slabs = []
        for k, inv in ((0, inv_x[cols]), (1, inv_y[rows]), (2, inv_z[rows])):
            a, b = lo[box, k] * inv, hi[box, k] * inv
            slabs.append((np.minimum(a, b), np.maximum(a, b)))
        t_near = np.maximum(np.maximum(slabs[0][0], slabs[1][0]), slabs[2][0])
        t_far = np.minimum(np.minimum(slabs[0][1], slabs[1][1]), slabs[2][1])
        hit = (t_near <= t_far) & (t_near > 0)
        pix, box, t_near = (rows * w + cols)[hit], box[hit], t_near[hit]
        # Face hit = the slab that set t_near: 0 = side (x), 1 = top/bottom (y), 2 = front/back (z).
        axis = np.where(t_near == slabs[0][0][hit], 0, np.where(t_near == slabs[1][0][hit], 1, 2))
        # z-buffer over all primitives and the planes at once.
        np.minimum.at(t, pix, t_near)
        win = t_near == t[pix]
        pix, box, axis = pix[win], box[win], axis[win]
        ids[pix] = scene.ids[box]
        mat[pix] = n_fixed + box
        gain[pix] = np.array([0.72, 1.12, 1.0], np.float32)[axis]  # side / top / front faces
        palette.append(scene.colors)
    palette_k3 = np.concatenate(palette, axis=0)
    sky = ~np.isfinite(t)
    depth = np.where(sky, 0.0, t).astype(np.float32)
    # Colour: palette, face shading, texture noise, haze with distance, sky gradient.
    noise = rng.standard_normal(h * w, dtype=np.float32)
    rgb = palette_k3[mat] * (gain * (1.0 + 0.06 * noise))[:, None] + 4.0 * noise[:, None]
    fog = 1.0 - np.exp(depth * np.float32(-1.0 / 180.0))
    rgb += (HAZE - rgb) * fog[:, None]
    rows = np.arange(h, dtype=np.float32)
    a = np.clip(rows / max(cam.cy + 0.2 * h, 1.0), 0, 1)[:, None]
    sky_col = np.repeat(SKY_TOP * (1 - a) + SKY_HORIZON * a, w, axis=0)
    rgb[sky] = sky_col[sky]
    # Ego-vehicle hood: a curved band at the bottom, VOID with no depth.
    uu = np.arange(w, dtype=np.float32)
    top_w = h * (1.0 - scene.hood_rows * (1.0 - 0.6 * ((uu - w / 2) / (w / 2)) ** 2))
    hood = (rows[:, None] >= top_w[None, :]).ravel()
    ids[hood] = VOID_ID
    rgb[hood] = HOOD
    depth[hood | (depth > MAX_DEPTH)] = 0.0
    depth = np.round(depth * np.float32(DEPTH_SCALE)) / np.float32(DEPTH_SCALE)
    image = np.clip(rgb, 0, 255).astype(np.uint8).reshape(h, w, 3)
    return Rendered(image, ids.reshape(h, w), depth.astype(np.float32).reshape(h, w), scene)
