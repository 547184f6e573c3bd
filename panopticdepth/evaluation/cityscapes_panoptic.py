"""Cityscapes panoptic PQ (segmentation-only stage), equal to cityscapesscripts' official
`evaluation.evalPanopticSemanticLabeling.evaluatePanoptic` on the same COCO-panoptic files.

Conventions of that evaluator, reproduced here (vectorised per image):
* PNG id = R + 256 G + 256^2 B; id 0 is VOID. Segments come from the JSON `segments_info`;
  GT areas are the JSON `area` fields, predicted areas are counted in the PNG.
* A pair is a TP when categories agree, the GT is not crowd and IoU > 0.5 with
  union = pred area + GT area - intersection - overlap(pred, VOID).
* Unmatched non-crowd GT segments are FN. An unmatched prediction is not a FP when more than half
  of it lies on VOID plus the (last listed) crowd region of its category.
* Per-class PQ = iou / (tp + fp/2 + fn/2); averages over the categories of the GT JSON that have
  tp + fp + fn > 0 ("n"), split by the categories' `isthing`. Results are fractions (not percent),
  as the official results file; a `pq` block in percent is added for the common JSON shape.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from .matching import frame_table


def _read_rgb_ids(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.int64)
    except OSError as err:
        raise DataError(f"{path}: unreadable image ({err})") from None
    return arr[..., 0] + 256 * arr[..., 1] + 65536 * arr[..., 2]


def _load_json(path: str | os.PathLike) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read COCO-panoptic JSON ({err})") from None


def image_stats(
    gt_ids: np.ndarray,
    pred_ids: np.ndarray,
    gt_ann: dict,
    pred_ann: dict,
    cat_index: dict[int, int],
    name: str,
) -> np.ndarray:
    """(4, C) float64 [tp, fn, fp, iou_sum] of one image, C = len(cat_index) (+1 slot for unknown)."""
    n_cat = len(cat_index)
    stats = np.zeros((4, n_cat + 1))
    table = frame_table(gt_ids, pred_ids, None, 65536)
    g, p, k = table.gt, table.pred, table.count.astype(np.float64)

    gs = gt_ann["segments_info"]
    g_id = np.array([s["id"] for s in gs], np.int64)
    g_cat = np.array([cat_index.get(s["category_id"], n_cat) for s in gs], np.int64)
    g_crowd = np.array([s.get("iscrowd", 0) == 1 for s in gs], bool)
    g_area = np.array([s.get("area", 0) for s in gs], np.float64)
    ps = pred_ann["segments_info"]
    p_id = np.array([s["id"] for s in ps], np.int64)
    p_cat_raw = [s["category_id"] for s in ps]
    unknown = sorted({c for c in p_cat_raw if c not in cat_index})
    if unknown:
        raise DataError(f"{name}: prediction segments with unknown category_id {unknown}")
    p_cat = np.array([cat_index[c] for c in p_cat_raw], np.int64)

    # Predicted areas from the PNG; every non-VOID PNG id must be listed in the JSON and vice versa.
    png_pred, inv = np.unique(p, return_inverse=True)
    png_area = np.bincount(inv, weights=k)
    listed = np.isin(png_pred, p_id)
    stray = png_pred[(~listed) & (png_pred != 0)]
    if stray.size:
        raise DataError(f"{name}: segment ids {stray.tolist()[:10]} are in the PNG but not in the JSON")
    absent = p_id[~np.isin(p_id, png_pred)]
    if absent.size:
        raise DataError(f"{name}: segment ids {absent.tolist()[:10]} are in the JSON but not in the PNG")
    p_area = png_area[np.searchsorted(png_pred, p_id)] if p_id.size else np.zeros(0)

    # Rows of the pair table mapped to JSON segment positions (-1 = not a listed segment).
    g_order = np.argsort(g_id, kind="stable")
    g_pos = _lookup(g_id, g_order, g)
    p_order = np.argsort(p_id, kind="stable")
    p_pos = _lookup(p_id, p_order, p)
    void_rows = g == 0
    void_overlap = np.zeros(p_id.size)
    np.add.at(void_overlap, p_pos[void_rows & (p_pos >= 0)], k[void_rows & (p_pos >= 0)])

    cand = (g_pos >= 0) & (p_pos >= 0)
    cand[cand] &= ~g_crowd[g_pos[cand]] & (g_cat[g_pos[cand]] == p_cat[p_pos[cand]])
    gi, pi, inter = g_pos[cand], p_pos[cand], k[cand]
    union = p_area[pi] + g_area[gi] - inter - void_overlap[pi]
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    tp = iou > 0.5
    np.add.at(stats[0], g_cat[gi[tp]], 1)
    np.add.at(stats[3], g_cat[gi[tp]], iou[tp])
    g_matched = np.zeros(g_id.size, bool)
    g_matched[gi[tp]] = True
    p_matched = np.zeros(p_id.size, bool)
    p_matched[pi[tp]] = True

    fn = ~g_matched & ~g_crowd
    np.add.at(stats[1], g_cat[fn], 1)
    # Crowd region per category: the last unmatched crowd segment listed (dict overwrite order).
    crowd_of_cat = {int(g_cat[i]): int(g_id[i]) for i in np.flatnonzero(~g_matched & g_crowd)}
    crowd_overlap = np.zeros(p_id.size)
    if crowd_of_cat:
        rows = (p_pos >= 0) & ~void_rows
        for cat, cid in crowd_of_cat.items():  # one crowd id per category: a few iterations
            sel = rows & (g == cid)
            sel[sel] &= p_cat[p_pos[sel]] == cat
            np.add.at(crowd_overlap, p_pos[sel], k[sel])
    with np.errstate(divide="ignore", invalid="ignore"):
        excused = (void_overlap + crowd_overlap) / p_area > 0.5
    fp = ~p_matched & ~excused
    np.add.at(stats[2], p_cat[fp], 1)
    return stats


def _lookup(ids: np.ndarray, order: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Position of each value in `ids` (unsorted, unique), -1 where absent."""
    if ids.size == 0:
        return np.full(values.shape, -1, np.int64)
    sorted_ids = ids[order]
    pos = np.clip(np.searchsorted(sorted_ids, values), 0, ids.size - 1)
    return np.where(sorted_ids[pos] == values, order[pos], -1)


def pq_average(stats: np.ndarray, categories: list[dict]) -> dict:
    """cityscapesscripts' `average_pq`: All / Things / Stuff over categories with tp+fp+fn > 0."""
    tp, fn, fp, iou = stats
    results: dict = {}
    per_class = {}
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        pq = sq = rq = 0.0
        n = 0
        for i, cat in enumerate(categories):
            if isthing is not None and (cat.get("isthing", 0) == 1) != isthing:
                continue
            denom = tp[i] + 0.5 * fp[i] + 0.5 * fn[i]
            if tp[i] + fp[i] + fn[i] == 0:
                per_class[cat["id"]] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
                continue
            n += 1
            c = {"pq": iou[i] / denom, "sq": iou[i] / tp[i] if tp[i] else 0.0, "rq": tp[i] / denom}
            per_class[cat["id"]] = {key: float(v) for key, v in c.items()}
            pq, sq, rq = pq + c["pq"], sq + c["sq"], rq + c["rq"]
        results[name] = {
            "pq": float(pq / n) if n else 0.0,
            "sq": float(sq / n) if n else 0.0,
            "rq": float(rq / n) if n else 0.0,
            "n": n,
        }
    results["per_class"] = per_class
    return results


class CocoPanopticPQ:
    """Accumulates the statistics of `image_stats` image by image; `summary` gives the PQ tables.

    Lets a caller score predictions held in memory (e.g. `evaluate --weights`) with the same
    arithmetic as the files path.
    """

    def __init__(self, categories: list[dict]):
        self.categories = list(categories)
        self.cat_index = {c["id"]: i for i, c in enumerate(self.categories)}
        self.stats = np.zeros((4, len(self.categories) + 1))
        self.images = 0

    def update(
        self, gt_ids: np.ndarray, pred_ids: np.ndarray, gt_ann: dict, pred_ann: dict, name: str = ""
    ) -> None:
        """One image: segment-id maps (0 = VOID) and their annotations (`segments_info` lists)."""
        if gt_ids.shape != pred_ids.shape:
            raise DataError(f"{name}: size {pred_ids.shape} differs from GT {gt_ids.shape}")
        self.stats += image_stats(gt_ids, pred_ids, gt_ann, pred_ann, self.cat_index, name)
        self.images += 1

    def summary(self) -> dict:
        categories, stats = self.categories, self.stats
        results = pq_average(stats[:, : len(categories)], categories)
        results["pq"] = {
            "pq": results["All"]["pq"] * 100,
            "pq_th": results["Things"]["pq"] * 100,
            "pq_st": results["Stuff"]["pq"] * 100,
        }
        results["classes"] = [
            {
                "id": c["id"],
                "name": c.get("name", str(c["id"])),
                "isthing": c.get("isthing", 0) == 1,
                **{key: results["per_class"][c["id"]][key] * 100 for key in ("pq", "sq", "rq")},
                "tp": float(stats[0, i]),
                "fn": float(stats[1, i]),
                "fp": float(stats[2, i]),
                "iou_sum": float(stats[3, i]),
            }
            for i, c in enumerate(categories)
        ]
        results["dataset"] = "cityscapes-panoptic"
        results["images"] = self.images
        return results


def evaluate_coco_panoptic(
    gt_json: str | os.PathLike,
    pred_json: str | os.PathLike,
    gt_folder: str | os.PathLike | None = None,
    pred_folder: str | os.PathLike | None = None,
) -> dict:
    """PQ of a COCO-panoptic prediction (JSON + PNG folder) against Cityscapes panoptic GT."""
    gt_json, pred_json = Path(gt_json), Path(pred_json)
    gt_folder = Path(gt_folder) if gt_folder else gt_json.with_suffix("")
    pred_folder = Path(pred_folder) if pred_folder else pred_json.with_suffix("")
    gt_doc, pred_doc = _load_json(gt_json), _load_json(pred_json)
    acc = CocoPanopticPQ(gt_doc["categories"])
    preds = {a["image_id"]: a for a in pred_doc["annotations"]}
    missing = [a["image_id"] for a in gt_doc["annotations"] if a["image_id"] not in preds]
    if missing:
        raise DataError(
            f"{pred_json}: no prediction for {len(missing)} image(s): {', '.join(map(str, missing[:20]))}"
        )
    for gt_ann in gt_doc["annotations"]:
        pred_ann = preds[gt_ann["image_id"]]
        gt_ids = _read_rgb_ids(gt_folder / gt_ann["file_name"])
        pred_ids = _read_rgb_ids(pred_folder / pred_ann["file_name"])
        acc.update(gt_ids, pred_ids, gt_ann, pred_ann, str(pred_folder / pred_ann["file_name"]))
    return acc.summary()
