"""DVPQ over windows of k = 1..4 frames with tracked and with per-frame instance ids.

Held-out moving synthetic sequences (`synth --moving`: a driving camera, a frame every 5 of a
17 Hz video by default) go through a model folder's `Predictor` (one batched pass per sequence),
then through `modeling.tracking.Tracker` in frame order, and into `DPSEvaluator` (Cityscapes-DVPS
protocol, lambda = 0.5 / 0.25 / 0.1) once per way of labelling instances:

* per-frame: the network's own ids (what PanopticDepth outputs);
* tracked: the default tracker; and, to see which cue carries it, kernels only, position only,
  and no memory of lost tracks;
* GT ids: each of the network's thing segments takes the id of the ground-truth object it covers
  (IoU > 0.5), i.e. perfect association of the well-detected segments, to tell association errors
  from detection errors (not a strict ceiling: segments matching no object keep per-frame ids
  there, while a tracker may still link them);
* GT segments (optional, `--gt-segments`): perfect segments and depth with per-frame ids in a
  shuffled order, tracked by position only: association errors alone.

It also counts, for ground-truth things found (IoU > 0.5) in two consecutive frames, how often the
predicted id was kept, by how far the object moved in the image and by how much of it stayed
visible (occlusion), and how often an object found again after one missed frame got its id back.

    python benchmarks/video_tracking.py --weights runs/small/model [--sequences 10] [--length 6]
        [--size 128x256] [--seed 1000] [--frame-step 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from panopticdepth.data.synthetic import generate_sequence
from panopticdepth.evaluation import DPSEvaluator
from panopticdepth.io.pointcloud import default_intrinsics
from panopticdepth.modeling.outputs import PanopticDepthResult, Segment
from panopticdepth.modeling.predictor import Predictor
from panopticdepth.modeling.tracking import Tracker, TrackerConfig, relabel

WINDOWS = (1, 2, 3, 4)
VOID = 32000


def per_frame(results, intr):
    return list(results)


def tracked(config: TrackerConfig):
    def run(results, intr):
        tracker = Tracker(config, intr)
        return [tracker.update(r) for r in results]

    return run


VARIANTS = {
    "per-frame ids": per_frame,
    "tracked": tracked(TrackerConfig()),
    "tracked, no low-score instances": tracked(TrackerConfig(low_score=None)),
    "tracked, kernels only": tracked(TrackerConfig(kernel_weight=1.0)),
    "tracked, position only": tracked(TrackerConfig(kernel_weight=0.0)),
    "tracked, no memory": tracked(TrackerConfig(memory=0)),
}


def gt_result(frame, rng: np.random.Generator) -> PanopticDepthResult:
    """Ground-truth segments and depth with per-frame instance ids in a random order, no kernels."""
    pan = frame.panoptic.astype(np.int64)
    ids, counts = np.unique(pan, return_counts=True)
    segments = []
    for pid, n in zip(ids.tolist(), counts.tolist()):
        if pid < VOID:
            segments.append(Segment(pid, pid // 1000, pid % 1000, pid % 1000 > 0, 1.0, n))
    as_t = torch.from_numpy
    result = PanopticDepthResult(as_t(pan), as_t(pan // 1000), as_t(frame.depth), segments)
    new, used = {}, {}
    for i in rng.permutation(len(segments)):
        s = segments[i]
        if s.is_thing:
            used[s.category] = used.get(s.category, 0) + 1
            new[int(i)] = s.category * 1000 + used[s.category]
    return relabel(result, new)


def gt_ids(result: PanopticDepthResult, frame) -> PanopticDepthResult:
    """The network's segments renamed after the ground-truth object they match (IoU > 0.5); the
    others get ids 500+ (never a ground-truth id of these scenes)."""
    pan = result.panoptic.cpu().numpy()
    gt = frame.panoptic
    new = {}
    for i, s in enumerate(result.segments):
        if not s.is_thing:
            continue
        m = pan == s.id
        vals, cnt = np.unique(gt[m], return_counts=True)
        k = int(np.argmax(cnt))
        g = int(vals[k])
        union = int(m.sum()) + int((gt == g).sum()) - int(cnt[k])
        ok = g // 1000 == s.category and g % 1000 and cnt[k] / union > 0.5
        new[i] = g if ok else s.category * 1000 + 500 + s.instance
    return relabel(result, new)


def to_eval(result, num_classes: int = 19):
    pred = result.panoptic.cpu().numpy().astype(np.int64)
    pred[(pred < 0) | (pred // 1000 >= num_classes)] = VOID
    depth = None
    if result.depth is not None:
        depth = np.floor(np.clip(result.depth.float().cpu().numpy(), 0, 80.0) * 256.0) / 256.0
    return pred, depth


def consistency(stats: dict, frames, preds) -> None:
    """Count kept / switched ids of GT things matched in consecutive frames (see module doc)."""

    def matches(gt, pred):
        out = {}
        for gid in np.unique(gt):
            if gid % 1000 == 0 or gid >= VOID:
                continue
            m = gt == gid
            vals, cnt = np.unique(pred[m], return_counts=True)
            k = int(np.argmax(cnt))
            pid = int(vals[k])
            if pid % 1000 == 0 or pid >= VOID or pid // 1000 != gid // 1000:
                continue
            union = int(m.sum()) + int((pred == pid).sum()) - int(cnt[k])
            if cnt[k] / union > 0.5:
                out[int(gid)] = (pid, int(m.sum()), np.argwhere(m).mean(0))
        return out

    w = frames[0].panoptic.shape[1]
    found = [matches(f.panoptic, p) for f, p in zip(frames, preds)]
    for t in range(1, len(frames)):
        for gid, (pid, area, centre) in found[t].items():
            if gid in found[t - 1]:
                ppid, parea, pcentre = found[t - 1][gid]
                step = float(np.abs(centre - pcentre).max()) / w
                motion = "fast (> 5 % of width)" if step > 0.05 else "slow (<= 5 % of width)"
                vis = area / max(parea, 1)
                occl = "occluded/shrinking (area < 0.7x)" if vis < 0.7 else "visible (area >= 0.7x)"
                for key in (motion, occl, "all"):
                    kept, n = stats.setdefault(key, [0, 0])
                    stats[key] = [kept + (pid == ppid), n + 1]
            elif t >= 2 and gid in found[t - 2]:
                key = "found again after 1 missed frame"
                kept, n = stats.setdefault(key, [0, 0])
                stats[key] = [kept + (pid == found[t - 2][gid][0]), n + 1]


AREA_BINS = (100, 400, 1600)  # pixels, for the detection table


def _best_iou(pan: np.ndarray, ids: list[int], mask: np.ndarray) -> float:
    best = 0.0
    for pid in ids:
        pm = pan == pid
        inter = int((pm & mask).sum())
        if inter:
            best = max(best, inter / int((pm | mask).sum()))
    return best


def detection(stats: dict, frames, results) -> None:
    """Per-frame recall of GT things (a segment with IoU > 0.5) by area, and how many of the missed
    ones a low-score instance (`result.candidates`) would have covered."""
    for frame, result in zip(frames, results):
        gt = frame.panoptic.astype(np.int64)
        pan = result.panoptic.cpu().numpy()
        found_ids = [s.id for s in result.segments if s.is_thing]
        cands = result.candidates
        low_pan, low_ids = None, []
        if cands is not None and cands.num_candidates:
            expanded = cands.expanded()
            low_pan = expanded.panoptic.cpu().numpy()
            low_ids = [s.id for s in expanded.segments if s.is_thing and s.rank >= cands.num_selected]
        for gid in np.unique(gt):
            if gid % 1000 == 0 or gid >= VOID:
                continue
            mask = gt == gid
            area = int(mask.sum())
            lower = max([0, *(b for b in AREA_BINS if area >= b)])
            upper = min([b for b in AREA_BINS if area < b], default=None)
            key = f"{lower}-{upper - 1} px" if upper else f">= {lower} px"
            row = stats.setdefault(key, [0, 0, 0])
            row[0] += 1
            if _best_iou(pan, found_ids, mask) > 0.5:
                row[1] += 1
            elif low_pan is not None and _best_iou(low_pan, low_ids, mask) > 0.5:
                row[2] += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="model folder")
    ap.add_argument("--sequences", type=int, default=10)
    ap.add_argument("--length", type=int, default=6)
    ap.add_argument("--size", default="128x256")
    ap.add_argument(
        "--seed", type=int, default=1000, help="sequence seed (held out: training used other seeds)"
    )
    ap.add_argument("--frame-step", type=int, default=5, help="video frames between two frames at 17 Hz")
    ap.add_argument("--batch-size", type=int, default=6)
    ap.add_argument("--gt-segments", action="store_true", help="also track ground-truth segments")
    ap.add_argument("--json", help="write the numbers here")
    ap.add_argument("--low-score", type=float, default=TrackerConfig.low_score, help="tracker low_score")
    ap.add_argument("--low-match", type=float, default=TrackerConfig.low_match_threshold)
    args = ap.parse_args()
    h, w = (int(x) for x in args.size.lower().split("x"))
    predictor = Predictor.from_dir(args.weights, with_instance_masks=False, with_sem_seg=False)
    predictor.candidate_score = args.low_score  # low-score instances for the tracker's second pass
    intr = default_intrinsics(h, w)
    variants = dict(VARIANTS)
    variants["tracked"] = tracked(TrackerConfig(low_score=args.low_score, low_match_threshold=args.low_match))
    variants["GT ids (segments with IoU > 0.5)"] = "gt-ids"
    if args.gt_segments:
        variants["GT segments, per-frame ids"] = "gt-per-frame"
        variants["GT segments, tracked (position only)"] = "gt-tracked"
    evaluators = {
        name: DPSEvaluator(lambdas=(0.5, 0.25, 0.1), frames=WINDOWS, depth_metrics=False) for name in variants
    }
    switch_stats: dict[str, dict] = {"per-frame ids": {}, "tracked": {}}
    detection_stats: dict[str, list[int]] = {}
    t_infer = 0.0
    for s in range(args.sequences):
        frames = generate_sequence(args.seed, s, args.length, h, w, frame_step=args.frame_step)
        t0 = time.perf_counter()
        results = predictor.predict_batch([f.image for f in frames], batch_size=args.batch_size)
        t_infer += time.perf_counter() - t0
        detection(detection_stats, frames, results)
        rng = np.random.default_rng([args.seed, s])
        gt_results = [gt_result(f, rng) for f in frames] if args.gt_segments else []
        for name, run in variants.items():
            if run == "gt-per-frame":
                labelled = gt_results
            elif run == "gt-tracked":
                labelled = tracked(TrackerConfig(kernel_weight=0.0))(gt_results, intr)
            elif run == "gt-ids":
                labelled = [gt_ids(r, f) for r, f in zip(results, frames)]
            else:
                labelled = run(results, intr)
            preds = []
            for frame, result in zip(frames, labelled):
                pred, depth = to_eval(result)
                preds.append(pred)
                evaluators[name].update(pred, depth, frame.panoptic, frame.depth, sequence=s)
            if name in switch_stats:
                consistency(switch_stats[name], frames, preds)
    n_frames = args.sequences * args.length
    print(
        f"{args.sequences} sequences x {args.length} frames at {h}x{w}, every {args.frame_step}th frame of "
        f"17 Hz, seed {args.seed}; inference {t_infer / n_frames:.2f} s/frame"
    )
    print()
    header = "| ids | " + " | ".join(f"DVPQ k={k} (all / Th / St)" for k in WINDOWS) + " | Th k=4 / k=1 |"
    print(header)
    print("|" + "---|" * (len(WINDOWS) + 2))
    out: dict = {"settings": vars(args), "variants": {}, "id_consistency": switch_stats}
    for name, ev in evaluators.items():
        summ = ev.summary()
        row = {k: summ[f"mean_over_lambdas_k={k}"] for k in WINDOWS}
        th1, th4 = row[1]["dvpq_th"], row[4]["dvpq_th"]
        ratio = th4 / th1 if th1 > 0 else float("nan")
        cells = " | ".join(
            f"{row[k]['dvpq']:.1f} / {row[k]['dvpq_th']:.1f} / {row[k]['dvpq_st']:.1f}" for k in WINDOWS
        )
        print(f"| {name} | {cells} | {100 * ratio:.0f} % |")
        vpq = {k: summ["dvpq"][f"k={k}"] for k in WINDOWS}
        out["variants"][name] = {"dvpq_mean_lambda": row, "ratio_th_k4_k1": ratio, "per_lambda": vpq}
    print()
    print("| ids | GT things found in consecutive frames | id kept |")
    print("|---|---|---|")
    for name, stats in switch_stats.items():
        for key in sorted(stats):
            kept, n = stats[key]
            print(f"| {name} | {key}: {n} | {100 * kept / max(n, 1):.0f} % |")
    print()
    print("| GT thing area | GT things | found (IoU > 0.5) | missed, a low-score instance covers it |")
    print("|---|---|---|---|")
    for key in sorted(detection_stats, key=lambda k: int(k.lstrip(">= ").split("-")[0].split()[0])):
        n, hit, low = detection_stats[key]
        print(f"| {key} | {n} | {100 * hit / n:.0f} % | {100 * low / n:.0f} % |")
    out["detection"] = detection_stats
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=float)


if __name__ == "__main__":
    main()
