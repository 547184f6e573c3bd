"""Which ground-truth things a model finds, and why it misses the others: per class and per size.

For every ground-truth thing of a split (the demo's held-out `val` by default; `--split train`
shows how much of a miss is the model not generalising from its training scenes):

* found: the final panoptic map has a segment of its class with IoU > 0.5 (a PQ true positive);
* candidate: some thing instance of its class, before the merge's score threshold and overlap
  rule (the rescored instances with score >= 0.05), has a mask with IoU > 0.5;
* missed with a candidate: the median rescored score of those candidates (the merge keeps >=
  `inference.combine_instance_threshold`).

    python benchmarks/thing_recall.py --weights DEMO/train/model --data DEMO/data [--split val]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from panopticdepth.checkpoint.model_dir import load_model_dir
from panopticdepth.config.labels import model_label_space
from panopticdepth.data.build import build_dataset
from panopticdepth.ids import LABEL_DIVISOR
from panopticdepth.modeling.postprocess import postprocess_image, upsample_probs
from panopticdepth.modeling.preprocess import preprocess

AREA_BINS = (0, 50, 150, 400, 1500)


def best_iou(gt_mask: np.ndarray, masks: np.ndarray) -> tuple[float, int]:
    """(highest IoU of `gt_mask` with any of `masks` (N, H, W), its index; 0.0, -1 when N = 0)."""
    if len(masks) == 0:
        return 0.0, -1
    inter = (masks & gt_mask).reshape(len(masks), -1).sum(1)
    union = (masks | gt_mask).reshape(len(masks), -1).sum(1)
    iou = inter / np.maximum(union, 1)
    j = int(np.argmax(iou))
    return float(iou[j]), j


def match_things(gt: dict, candidates: dict, panoptic: np.ndarray, first_thing_id: int) -> list[dict]:
    """One row per ground-truth thing: class, area, final IoU, best candidate IoU and its score.

    `gt`: instance_masks (N, H, W) bool, instance_classes (N,) thing index; `candidates`: masks
    (M, H, W) bool, classes (M,) thing index, scores (M,); `panoptic`: the final map, ids
    category * LABEL_DIVISOR + instance.
    """
    segment_ids = np.unique(panoptic)
    rows = []
    for mask, cls in zip(gt["instance_masks"], gt["instance_classes"]):
        category = int(cls) + first_thing_id
        own = [s for s in segment_ids if s // LABEL_DIVISOR == category]
        final, _ = best_iou(mask, np.stack([panoptic == s for s in own])) if own else (0.0, -1)
        same = candidates["classes"] == cls
        cand, j = best_iou(mask, candidates["masks"][same])
        score = float(candidates["scores"][same][j]) if j >= 0 else 0.0
        row = {"class": int(cls), "area": int(mask.sum()), "final": final, "candidate": cand, "score": score}
        rows.append(row)
    return rows


def image_rows(model, cfg, sample: dict) -> list[dict]:
    x, sizes = preprocess([sample["image"]], cfg.model)
    with torch.inference_mode():
        outputs = model(x)
        result, details = postprocess_image(
            outputs, 0, model, cfg.model, sizes[0], with_instance_masks=False, with_sem_seg=False
        )
    inst = details.instances
    probs = upsample_probs(inst.probs_lowres.float(), sizes[0], sizes[0])
    candidates = {
        "masks": (probs > cfg.model.inference.mask_threshold).numpy(),
        "classes": inst.classes.numpy(),
        "scores": inst.scores.float().numpy(),
    }
    gt = {key: sample[key].numpy() for key in ("instance_masks", "instance_classes")}
    return match_things(gt, candidates, result.panoptic.numpy(), cfg.model.first_thing_id)


def summarise(rows: list[dict], names: list[str], first_thing_id: int) -> list[str]:
    """Markdown tables: per class, then per area bin."""
    lines = ["| class | GT things | found | candidate IoU > 0.5 | median area found / missed (px) "
             "| median score, missed with a candidate |", "|---|---|---|---|---|---|"]  # fmt: skip
    for c in sorted({r["class"] for r in rows}):
        name, rs = names[first_thing_id + c], [r for r in rows if r["class"] == c]
        found = [r for r in rs if r["final"] > 0.5]
        missed = [r for r in rs if r["final"] <= 0.5]
        scores = [r["score"] for r in missed if r["candidate"] > 0.5]
        area_f = f"{np.median([r['area'] for r in found]):.0f}" if found else "-"
        area_m = f"{np.median([r['area'] for r in missed]):.0f}" if missed else "-"
        score = f"{np.median(scores):.2f}" if scores else "-"
        cand = sum(r["candidate"] > 0.5 for r in rs)
        lines.append(f"| {name} | {len(rs)} | {len(found)} | {cand} | {area_f} / {area_m} | {score} |")
    lines += ["", "| GT area (px) | GT things | found | candidate IoU > 0.5 |", "|---|---|---|---|"]
    edges = [*AREA_BINS, None]
    for lo, hi in zip(edges[:-1], edges[1:]):
        rs = [r for r in rows if r["area"] >= lo and (hi is None or r["area"] < hi)]
        label = f"{lo}-{hi - 1}" if hi is not None else f">= {lo}"
        if rs:
            found = np.mean([r["final"] > 0.5 for r in rs])
            cand = np.mean([r["candidate"] > 0.5 for r in rs])
            lines.append(f"| {label} | {len(rs)} | {100 * found:.0f} % | {100 * cand:.0f} % |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="model folder")
    ap.add_argument("--data", required=True, help="dataset root (the model's data.dataset layout)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int, default=0, help="first N frames only (0 = all)")
    args = ap.parse_args()
    model, cfg = load_model_dir(args.weights, overrides=[f"data.root={args.data}"])
    model.eval()
    data = build_dataset(cfg.data, args.split, train=False)
    n = len(data) if args.limit <= 0 else min(args.limit, len(data))
    rows = [row for i in range(n) for row in image_rows(model, cfg, data[i])]
    print(f"{n} '{args.split}' frames of {args.data}, model {args.weights}")
    print()
    print("\n".join(summarise(rows, model_label_space(cfg).names, cfg.model.first_thing_id)))


if __name__ == "__main__":
    main()
