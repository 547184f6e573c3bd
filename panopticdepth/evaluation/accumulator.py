"""`DPSEvaluator`: PQ / DPQ / DVPQ and depth metrics accumulated in constant memory.

State is per-class sums (tp, fn, fp, iou_sum) for every (window size k, lambda run), depth-metric
pixel sums and the evaluator's abs_rel side value; the only per-frame state kept is the pair tables
of the last k-1 frames of each open sequence (a few hundred rows each). Two evaluators over
disjoint sequences `merge` by addition; `panopticdepth.evaluation.distributed.all_reduce_evaluator`
does the same across torch.distributed ranks.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, replace

import numpy as np

from ..errors import DataError
from ..utils.arrays import to_numpy
from .depth_metrics import boundary_depth_sums, depth_sums, empty_depth_sums, is_raw16
from .matching import PairTable, depth_levels, depth_levels_int, frame_table, match_window
from .pixel_pass import blocked_frame_pass, is_small_unsigned
from .protocol import CITYSCAPES_DPS, Protocol, get_protocol
from .summary import build_summary, format_table

logger = logging.getLogger(__name__)


@dataclass
class FrameRecord:
    """What one frame contributes: its pair table and depth sums (small, picklable)."""

    table: PairTable
    rel_err_sum: float = 0.0  # sum of |p - g| / g over GT-valid pixels (abs_rel side value)
    rel_err_count: int = 0
    depth: np.ndarray | None = None  # depth_metrics sums, or None without depth


class DPSEvaluator:
    """Accumulates DPQ (Eq. 11), PQ (Eq. 10) and depth metrics frame by frame.

    `lambdas`: positive depth thresholds; the no-depth run (lambda -1 for Cityscapes, 0 for
    SemKITTI) is always computed too and gives PQ. `frames`: window sizes k; the first one is the
    headline (k = 1 is single-frame DPQ). `dataset` selects the official evaluator's conventions
    (`protocol.py`). `depth_scale`: depth arrays are in units of 1/depth_scale metres (256 for raw
    PNG integers: the official depth test runs on those integers, docs/evaluation_protocol.md#encodings).
    """

    def __init__(
        self,
        num_classes: int | None = None,
        thing_ids: Iterable[int] | None = None,
        lambdas: Iterable[float] = (0.5, 0.25, 0.1),
        frames: Iterable[int] = (1,),
        dataset: str | Protocol = "cityscapes-dps",
        depth_scale: float = 1.0,
        depth_metrics: bool = True,
        wrap_uint16_depth: bool = False,
    ) -> None:
        protocol = get_protocol(dataset) if isinstance(dataset, str) else dataset
        if num_classes is None:
            num_classes = protocol.num_classes
        if thing_ids is None:
            thing_ids = protocol.thing_classes
        if num_classes != protocol.num_classes or tuple(thing_ids) != protocol.thing_classes:
            names = tuple(protocol.class_names[:num_classes]) + tuple(
                f"class_{c}" for c in range(len(protocol.class_names), num_classes)
            )
            protocol = replace(
                protocol, num_classes=num_classes, thing_classes=tuple(thing_ids), class_names=names
            )
        self.protocol = protocol
        self.lambdas = tuple(float(x) for x in lambdas)
        if any(lam <= 0 for lam in self.lambdas):
            raise ValueError(f"depth thresholds must be positive, got {self.lambdas}")
        self._lam_desc = tuple(sorted(set(self.lambdas), reverse=True))
        self.frames = tuple(dict.fromkeys(int(k) for k in frames))
        if not self.frames or min(self.frames) < 1:
            raise ValueError(f"window sizes must be >= 1, got {self.frames}")
        self.depth_scale = float(depth_scale)
        self.depth_metrics = depth_metrics
        self.wrap_uint16_depth = wrap_uint16_depth
        n_runs = 1 + len(self._lam_desc)
        shape = (len(self.frames), n_runs, protocol.num_classes)
        self.tp = np.zeros(shape)
        self.fn = np.zeros(shape)
        self.fp = np.zeros(shape)
        self.iou_sum = np.zeros(shape)
        self.num_windows = np.zeros(len(self.frames), np.int64)
        self.num_frames = 0
        self.depth = empty_depth_sums()
        self.has_depth = False
        # abs_rel side value: per sequence (PD-city) or sum of window means + count (ViP-kitti).
        self._abs_rel_seq: dict[Hashable, list[float]] = {}
        self._abs_rel_win = np.zeros((len(self.frames), 2))
        self._abs_rel_reduced = np.zeros(2)  # (sum of sequence means, sequences) after all_reduce
        self._pending: dict[Hashable, deque[FrameRecord]] = {}
        # Depth error near GT thing boundaries (`track_boundary_depth`); off by default, so the
        # summary keeps its usual keys.
        self.boundary_band = 0
        self.boundary_depth: np.ndarray | None = None

    def track_boundary_depth(self, band: int = 3) -> DPSEvaluator:
        """Also accumulate the depth metrics in a `band`-pixel band around GT thing boundaries
        (`depth_metrics.thing_boundary_band`) for frames given to `update`; the summary then has a
        "boundary_depth" entry. `merge` adds it; `state_vector` (all_reduce) does not carry it."""
        if band < 1:
            raise ValueError(f"the boundary band must be at least 1 pixel (got {band})")
        self.boundary_band = int(band)
        self.boundary_depth = empty_depth_sums()
        return self

    # ------------------------------------------------------------------ per frame
    def compute_frame(
        self,
        pred_panoptic: np.ndarray,
        pred_depth: np.ndarray | None,
        gt_panoptic: np.ndarray,
        gt_depth: np.ndarray | None,
        name: str = "frame",
        pred_decode=None,
        gt_decode=None,
    ) -> FrameRecord:
        """The pixel pass of one frame (the expensive part; runs in worker processes).

        `pred_decode` / `gt_decode`: see `matching.frame_table` (file readers pass compact codes).
        """
        pred = np.asarray(pred_panoptic)
        gt = np.asarray(gt_panoptic)
        if pred.shape != gt.shape:
            raise DataError(f"{name}: prediction size {pred.shape} differs from ground truth {gt.shape}")
        if (
            pred_decode is None and pred.dtype.kind == "i" and pred.size and pred.min() < 0
        ):  # model VOID (-1) -> void id
            pred = np.where(pred < 0, self.protocol.void_id, pred)
        has_depth = pred_depth is not None and gt_depth is not None
        level, err_sum, err_n, dsums = None, 0.0, 0, None
        if has_depth:
            pred_depth, gt_depth = np.asarray(pred_depth), np.asarray(gt_depth)
            for what, arr in (("prediction depth", pred_depth), ("ground-truth depth", gt_depth)):
                if arr.shape != gt.shape:
                    raise DataError(f"{name}: {what} size {arr.shape} differs from panoptic {gt.shape}")
        if pred_decode is None and gt_decode is None:
            pred, gt = _narrow(pred), _narrow(gt)
        if (
            is_small_unsigned(pred)
            and is_small_unsigned(gt)
            and (not has_depth or (is_raw16(pred_depth) and is_raw16(gt_depth)))
        ):
            blocked = blocked_frame_pass(
                gt,
                pred,
                pred_depth,
                gt_depth,
                self._lam_desc,
                self.wrap_uint16_depth,
                self.depth_scale if self.depth_metrics else None,
                gt_decode,
                pred_decode,
            )
            if blocked is not None:
                self._check_categories(blocked[0], name)
                return FrameRecord(*blocked)
        if has_depth:
            if is_raw16(pred_depth) and is_raw16(gt_depth) and self.depth_metrics:
                # One pass over the raw PNG integers for the depth check and the depth metrics.
                level, err_sum, err_n, dsums = depth_levels_int(
                    pred_depth, gt_depth, self._lam_desc, self.wrap_uint16_depth, self.depth_scale
                )
            else:
                if self._lam_desc:
                    level, err_sum, err_n = depth_levels(
                        pred_depth, gt_depth, self._lam_desc, self.wrap_uint16_depth
                    )
                if self.depth_metrics:
                    dsums = depth_sums(pred_depth, gt_depth, self.depth_scale)
        div = self.protocol.label_divisor
        table = frame_table(gt, pred, level, div, gt_decode, pred_decode, len(self._lam_desc) + 1)
        self._check_categories(table, name)
        return FrameRecord(table, err_sum, err_n, dsums)

    def _check_categories(self, table: PairTable, name: str) -> None:
        """Categories the official evaluator would crash on are input errors
        (docs/evaluation_protocol.md#encodings, docs/evaluation_protocol.md#semkitti)."""
        div, p = self.protocol.label_divisor, self.protocol
        bad_pred = sorted(set(np.unique(table.pred // div).tolist()) - p.valid_pred_categories)
        if bad_pred:
            void = sorted(p.valid_pred_categories - set(range(p.num_classes)))
            raise DataError(
                f"{name}: prediction uses categories {bad_pred}; allowed are 0..{p.num_classes - 1}"
                f" and {void} (void)"
            )
        bad_gt = sorted(set(np.unique(table.gt // div).tolist()) - self.protocol.valid_gt_categories)
        if bad_gt:
            raise DataError(f"{name}: ground truth uses unknown categories {bad_gt}")

    def update(
        self,
        pred_panoptic: np.ndarray,
        pred_depth: np.ndarray | None,
        gt_panoptic: np.ndarray,
        gt_depth: np.ndarray | None,
        sequence: Hashable = None,
    ) -> None:
        """Add one frame; frames of a sequence must come in temporal order (for k > 1)."""
        pred_depth, gt_panoptic, gt_depth = to_numpy(pred_depth), to_numpy(gt_panoptic), to_numpy(gt_depth)
        record = self.compute_frame(to_numpy(pred_panoptic), pred_depth, gt_panoptic, gt_depth)
        if self.boundary_depth is not None and pred_depth is not None and gt_depth is not None:
            p = self.protocol
            self.boundary_depth += boundary_depth_sums(
                pred_depth, gt_depth, gt_panoptic, p.thing_classes, p.label_divisor, self.boundary_band,
                self.depth_scale,
            )  # fmt: skip
        self.add_frame(record, sequence)

    def add_frame(self, record: FrameRecord, sequence: Hashable = None) -> None:
        """Count every window that ends at this frame (windows of k frames, stride 1:
        docs/evaluation_protocol.md#windows)."""
        key = None if self.protocol.windows_cross_sequences else sequence
        pending = self._pending.setdefault(key, deque(maxlen=max(self.frames)))
        pending.append(record)
        self.num_frames += 1
        if record.depth is not None:
            self.has_depth = True
            self.depth += record.depth
        seq_rel = self._abs_rel_seq.setdefault(sequence, [0.0, 0])
        seq_rel[0] += record.rel_err_sum
        seq_rel[1] += record.rel_err_count
        recent = list(pending)
        for ki, k in enumerate(self.frames):
            if len(recent) < k:
                continue
            window = recent[-k:]
            table = PairTable.concatenate([r.table for r in window])
            n_lam = len(self._lam_desc)
            for run in range(1 + n_lam):
                # The j-th largest lambda fails a pixel iff it fails all n - j + 1 smaller-or-equal ones.
                counts = match_window(table, self.protocol, None if run == 0 else n_lam - run + 1)
                self.tp[ki, run] += counts.tp
                self.fn[ki, run] += counts.fn
                self.fp[ki, run] += counts.fp
                self.iou_sum[ki, run] += counts.iou_sum
            self.num_windows[ki] += 1
            n = sum(r.rel_err_count for r in window)
            if n:
                self._abs_rel_win[ki] += (sum(r.rel_err_sum for r in window) / n, 1)

    # ------------------------------------------------------------------ combining
    def merge(self, other: DPSEvaluator) -> DPSEvaluator:
        """Add another evaluator's sums (disjoint sequences, or windows counted once each)."""
        if (other.frames, other._lam_desc, other.protocol) != (self.frames, self._lam_desc, self.protocol):
            raise ValueError("cannot merge evaluators with different settings")
        for attr in ("tp", "fn", "fp", "iou_sum", "num_windows", "depth", "_abs_rel_win", "_abs_rel_reduced"):
            setattr(self, attr, getattr(self, attr) + getattr(other, attr))
        self.num_frames += other.num_frames
        self.has_depth = self.has_depth or other.has_depth
        if self.boundary_depth is not None and other.boundary_depth is not None:
            self.boundary_depth = self.boundary_depth + other.boundary_depth
        for seq, (s, n) in other._abs_rel_seq.items():
            mine = self._abs_rel_seq.setdefault(seq, [0.0, 0])
            mine[0] += s
            mine[1] += n
        return self

    def abs_rel_internal(self, k_index: int) -> float:
        """The official evaluators' internal abs_rel (never printed by them;
        docs/evaluation_protocol.md#abs-rel)."""
        if self.protocol.abs_rel_unit == "window":
            total, count = self._abs_rel_win[k_index]
            return float(total / count) if count else 0.0
        means = [s / n for s, n in self._abs_rel_seq.values() if n]
        total, count = self._abs_rel_reduced
        if count:
            return float((total + sum(means)) / (count + len(means)))
        return float(np.mean(means)) if means else 0.0

    def state_vector(self) -> np.ndarray:
        """Every sum as one float64 vector (exact for counts < 2^53), for all_reduce."""
        means = [s / n for s, n in self._abs_rel_seq.values() if n]
        seq = self._abs_rel_reduced + np.array([sum(means), len(means)])
        parts = [
            self.tp,
            self.fn,
            self.fp,
            self.iou_sum,
            self.num_windows,
            self.depth,
            self._abs_rel_win,
            seq,
        ]
        flat = [np.asarray(p, np.float64).ravel() for p in parts]
        return np.concatenate(flat + [np.array([self.num_frames, float(self.has_depth)])])

    def load_state_vector(self, vec: np.ndarray) -> None:
        """Inverse of `state_vector` (after a sum over ranks); open windows are discarded."""
        vec = np.asarray(vec, np.float64)
        pos = 0

        def take(shape):
            nonlocal pos
            n = int(np.prod(shape))
            out = vec[pos : pos + n].reshape(shape)
            pos += n
            return out.copy()

        self.tp, self.fn, self.fp, self.iou_sum = (take(self.tp.shape) for _ in range(4))
        self.num_windows = take(self.num_windows.shape).astype(np.int64)
        self.depth = take(self.depth.shape)
        self._abs_rel_win = take(self._abs_rel_win.shape)
        self._abs_rel_reduced = take((2,))
        self._abs_rel_seq = {}
        self.num_frames = int(vec[pos])
        self.has_depth = bool(vec[pos + 1])
        self._pending = {}

    def summary(self) -> dict:
        """All numbers in the JSON shape of `panopticdepth evaluate --json` (percent)."""
        return build_summary(self)

    def format_table(self) -> str:
        return format_table(self.summary())


def _narrow(ids: np.ndarray) -> np.ndarray:
    """Integer id maps that fit in 16 bits as uint16, so the blocked table-driven pass applies."""
    if ids.dtype.kind in "iu" and ids.dtype.itemsize > 2 and ids.size:
        if ids.min() >= 0 and ids.max() < 65536:
            return ids.astype(np.uint16)
    return ids


__all__ = ["CITYSCAPES_DPS", "DPSEvaluator", "FrameRecord"]
