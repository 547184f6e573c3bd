"""The per-frame pixel pass for 16-bit maps, blocked so its temporaries stay in cache.

Same results as `matching.frame_table` + `matching.depth_levels_int` (+ depth-metric sums), but
the frame is processed in slices of `CHUNK` pixels: full-frame temporaries (16 MB float64 /
intp arrays on 1024x2048) cost more in page faults and memory traffic than the arithmetic itself,
which made the pass about twice as slow. Id compaction uses frame-global lookup tables (built from
a first, equally blocked, histogram pass), so the per-chunk pair counts simply add up.
"""

from __future__ import annotations

import numpy as np

from .matching import PairTable, depth_levels_int

CHUNK = 1 << 16
_MAX_CELLS = 1 << 20  # beyond this many (gt, level, pred) cells per-chunk histograms get wasteful


def is_small_unsigned(a: np.ndarray | None) -> bool:
    return a is not None and a.dtype.kind == "u" and a.dtype.itemsize <= 2


def _histogram(flat: np.ndarray) -> np.ndarray:
    counts = np.zeros(1 << (8 * flat.dtype.itemsize), np.int64)
    for s in range(0, flat.size, CHUNK):
        counts += np.bincount(flat[s : s + CHUNK], minlength=counts.size)
    return counts


def _lookup(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    present = np.flatnonzero(_histogram(flat))
    small = np.uint8 if present.size <= 256 else np.uint16
    lut = np.zeros(1 << (8 * flat.dtype.itemsize), small)
    lut[present] = np.arange(present.size)
    return present.astype(np.int64), lut


def blocked_frame_pass(
    gt_ids: np.ndarray,
    pred_ids: np.ndarray,
    pred_depth: np.ndarray | None,
    gt_depth: np.ndarray | None,
    lambdas_desc: tuple[float, ...],
    wrap_uint16: bool,
    metrics_scale: float | None,
    gt_decode=None,
    pred_decode=None,
):
    """(PairTable, rel-error sum, valid-depth pixels, depth sums or None), or None when the id
    ranges make the blocked histograms too large (the caller then uses the plain path)."""
    g = np.ravel(gt_ids)
    p = np.ravel(pred_ids)
    g_u, g_lut = _lookup(g)
    p_u, p_lut = _lookup(p)
    has_depth = pred_depth is not None and gt_depth is not None
    n_lev = len(lambdas_desc) + 1 if has_depth else 1
    cells = g_u.size * n_lev * p_u.size
    if cells > _MAX_CELLS:
        return None
    gd = np.ravel(gt_depth) if has_depth else None
    pd = np.ravel(pred_depth) if has_depth else None
    counts = np.zeros(cells, np.int64)
    err_sum, n_valid = 0.0, 0
    dsums = np.zeros(9) if (has_depth and metrics_scale is not None) else None
    gl_dtype = np.uint8 if g_u.size * n_lev <= 256 else np.int32
    for s in range(0, g.size, CHUNK):
        e = s + CHUNK
        gl = np.take(g_lut, g[s:e])
        if has_depth:
            out = depth_levels_int(pd[s:e], gd[s:e], lambdas_desc, wrap_uint16, metrics_scale)
            gl = np.multiply(gl, n_lev, dtype=gl_dtype)
            gl += out[0]
            err_sum += out[1]
            n_valid += out[2]
            if dsums is not None:
                dsums += out[3]
        key = np.multiply(gl, p_u.size, dtype=np.int32)
        key += np.take(p_lut, p[s:e])
        counts += np.bincount(key, minlength=cells)
    rows = np.flatnonzero(counts)
    gl_row = rows // p_u.size
    g_raw = g_u if gt_decode is None else gt_decode(g_u)
    p_raw = p_u if pred_decode is None else pred_decode(p_u)
    table = PairTable(
        gt=g_raw[gl_row // n_lev],
        pred=p_raw[rows % p_u.size],
        level=gl_row % n_lev,
        count=counts[rows],
    )
    return table, err_sum, n_valid, dsums
