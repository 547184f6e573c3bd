"""Monocular depth metrics as mergeable pixel sums (Eigen et al. 2014; KITTI depth benchmark).

Definitions (d = prediction, g = ground truth, both in metres, over the pixels with g > 0, pooled
over the whole dataset, i.e. every valid pixel has the same weight; for the log metrics d is
clamped to >= 1e-3 m so that they stay finite where the prediction is 0):

* abs_rel  = mean(|d - g| / g)
* sq_rel   = mean((d - g)^2 / g)
* rmse     = sqrt(mean((d - g)^2))                       [m]
* rmse_log = sqrt(mean((log d - log g)^2))
* silog    = 100 * sqrt(mean(e^2) - mean(e)^2), e = log d - log g   (KITTI benchmark's SILog)
* delta1/2/3 = 100 * fraction of pixels with max(d/g, g/d) < 1.25, 1.25^2, 1.25^3   [%]

abs_rel equals the DPQ evaluators' internal side value only when that is pooled the same way
(they average it per sequence or per window: docs/evaluation_protocol.md#abs-rel).

`boundary_depth_sums` takes the same sums over a band around ground-truth thing boundaries only
(`DPSEvaluator.track_boundary_depth`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

MIN_DEPTH = 1e-3
_FIELDS = ("n", "abs_rel", "sq_rel", "sq_err", "log_sq", "log_sum", "d1", "d2", "d3")


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """Inner product of two 1-D float64 arrays in this thread, without BLAS.

    `np.dot` hands long vectors to the BLAS library, whose worker threads spin while waiting for
    work; next to the evaluator's reader threads (or other processes) on a small machine that made
    every frame several times slower. `einsum` without `optimize` runs numpy's own loop.
    """
    return float(np.einsum("i,i->", a, b))


def depth_sums(pred: np.ndarray, gt: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """(9,) float64 sums over the valid pixels of one frame; arrays in units of 1/scale metres."""
    if is_raw16(pred) and is_raw16(gt):
        return _depth_sums_raw16(pred, gt, scale)
    g = np.ravel(gt)
    valid = g > 0
    gv = g[valid].astype(np.float64) / scale
    dv = np.ravel(pred)[valid].astype(np.float64) / scale
    diff = dv - gv
    sq = diff * diff
    dl = np.maximum(dv, MIN_DEPTH)
    log_ratio = np.log(dl / gv)
    return np.array(
        [
            gv.size,
            (np.abs(diff) / gv).sum(),
            (sq / gv).sum(),
            sq.sum(),
            (log_ratio * log_ratio).sum(),
            log_ratio.sum(),
            *_delta_counts(dl, gv),
        ],
        dtype=np.float64,
    )


def _delta_counts(d: np.ndarray, g: np.ndarray) -> list[int]:
    """max(d/g, g/d) < c as d < c*g and g < c*d: exact for 1.25^k and 16-bit depths (no log ties)."""
    return [int(np.count_nonzero((d < c * g) & (g < c * d))) for c in (1.25, 1.25**2, 1.25**3)]


def is_raw16(a: np.ndarray) -> bool:
    """Non-negative integers of at most 16 bits: the maps the table-driven (raw 16-bit) paths accept."""
    return a.dtype.kind in "ui" and a.dtype.itemsize <= 2 and (a.dtype.kind == "u" or a.min(initial=0) >= 0)


_INVERSE: list[np.ndarray] = []


def inverse_table() -> np.ndarray:
    """(65536,) float64 1/g, with 0 for g = 0 (invalid GT depth contributes nothing)."""
    if not _INVERSE:
        inv = np.zeros(65536)
        inv[1:] = 1.0 / np.arange(1, 65536)
        _INVERSE.append(inv)
    return _INVERSE[0]


_LOG_CACHE: dict[float, np.ndarray] = {}


def _log_table(scale: float) -> np.ndarray:
    table = _LOG_CACHE.get(scale)
    if table is None:
        table = np.log(np.maximum(np.arange(65536, dtype=np.float64) / scale, MIN_DEPTH))
        _LOG_CACHE[scale] = table
    return table


def _depth_sums_raw16(pred: np.ndarray, gt: np.ndarray, scale: float) -> np.ndarray:
    g = np.ravel(gt)
    g_idx = g.astype(np.intp)
    return raw_depth_sums(pred, g, g_idx, None, np.take(inverse_table(), g_idx), scale)


def raw_depth_sums(
    pred: np.ndarray,
    g: np.ndarray,
    g_idx: np.ndarray,
    abs_diff: np.ndarray | None,
    inv_g: np.ndarray,
    scale: float,
) -> np.ndarray:
    """Sums for raw 16-bit maps from table lookups (1/g, log) instead of per-pixel division / log.

    `abs_diff` (float64 |p - g|, may be modified) and `inv_g` (1/g, 0 where g = 0) can be shared
    with the DPQ depth check.
    """
    p = np.ravel(pred)
    invalid = g == 0
    n_invalid = int(np.count_nonzero(invalid))
    if abs_diff is None:
        abs_diff = np.abs(np.subtract(p, g, dtype=np.int32)).astype(np.float64)
    abs_diff[invalid] = 0.0
    log_table = _log_table(scale)
    log_ratio = np.take(log_table, p.astype(np.intp))
    log_ratio -= np.take(log_table, g_idx)
    log_ratio[invalid] = 0.0
    sq = abs_diff * abs_diff
    g_f = g.astype(np.float64)  # 0 where invalid: never counted by the delta test
    d_f = np.maximum(p.astype(np.float64), MIN_DEPTH * scale)
    return np.array(
        [
            g.size - n_invalid,
            dot(abs_diff, inv_g),
            dot(sq, inv_g) / scale,
            sq.sum() / scale**2,
            dot(log_ratio, log_ratio),
            log_ratio.sum(),
            *_delta_counts(d_f, g_f),
        ],
        dtype=np.float64,
    )


def empty_depth_sums() -> np.ndarray:
    return np.zeros(len(_FIELDS), np.float64)


def depth_summary(sums: np.ndarray) -> dict[str, float]:
    """Metrics from accumulated sums; None (JSON null) when no valid pixel was seen."""
    n = float(sums[0])
    if n == 0:
        keys = ("abs_rel", "sq_rel", "rmse", "rmse_log", "silog", "delta1", "delta2", "delta3")
        return {**{k: None for k in keys}, "num_pixels": 0}
    mean_log = sums[5] / n
    return {
        "abs_rel": float(sums[1] / n),
        "sq_rel": float(sums[2] / n),
        "rmse": float(np.sqrt(sums[3] / n)),
        "rmse_log": float(np.sqrt(sums[4] / n)),
        "silog": float(100.0 * np.sqrt(max(sums[4] / n - mean_log * mean_log, 0.0))),
        "delta1": float(100.0 * sums[6] / n),
        "delta2": float(100.0 * sums[7] / n),
        "delta3": float(100.0 * sums[8] / n),
        "num_pixels": int(n),
    }


def thing_boundary_band(
    gt_panoptic: np.ndarray, thing_classes: Iterable[int], label_divisor: int = 1000, band: int = 3
) -> np.ndarray:
    """(H, W) bool: the `band` pixels on either side of every edge of a ground-truth thing segment.

    An edge lies between two 4-neighbours with different panoptic ids of which at least one is a
    thing class; band = 1 marks just the two pixels touching it, band = k widens that by k - 1
    pixels (8-connected). Instance-wise depth is meant to win there (the paper's Figure 3).
    """
    from scipy import ndimage  # only here: importing the package must stay light

    if band < 1:
        raise ValueError(f"the boundary band must be at least 1 pixel (got {band})")
    ids = np.asarray(gt_panoptic).astype(np.int64)
    thing = np.isin(ids // label_divisor, np.fromiter(thing_classes, np.int64))
    edge = np.zeros(ids.shape, bool)
    for a, b in (((slice(None), slice(1, None)), (slice(None), slice(None, -1))),
                 ((slice(1, None), slice(None)), (slice(None, -1), slice(None)))):  # fmt: skip
        hit = (ids[a] != ids[b]) & (thing[a] | thing[b])
        edge[a] |= hit
        edge[b] |= hit
    if band > 1 and edge.any():
        edge = ndimage.binary_dilation(edge, np.ones((3, 3), bool), iterations=band - 1)
    return edge


def boundary_depth_sums(
    pred: np.ndarray,
    gt: np.ndarray,
    gt_panoptic: np.ndarray,
    thing_classes: Iterable[int],
    label_divisor: int = 1000,
    band: int = 3,
    scale: float = 1.0,
) -> np.ndarray:
    """`depth_sums` restricted to the thing-boundary band (`thing_boundary_band`): GT-valid pixels
    near object edges, where a per-pixel depth map blurs foreground into background."""
    mask = thing_boundary_band(gt_panoptic, thing_classes, label_divisor, band)
    return depth_sums(np.asarray(pred)[mask], np.asarray(gt)[mask], scale)
