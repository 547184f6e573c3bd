"""`--dataset cityscapes-panoptic` against cityscapesscripts' own evaluatePanoptic on generated files."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from panopticdepth.cli.main import main

CATEGORIES = [
    {"id": 7, "name": "road", "isthing": 0},
    {"id": 8, "name": "sidewalk", "isthing": 0},
    {"id": 21, "name": "vegetation", "isthing": 0},
    {"id": 23, "name": "sky", "isthing": 0},
    {"id": 24, "name": "person", "isthing": 1},
    {"id": 26, "name": "car", "isthing": 1},
    {"id": 33, "name": "bicycle", "isthing": 1},
]


def _save(folder: Path, name: str, ids: np.ndarray) -> None:
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    Image.fromarray(rgb).save(folder / name)


def _segments(ids: np.ndarray, cats: dict[int, int], crowd: set[int]) -> list[dict]:
    out = []
    for sid in np.unique(ids):
        if sid == 0:
            continue
        out.append({"id": int(sid), "category_id": cats[int(sid)], "iscrowd": int(sid in crowd),
                    "area": int((ids == sid).sum()), "bbox": [0, 0, 1, 1]})  # fmt: skip
    return out


def _make_case(root: Path, rng) -> tuple[Path, Path, Path, Path]:
    gt_dir, pred_dir = root / "gt", root / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    gt_anns, pred_anns = [], []
    for i in range(4):
        h, w = 20, 30
        gt = np.full((h, w), 7000, np.int64)  # road
        gt[:6] = 23000  # sky
        gt[6:9, :10] = 21000
        gt[14:, 20:] = 8000
        cats = {7000: 7, 23000: 23, 21000: 21, 8000: 8}
        crowd = set()
        for j in range(4):
            y, x = rng.integers(6, 16), rng.integers(0, 24)
            sid = 26001 + j if j < 3 else 26000
            gt[y : y + 4, x : x + 6] = sid
            cats[sid] = 26
            if j == 3:
                crowd.add(sid)  # a car group
        gt[10:13, 1:3] = 24001
        cats[24001] = 24
        gt[-2:] = 0  # void
        gt[rng.random((h, w)) < 0.03] = 0
        pred = gt.copy()
        pred[pred == 0] = 7000
        noise = rng.random((h, w)) < 0.12
        pred[noise] = rng.choice([7000, 23000, 26002, 24001], size=noise.sum())
        shift = int(rng.integers(-2, 3))
        pred[:, 5:] = np.roll(pred[:, 5:], shift, axis=1)
        pred[0:3, 25:] = 33001  # a bicycle only in the prediction
        pred[pred == 26000] = 26009  # predicted car on the crowd region
        pcats = dict(cats) | {33001: 33, 26009: 26}
        pred[16:18, 0:2] = 26010  # small car mostly on void
        pcats[26010] = 26
        name = f"img{i}_gtFine_panoptic.png"
        _save(gt_dir, name, gt)
        _save(pred_dir, name, pred)
        gt_anns.append(
            {"image_id": f"img{i}", "file_name": name, "segments_info": _segments(gt, cats, crowd)}
        )
        pred_anns.append(
            {"image_id": f"img{i}", "file_name": name, "segments_info": _segments(pred, pcats, set())}
        )
    gt_json, pred_json = root / "gt.json", root / "pred.json"
    gt_json.write_text(json.dumps({"annotations": gt_anns, "categories": CATEGORIES, "images": []}))
    pred_json.write_text(json.dumps({"annotations": pred_anns}))
    return gt_json, gt_dir, pred_json, pred_dir


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_cityscapesscripts(tmp_path, seed):
    from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic

    gt_json, gt_dir, pred_json, pred_dir = _make_case(tmp_path, np.random.default_rng(seed))
    with contextlib.redirect_stdout(io.StringIO()):
        ref = evaluatePanoptic(
            str(gt_json), str(gt_dir), str(pred_json), str(pred_dir), str(tmp_path / "ref.json")
        )
    out = tmp_path / "mine.json"
    rc = main(["evaluate", "--dataset", "cityscapes-panoptic", "--gt", str(gt_json), "--pred", str(pred_json),
               "--gt-folder", str(gt_dir), "--pred-folder", str(pred_dir), "--json", str(out)])  # fmt: skip
    assert rc == 0
    mine = json.loads(out.read_text())
    for name in ("All", "Things", "Stuff"):
        assert mine[name]["n"] == ref[name]["n"]
        for key in ("pq", "sq", "rq"):
            assert mine[name][key] == pytest.approx(ref[name][key], abs=1e-12)
    assert ref["All"]["pq"] not in (0.0, 1.0)
    for cid, vals in ref["per_class"].items():
        for key in ("pq", "sq", "rq"):
            assert mine["per_class"][str(cid)][key] == pytest.approx(vals[key], abs=1e-12)
    assert mine["pq"]["pq"] == pytest.approx(100 * ref["All"]["pq"], abs=1e-10)
