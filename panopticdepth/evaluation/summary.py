"""From accumulated sums to the reported numbers (docs/evaluation_protocol.md#aggregation) and a paper-like
table.

PQ per class: SQ = iou_sum / max(tp, 1), RQ = tp / max(tp + fn/2 + fp/2, 1) (PD-city) or the same
with `+ 1e-10` instead of `max(., 1)` (ViP-kitti); PQ = SQ * RQ. Means are over *all* classes
(a class with no GT and no prediction scores 0 and stays in the mean,
docs/evaluation_protocol.md#aggregation), taken with numpy's mean and multiplied by 100 afterwards, as the
official code does.
"""

from __future__ import annotations

from typing import Protocol as Structural

import numpy as np

from .depth_metrics import depth_summary
from .protocol import Protocol, lambda_key


class EvaluatorSums(Structural):
    """What the summary reads from an evaluator (`accumulator.DPSEvaluator`); this module does not
    import the accumulator, the accumulator imports this one."""

    protocol: Protocol
    frames: tuple[int, ...]
    lambdas: tuple[float, ...]
    tp: np.ndarray
    fn: np.ndarray
    fp: np.ndarray
    iou_sum: np.ndarray
    num_windows: np.ndarray
    num_frames: int
    depth: np.ndarray
    has_depth: bool

    def abs_rel_internal(self, k_index: int) -> float: ...


def class_pq(tp: np.ndarray, fn: np.ndarray, fp: np.ndarray, iou_sum: np.ndarray, protocol: Protocol):
    """(pq, sq, rq) per class as fractions, with the evaluator's own denominators."""
    denom = tp + 0.5 * fn + 0.5 * fp
    if protocol.epsilon is None:
        sq = iou_sum / np.maximum(tp, 1)
        rq = tp / np.maximum(denom, 1)
    else:
        sq = iou_sum / (tp + protocol.epsilon)
        rq = tp / (denom + protocol.epsilon)
    return sq * rq, sq, rq


def _run_result(ev: EvaluatorSums, ki: int, run: int) -> dict:
    p = ev.protocol
    tp, fn, fp, iou = ev.tp[ki, run], ev.fn[ki, run], ev.fp[ki, run], ev.iou_sum[ki, run]
    pq, sq, rq = class_pq(tp, fn, fp, iou, p)
    th, st = list(p.thing_classes), list(p.stuff_classes)
    averages = {
        "pq": float(pq.mean() * 100),
        "pq_th": float(pq[th].mean() * 100) if th else 0.0,
        "pq_st": float(pq[st].mean() * 100) if st else 0.0,
    }
    classes = [
        {
            "id": c,
            "name": p.class_names[c],
            "isthing": c in p.thing_classes,
            "pq": float(pq[c] * 100),
            "sq": float(sq[c] * 100),
            "rq": float(rq[c] * 100),
            "tp": float(tp[c]),
            "fn": float(fn[c]),
            "fp": float(fp[c]),
            "iou_sum": float(iou[c]),
        }
        for c in range(p.num_classes)
    ]
    return {
        "averages": averages,
        "dvpq": averages["pq"],
        "dvpq_th": averages["pq_th"],
        "dvpq_st": averages["pq_st"],
        "sq": float(sq.mean() * 100),
        "rq": float(rq.mean() * 100),
        "classes": classes,
        "abs_rel_internal": ev.abs_rel_internal(ki) if run > 0 else 0.0,
        "num_windows": int(ev.num_windows[ki]),
    }


def build_summary(ev: EvaluatorSums) -> dict:
    """The `evaluate --json` document. Headline numbers use the first window size."""
    p = ev.protocol
    lam_desc = tuple(sorted(set(ev.lambdas), reverse=True))  # run order (DPSEvaluator._lam_desc)
    no_depth = lambda_key(p.no_depth_lambda)
    runs: dict[str, dict] = {}
    per_k: dict[int, dict] = {}
    for ki, k in enumerate(ev.frames):
        results = {no_depth: _run_result(ev, ki, 0)}
        for j, lam in enumerate(lam_desc, start=1):
            results[lambda_key(lam)] = _run_result(ev, ki, j)
        per_k[k] = results
        order = [no_depth] + [lambda_key(lam) for lam in ev.lambdas]
        for key in order:
            runs[f"k={k},lambda={key}"] = results[key]

    def dpq_table(results: dict) -> dict:
        table = {no_depth: _triple(results[no_depth])}
        for lam in ev.lambdas:
            table[lambda_key(lam)] = _triple(results[lambda_key(lam)])
        if ev.lambdas:
            mean = {
                name: float(np.mean([table[lambda_key(lam)][name] for lam in ev.lambdas]))
                for name in ("dpq", "dpq_th", "dpq_st")
            }
            table["mean"] = mean
            table["averages"] = dict(mean)
        return table

    head = per_k[ev.frames[0]]
    pq_run = head[no_depth]
    out: dict = {
        "dataset": p.name,
        "frames": ev.frames[0],
        "window_sizes": list(ev.frames),
        "lambdas": list(ev.lambdas),
        "num_frames": ev.num_frames,
        "pq": {
            **pq_run["averages"],
            "sq": pq_run["sq"],
            "rq": pq_run["rq"],
        },
        "dpq": dpq_table(head),
        "classes": pq_run["classes"],
        "dvpq": {f"k={k}": dpq_table(per_k[k]) for k in ev.frames},
        "runs": runs,
        "depth": depth_summary(ev.depth) if ev.has_depth else {},
    }
    boundary = getattr(ev, "boundary_depth", None)  # only with DPSEvaluator.track_boundary_depth
    if boundary is not None:
        out["boundary_depth"] = {**depth_summary(boundary), "band": int(ev.boundary_band)}
    for k in ev.frames:
        if ev.lambdas:
            m = out["dvpq"][f"k={k}"]["mean"]
            out[f"mean_over_lambdas_k={k}"] = {
                "dvpq": m["dpq"],
                "dvpq_th": m["dpq_th"],
                "dvpq_st": m["dpq_st"],
            }
    return out


def _triple(run: dict) -> dict:
    a = run["averages"]
    return {"dpq": a["pq"], "dpq_th": a["pq_th"], "dpq_st": a["pq_st"]}


def format_table(summary: dict) -> str:
    """Paper-style text: DPQ / DPQ_Th / DPQ_St per lambda (and per k), PQ, depth metrics."""
    lines = [f"dataset {summary.get('dataset', '?')}, {summary.get('num_frames', 0)} frames"]
    for kname, table in summary.get("dvpq", {"k=1": summary["dpq"]}).items():
        metric = "DPQ" if kname == "k=1" else f"DVPQ ({kname})"
        lines.append("")
        lines.append(f"{metric:<16}{'all':>8}{'Th':>8}{'St':>8}")
        for key, vals in table.items():
            if key == "averages":
                continue
            if key == "mean":
                label = "mean λ"
            else:
                label = f"λ={key}" if float(key) > 0 else "no depth (PQ)"
            lines.append(f"{label:<16}{vals['dpq']:>8.2f}{vals['dpq_th']:>8.2f}{vals['dpq_st']:>8.2f}")
    pq = summary["pq"]
    lines.append("")
    lines.append(f"{'PQ':<16}{pq['pq']:>8.2f}{pq['pq_th']:>8.2f}{pq['pq_st']:>8.2f}")
    lines.append("")
    lines.append(f"{'class':<16}{'PQ':>8}{'SQ':>8}{'RQ':>8}{'TP':>7}{'FN':>7}{'FP':>7}")
    for c in summary["classes"]:
        lines.append(
            f"{c['name']:<16}{c['pq']:>8.2f}{c['sq']:>8.2f}{c['rq']:>8.2f}"
            f"{int(c['tp']):>7d}{int(c['fn']):>7d}{int(c['fp']):>7d}"
        )
    depth = summary.get("depth") or {}
    if depth and depth.get("num_pixels"):
        lines.append("")
        names = ("abs_rel", "sq_rel", "rmse", "rmse_log", "silog", "delta1", "delta2", "delta3")
        heads = ("AbsRel", "SqRel", "RMSE", "RMSElog", "SILog", "δ<1.25", "δ<1.25²", "δ<1.25³")
        lines.append("".join(f"{h:>10}" for h in heads))
        lines.append("".join(f"{depth[n]:>10.4f}" for n in names))
    edge = summary.get("boundary_depth") or {}
    if edge.get("num_pixels"):
        lines.append(
            f"near thing boundaries (band {edge['band']} px, {edge['num_pixels']} px): "
            f"AbsRel {edge['abs_rel']:.4f}  RMSE {edge['rmse']:.4f}"
        )
    return "\n".join(lines)
