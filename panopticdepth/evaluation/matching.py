"""Vectorised segment matching of the official DPQ evaluators (docs/evaluation_protocol.md#matching, Eq.
10-11).

The official scripts run np.unique over `gt * offset + pred` and then loop over segment pairs in
Python, once per lambda. Here one frame is reduced, in a single pass over its pixels, to a small
*pair table*: pixel counts per (GT id, prediction id, depth level), where the depth level of a pixel
is the number of lambda thresholds its relative depth error exceeds. Every lambda run (and the
no-depth run) is then a filter on that table, and a k-frame window is the sum of k frame tables
(ids are spatio-temporal tubes, docs/evaluation_protocol.md#matching), so pixels are touched once for all
lambdas and all k.

Why this is exact: a pixel failing the depth check at lambda becomes part of the shared
category-19 segment (docs/evaluation_protocol.md#depth-failed-segment). Category 19 is never matched against
classes 0..18 and its counts are cut off at the end, so the only effect of a failed pixel on the 19 reported
classes is
that it leaves its predicted segment (intersection, predicted area and ignore overlap shrink; GT
areas and unions' GT part do not). Dropping failed rows from the table reproduces that exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .depth_metrics import dot, inverse_table, is_raw16, raw_depth_sums
from .protocol import Protocol

# Past this many cells a dense bincount / lookup table is wasteful; split or sort instead.
_MAX_DENSE = 1 << 22


@dataclass
class PairTable:
    """Pixel counts of one frame or window: row i = (gt[i], pred[i], level[i]) seen count[i] times."""

    gt: np.ndarray  # (R,) int64 raw GT ids (category * divisor + instance)
    pred: np.ndarray  # (R,) int64 raw prediction ids
    level: np.ndarray  # (R,) int64 number of lambdas the pixels fail (0 = pass all)
    count: np.ndarray  # (R,) int64 pixel counts

    @staticmethod
    def concatenate(tables: list[PairTable]) -> PairTable:
        """Sum of tables (a k-frame window); duplicate rows are merged."""
        if len(tables) == 1:
            return tables[0]
        gt = np.concatenate([t.gt for t in tables])
        pred = np.concatenate([t.pred for t in tables])
        level = np.concatenate([t.level for t in tables])
        count = np.concatenate([t.count for t in tables])
        g_u, g_i = np.unique(gt, return_inverse=True)
        p_u, p_i = np.unique(pred, return_inverse=True)
        n_lev = int(level.max(initial=0)) + 1
        key = (g_i.astype(np.int64) * len(p_u) + p_i) * n_lev + level
        k_u, k_i = np.unique(key, return_inverse=True)
        summed = np.bincount(k_i, weights=count).astype(np.int64)
        return PairTable(
            gt=g_u[k_u // n_lev // len(p_u)],
            pred=p_u[k_u // n_lev % len(p_u)],
            level=k_u % n_lev,
            count=summed,
        )


def compact_ids(ids: np.ndarray, divisor: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique ids, index of each element into them), in O(N) when the id range allows.

    A bincount over the id range plus a lookup table is several times faster than np.unique's sort
    on full-resolution frames. Ids too large for a table (SemKITTI's class * 2^20 + instance) are
    split by `divisor` into (category, instance), each compacted by table.
    """
    flat = np.ravel(ids)
    if flat.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int32)
    if flat.dtype.kind == "u" and flat.dtype.itemsize <= 2:
        lo, hi = 0, None  # bincount finds the range itself
    else:
        lo, hi = int(flat.min()), int(flat.max())
    if lo >= 0 and (hi is None or hi < _MAX_DENSE):
        counts = np.bincount(flat)
        present = np.flatnonzero(counts)
        small = np.uint8 if present.size <= 256 else np.uint16 if present.size <= 65536 else np.int32
        lut = np.zeros(counts.size, dtype=small)  # narrow indices: less memory traffic downstream
        lut[present] = np.arange(present.size)
        return present.astype(np.int64), np.take(lut, flat)
    if divisor is not None and lo >= 0:
        cat = flat // divisor
        inst_u, inst_i = compact_ids(flat - cat * divisor)
        cat_u, cat_i = compact_ids(cat)
        pair_u, pair_i = compact_ids(cat_i.astype(np.int64) * inst_u.size + inst_i)
        raw = cat_u[pair_u // inst_u.size] * divisor + inst_u[pair_u % inst_u.size]
        return raw, pair_i
    uniq, inv = np.unique(flat, return_inverse=True)
    return uniq.astype(np.int64), inv.ravel()


def frame_table(
    gt_ids: np.ndarray,
    pred_ids: np.ndarray,
    level: np.ndarray | None,
    divisor: int,
    gt_decode=None,
    pred_decode=None,
    num_levels: int | None = None,
) -> PairTable:
    """One pass over a frame's pixels: counts per (GT id, prediction id, depth level).

    `gt_decode` / `pred_decode` map the unique values of compact on-disk codes (e.g. G * 256 + R of
    a prediction PNG) to raw ids (R * 1000 + G), so the per-pixel work never builds raw ids.
    """
    g_u, g_i = compact_ids(gt_ids, divisor)
    p_u, p_i = compact_ids(pred_ids, divisor)
    if gt_decode is not None:
        g_u = gt_decode(g_u)
    if pred_decode is not None:
        p_u = pred_decode(p_u)
    if level is None:
        n_lev = 1
    else:
        n_lev = num_levels if num_levels is not None else int(level.max(initial=0)) + 1
    cells = g_u.size * p_u.size * n_lev
    dtype = np.int32 if cells < 2**31 else np.int64
    # key = (gt index * levels + level) * predictions + prediction index
    if n_lev > 1:
        lev = np.ravel(level)
        if g_u.size * n_lev <= 256:
            g_i = np.multiply(g_i, n_lev, dtype=np.uint8)
            g_i += lev
        else:
            g_i = np.multiply(g_i, n_lev, dtype=dtype)
            g_i += lev
    key = np.multiply(g_i, p_u.size, dtype=dtype)
    key += p_i
    if cells <= _MAX_DENSE:
        counts = np.bincount(key, minlength=cells)
        rows = np.flatnonzero(counts)
        count = counts[rows].astype(np.int64)
    else:
        rows, count = np.unique(key, return_counts=True)
        rows = rows.astype(np.int64)
    gl = rows // p_u.size
    return PairTable(
        gt=g_u[gl // n_lev],
        pred=p_u[rows % p_u.size],
        level=gl % n_lev,
        count=count.astype(np.int64),
    )


@dataclass
class MatchCounts:
    """Per-class sums of one run (before the cut to `num_classes`): the evaluator's four arrays."""

    tp: np.ndarray
    fn: np.ndarray
    fp: np.ndarray
    iou_sum: np.ndarray


def match_window(table: PairTable, protocol: Protocol, max_level: int | None) -> MatchCounts:
    """Match the segments of one window (docs/evaluation_protocol.md#matching); `max_level` keeps pixels with
    level < it.

    `max_level=None` is the no-depth run (lambda -1 / 0). A pixel's level counts the lambdas its
    error exceeds, so with n lambdas sorted in decreasing order the run of the j-th (1-based) keeps
    exactly the pixels with level < n - j + 1 (those failing it also fail every smaller lambda).
    """
    div, vcat, n_cls = protocol.label_divisor, protocol.void_category, protocol.num_classes
    g_u, g_i = np.unique(table.gt, return_inverse=True)
    gt_area = np.bincount(g_i, weights=table.count, minlength=g_u.size)
    keep = slice(None) if max_level is None else table.level < max_level
    kg, kp, kc = g_i[keep], table.pred[keep], table.count[keep]
    p_u, p_i = np.unique(kp, return_inverse=True)
    # Collapse the level axis: intersections per (GT, prediction) pair, sorted like the official keys.
    pair_u, pair_i = np.unique(kg.astype(np.int64) * p_u.size + p_i, return_inverse=True)
    inter = np.bincount(pair_i, weights=kc, minlength=pair_u.size)
    pg, pp = pair_u // max(p_u.size, 1), pair_u % max(p_u.size, 1)
    pred_area = np.bincount(pp, weights=inter, minlength=p_u.size)
    g_cat, p_cat = g_u // div, p_u // div
    # only exactly the void id leaves the union (docs/evaluation_protocol.md#void-union)
    on_void = g_u[pg] == protocol.void_id
    void_overlap = np.bincount(pp[on_void], weights=inter[on_void], minlength=p_u.size)
    # every void-category GT id excuses FPs (docs/evaluation_protocol.md#fp-excusal)
    on_ignore = g_cat[pg] == vcat
    ignore_overlap = np.bincount(pp[on_ignore], weights=inter[on_ignore], minlength=p_u.size)

    same = (g_cat[pg] == p_cat[pp]) & (p_cat[pp] != vcat)
    union = gt_area[pg] + pred_area[pp] - inter - void_overlap[pp]
    is_tp = same & (2.0 * inter > union)  # IoU > 0.5, strict; integers, so exact
    tp_cls = g_cat[pg[is_tp]]
    iou = inter[is_tp] / union[is_tp]

    size = max(n_cls, int(g_cat.max(initial=0)) + 1, int(p_cat.max(initial=0)) + 1)
    tp = np.bincount(tp_cls, minlength=size).astype(np.float64)
    iou_sum = np.bincount(tp_cls, weights=iou, minlength=size)

    gt_matched = np.zeros(g_u.size, bool)
    gt_matched[pg[is_tp]] = True
    fn_mask = ~gt_matched & (g_cat != vcat)
    fn = np.bincount(g_cat[fn_mask], minlength=size).astype(np.float64)

    pred_matched = np.zeros(p_u.size, bool)
    pred_matched[pp[is_tp]] = True
    excused = 2.0 * ignore_overlap > pred_area  # > 50 % on ignore, strict, full predicted area
    fp_mask = ~pred_matched & ~excused & (p_cat != vcat)
    fp = np.bincount(p_cat[fp_mask], minlength=size).astype(np.float64)
    return MatchCounts(tp=tp[:n_cls], fn=fn[:n_cls], fp=fp[:n_cls], iou_sum=iou_sum[:n_cls])


def depth_levels(
    pred_depth: np.ndarray,
    gt_depth: np.ndarray,
    lambdas_desc: tuple[float, ...],
    wrap_uint16: bool = False,
) -> tuple[np.ndarray, float, int]:
    """Per-pixel count of failed lambdas, plus (sum of relative errors, valid pixels)
    (docs/evaluation_protocol.md#depth-test).

    err = |pred - gt| / gt in float64 on the arrays as given (raw PNG integers for the official
    files), computed only where gt > 0, failing when err > lambda (strict). The subtraction is signed
    (docs/evaluation_protocol.md#uint16-wraparound) unless `wrap_uint16` reproduces the Pillow >= 10.3 hazard
    (NOT the reference). Raw 16-bit integer maps take the exact table-driven path of `depth_levels_int`.
    """
    if is_raw16(pred_depth) and is_raw16(gt_depth):
        return depth_levels_int(pred_depth, gt_depth, lambdas_desc, wrap_uint16)
    g = np.ravel(gt_depth)
    p = np.ravel(pred_depth)
    valid = g > 0
    gv = g[valid].astype(np.float64)
    if wrap_uint16:
        diff = ((p[valid].astype(np.int64) - g[valid].astype(np.int64)) % 65536).astype(np.float64)
    else:
        diff = np.abs(p[valid].astype(np.float64) - gv)
    err = diff / gv
    lev = np.zeros(err.shape, np.uint8)
    for lam in lambdas_desc:
        lev += err > lam
    level = np.zeros(g.shape, np.uint8)
    level[valid] = lev
    return level, float(err.sum()), int(err.size)


_THRESHOLD_CACHE: dict[float, np.ndarray] = {}


def fail_thresholds(lam: float) -> np.ndarray:
    """(65536,) int32: T[g] = the smallest integer a with float64(a / g) > lam (65536+ when g = 0).

    float64(a / g) is non-decreasing in a, so `a >= T[g]` is bit-for-bit the official test
    `|p - g| / g > lam` for integer maps, without a per-pixel division.
    """
    table = _THRESHOLD_CACHE.get(lam)
    if table is None:
        g = np.arange(1, 65536, dtype=np.float64)
        base = np.floor(lam * g) - 2
        cand = base[:, None] + np.arange(6)[None, :]  # the true threshold lies within +-2 of lam*g
        ok = (cand / g[:, None]) > lam
        first = np.argmax(ok, axis=1)
        table = np.empty(65536, np.int32)
        table[0] = np.iinfo(np.int32).max  # no GT depth: never checked
        table[1:] = np.clip(cand[np.arange(g.size), first], 0, np.iinfo(np.int32).max)
        _THRESHOLD_CACHE[lam] = table
    return table


def depth_levels_int(
    pred_raw: np.ndarray,
    gt_raw: np.ndarray,
    lambdas_desc: tuple[float, ...],
    wrap_uint16: bool = False,
    metrics_scale: float | None = None,
):
    """`depth_levels` for raw uint16 maps: threshold tables instead of float division per pixel.

    With `metrics_scale` (units per metre) the depth-metric sums of `depth_metrics.depth_sums` are
    computed from the same intermediate arrays and returned as a fourth value.
    """
    g = np.ravel(gt_raw)
    g_idx = g.astype(np.intp)  # one conversion for all the table lookups below
    diff = np.subtract(np.ravel(pred_raw), g, dtype=np.int32)
    if wrap_uint16:
        diff &= 0xFFFF  # (p - g) mod 65536: what uint16 arithmetic gives (NOT the reference)
    else:
        np.abs(diff, out=diff)
    level = np.zeros(g.shape, np.uint8)
    for lam in lambdas_desc:
        level += np.greater_equal(diff, np.take(fail_thresholds(lam), g_idx)).view(np.uint8)
    # Side value: sum over valid pixels of |p - g| / g (as |p - g| * (1/g): equal to ~1e-16 relative).
    inv_g = np.take(inverse_table(), g_idx)  # 0 where g = 0
    abs_diff = diff.astype(np.float64)
    err_sum = dot(abs_diff, inv_g)
    n_valid = int(np.count_nonzero(g))
    if metrics_scale is None:
        return level, err_sum, n_valid
    sums = raw_depth_sums(pred_raw, g, g_idx, None if wrap_uint16 else abs_diff, inv_g, metrics_scale)
    return level, err_sum, n_valid, sums
