"""File pairing, frame counts and input errors of `panopticdepth evaluate --gt --pred`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from panopticdepth.cli.main import main
from panopticdepth.errors import DataError
from panopticdepth.evaluation import DPSEvaluator
from panopticdepth.evaluation.folders import evaluate_folders
from panopticdepth.io.formats import write_panoptic_ids, write_panoptic_rgb

H, W = 12, 16


def _frame(rng):
    gt = np.full((H, W), 0 * 1000)
    gt[: H // 2] = 10 * 1000
    gt[6:10, 2:7] = 13001
    gt[7:11, 9:14] = 11002
    gt[-1] = 32000
    pred = gt.copy()
    pred[-1] = 0
    pred[rng.random((H, W)) < 0.1] = 13001
    gd = rng.integers(100, 2000, (H, W)).astype(np.uint16)
    gd[: H // 2] = 0
    pdp = (gd * rng.uniform(0.7, 1.3, (H, W))).astype(np.uint16)
    return gt, pred, gd, pdp


def _write_case(root: Path, seq_frames: dict[str, int], seed=0):
    rng = np.random.default_rng(seed)
    (root / "gt").mkdir(parents=True)
    (root / "pred").mkdir()
    arrays = []
    for seq, n in seq_frames.items():
        for f in range(n):
            stem = f"{seq}_{f:06d}_city_000000_{f:06d}"
            gt, pred, gd, pdp = _frame(rng)
            write_panoptic_ids(root / "gt" / f"{stem}_gtFine_instanceTrainIds.png", gt)
            Image.fromarray(gd).save(root / "gt" / f"{stem}_depth.png")
            write_panoptic_rgb(root / "pred" / f"{stem}_panoptic.png", pred)
            Image.fromarray(pdp).save(root / "pred" / f"{stem}_depth.png")
            arrays.append((seq, gt, pred, gd, pdp))
    return arrays


def test_any_number_of_frames_per_sequence(tmp_path):
    arrays = _write_case(tmp_path, {"000001": 7, "000004": 2, "000002": 3})
    ev = evaluate_folders(tmp_path / "gt", tmp_path / "pred", frames=(1, 3))
    assert ev.num_frames == 12
    assert ev.num_windows.tolist() == [12, 5 + 0 + 1]
    ref = DPSEvaluator(frames=(1, 3), depth_scale=256)
    for seq in sorted({a[0] for a in arrays}):  # sequences in any order: sums commute
        for s, gt, pred, gd, pdp in arrays:
            if s == seq:
                ref.update(pred, pdp, gt, gd, sequence=s)
    got, want = ev.summary(), ref.summary()
    for key in want["runs"]:
        assert got["runs"][key]["averages"] == pytest.approx(want["runs"][key]["averages"], abs=1e-12)
    assert got["depth"]["abs_rel"] == pytest.approx(want["depth"]["abs_rel"])
    # The official truncation to 6 frames per sequence is available on request.
    ev6 = evaluate_folders(tmp_path / "gt", tmp_path / "pred", max_frames_per_sequence=6)
    assert ev6.num_frames == 11


def test_missing_and_extra_prediction_files_are_listed(tmp_path):
    _write_case(tmp_path, {"000001": 3})
    stem = "000001_000001_city_000000_000001"
    (tmp_path / "pred" / f"{stem}_panoptic.png").rename(tmp_path / "pred" / "000009_x_panoptic.png")
    with pytest.raises(DataError) as err:
        evaluate_folders(tmp_path / "gt", tmp_path / "pred")
    assert stem in str(err.value) and "000009_x_panoptic.png" in str(err.value)


def test_missing_depth_and_size_mismatch(tmp_path, capsys):
    _write_case(tmp_path, {"000001": 2})
    stem = "000001_000000_city_000000_000000"
    (tmp_path / "pred" / f"{stem}_depth.png").unlink()
    assert main(["evaluate", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred")]) == 2
    assert stem in capsys.readouterr().err
    Image.fromarray(np.zeros((H, W + 1), np.uint16)).save(tmp_path / "pred" / f"{stem}_depth.png")
    with pytest.raises(DataError, match="size"):
        evaluate_folders(tmp_path / "gt", tmp_path / "pred")


def test_unknown_prediction_category_is_an_error(tmp_path):
    _write_case(tmp_path, {"000001": 1})
    stem = "000001_000000_city_000000_000000"
    pred = np.full((H, W), 25 * 1000 + 1)
    write_panoptic_rgb(tmp_path / "pred" / f"{stem}_panoptic.png", pred)
    with pytest.raises(DataError, match="categories"):
        evaluate_folders(tmp_path / "gt", tmp_path / "pred")


def test_empty_prediction_and_vis_files(tmp_path):
    """An all-void prediction scores 0 without crashing; *_panoptic_vis.png files are not predictions."""
    _write_case(tmp_path, {"000001": 2})
    for p in (tmp_path / "pred").glob("*_panoptic.png"):
        write_panoptic_rgb(p, np.full((H, W), 19000))
        write_panoptic_rgb(p.with_name(p.name.replace("_panoptic", "_panoptic_vis")), np.zeros((H, W)))
    out = tmp_path / "r.json"
    assert (
        main(["evaluate", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"), "--json", str(out)])
        == 0
    )
    got = json.loads(out.read_text())
    assert got["pq"]["pq"] == 0.0 and got["dpq"]["mean"]["dpq"] == 0.0
    assert sum(c["fn"] for c in got["classes"]) == 8  # 4 GT segments x 2 frames
    assert sum(c["fp"] for c in got["classes"]) == 0
