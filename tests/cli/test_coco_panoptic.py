"""Cityscapes panoptic PQ through the user path: `predict --format coco-panoptic` and
`evaluate --weights` on Cityscapes panoptic data, against cityscapesscripts' own evaluator."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from panopticdepth.checkpoint.model_dir import save_model_dir
from panopticdepth.cli.main import main
from panopticdepth.config import Config
from panopticdepth.modeling.network import build_model

H, W = 64, 128
PREFIXES = [f"aachen_00000{i}_000019" for i in range(3)]


@pytest.fixture(scope="module")
def ps_model_dir(tmp_path_factory) -> Path:
    """A tiny segmentation-only model whose random heads are sharpened so that it predicts many
    stuff and thing segments (and some VOID) on block images."""
    cfg = Config()
    m = cfg.model
    m.backbone.name = "resnet18"
    m.fpn.out_channels = m.heads.convs_dim = 32
    m.heads.norm_groups = 8
    m.inference.stuff_area_limit = 16
    m.depth.enabled = False
    cfg.data.dataset = "cityscapes-panoptic"
    torch.manual_seed(0)
    model = build_model(m)
    with torch.no_grad():
        for layer in (model.position_head.region_out, model.position_head.center_out):
            layer.weight.mul_(20.0)
            layer.bias.zero_()
        model.kernel_head.out.weight.mul_(5.0)
    out = tmp_path_factory.mktemp("ps_model") / "model"
    save_model_dir(out, model, cfg)
    return out


def _rgb_ids(path: Path) -> np.ndarray:
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def _save_ids(path: Path, ids: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    Image.fromarray(rgb).save(path)


def _evaluated_labels():
    from cityscapesscripts.helpers.labels import labels

    return [lab for lab in labels if not lab.ignoreInEval and lab.id >= 0]


def _write_images(root: Path) -> None:
    rng = np.random.default_rng(0)
    folder = root / "leftImg8bit" / "val" / "aachen"
    folder.mkdir(parents=True)
    for prefix in PREFIXES:
        blocks = rng.integers(0, 256, (H // 16, W // 16, 3))
        image = np.kron(blocks, np.ones((16, 16, 1))).astype(np.uint8)
        Image.fromarray(image).save(folder / f"{prefix}_leftImg8bit.png")


def _perturbed_gt(pred: np.ndarray, cats: dict[int, int], rng) -> tuple[np.ndarray, list[dict]]:
    """GT segment map + segments_info built from a prediction: shifted, partly relabelled, with
    VOID, crowd regions and extra segments, so that every PQ case occurs."""
    thing_labels = {lab.id for lab in _evaluated_labels() if lab.hasInstances}
    gt_cat: dict[int, int] = {}
    crowd: set[int] = set()
    gt = np.zeros_like(pred)
    next_id = 1
    for sid in np.unique(pred):
        if sid == 0:
            continue
        gt[pred == sid] = next_id
        gt_cat[next_id] = cats[int(sid)]
        next_id += 1
    gt[:, 40:] = np.roll(gt[:, 40:], int(rng.integers(2, 6)), axis=1)  # lower IoUs
    gt[20:26, 10:60] = np.roll(gt[20:26, 10:60], 30, axis=1)
    ids = [i for i in np.unique(gt) if i]
    things = [i for i in ids if gt_cat[i] in thing_labels]
    if things:  # the largest predicted thing becomes a crowd region in the GT
        big = max(things, key=lambda i: int((gt == i).sum()))
        crowd.add(big)
    stuff = [i for i in ids if gt_cat[i] not in thing_labels]
    if stuff:  # a stuff segment with the wrong class: an FN and an FP
        gt_cat[stuff[0]] = 23 if gt_cat[stuff[0]] != 23 else 21
    gt[50:60, 100:124] = next_id  # a person crowd the prediction does not know about
    gt_cat[next_id] = 24
    crowd.add(next_id)
    gt[2:12, 2:30] = next_id + 1  # an extra car: a false negative
    gt_cat[next_id + 1] = 26
    gt[:, :3] = 0  # VOID stripe
    gt[rng.random(gt.shape) < 0.02] = 0
    segments = []
    for sid in np.unique(gt):
        if sid == 0:
            continue
        segments.append(
            {"id": int(sid), "category_id": gt_cat[int(sid)], "iscrowd": int(sid in crowd),
             "area": int((gt == sid).sum()), "bbox": [0, 0, 1, 1]}
        )  # fmt: skip
    return gt, segments


def test_predict_and_evaluate_equal_cityscapesscripts(ps_model_dir, tmp_path):
    from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic

    root = tmp_path / "cityscapes"
    _write_images(root)
    out = tmp_path / "pred"
    rc = main(["predict", "--weights", str(ps_model_dir), "--input", str(root / "leftImg8bit" / "val"),
               "--output", str(out), "--format", "coco-panoptic", "--raw"])  # fmt: skip
    assert rc == 0
    pred_json = out / "panoptic.json"
    doc = json.loads(pred_json.read_text())
    assert not list(out.glob("*_panoptic.png"))  # the COCO files replace the dvps PNGs
    train_to_label = {lab.trainId: lab.id for lab in _evaluated_labels()}
    assert sorted(c["id"] for c in doc["categories"]) == sorted(train_to_label.values())

    # Predicted files: one PNG per image, ids listed in the JSON, categories = label ids of the
    # train ids in the raw output; then a GT derived from them.
    rng = np.random.default_rng(5)
    gt_dir = root / "gtFine" / "cityscapes_panoptic_val"
    gt_anns = []
    n_things = 0
    assert [a["image_id"] for a in doc["annotations"]] == PREFIXES
    for ann in doc["annotations"]:
        seg = _rgb_ids(out / "panoptic" / ann["file_name"])
        raw = np.load(out / f"{ann['image_id']}_leftImg8bit.npz")["panoptic"]
        cats = {s["id"]: s["category_id"] for s in ann["segments_info"]}
        assert set(np.unique(seg).tolist()) - {0} == set(cats)
        for s in ann["segments_info"]:
            values = np.unique(raw[seg == s["id"]])
            assert values.size == 1 and s["category_id"] == train_to_label[int(values[0]) // 1000]
            assert s["area"] == int((seg == s["id"]).sum())
            n_things += int(values[0]) // 1000 >= 11
        void = (raw < 0) | (raw // 1000 >= 19)
        assert ((seg == 0) == void).all()
        gt, segments = _perturbed_gt(seg, cats, rng)
        name = f"{ann['image_id']}_gtFine_panoptic.png"
        _save_ids(gt_dir / name, gt)
        gt_anns.append({"image_id": ann["image_id"], "file_name": name, "segments_info": segments})
    assert n_things >= 3 and sum(len(a["segments_info"]) for a in doc["annotations"]) >= 15
    categories = [
        {"id": lab.id, "name": lab.name, "isthing": int(lab.hasInstances), "color": list(lab.color)}
        for lab in _evaluated_labels()
    ]
    gt_json = root / "gtFine" / "cityscapes_panoptic_val.json"
    gt_json.write_text(json.dumps({"annotations": gt_anns, "categories": categories, "images": []}))

    with contextlib.redirect_stdout(io.StringIO()):
        ref = evaluatePanoptic(str(gt_json), str(gt_dir), str(pred_json), str(out / "panoptic"),
                               str(tmp_path / "ref.json"))  # fmt: skip
    assert 0.05 < ref["All"]["pq"] < 0.95 and ref["Things"]["n"] >= 2 and ref["Stuff"]["n"] >= 2

    files_json, model_json = tmp_path / "files.json", tmp_path / "model.json"
    assert main(["evaluate", "--gt", str(gt_json), "--pred", str(pred_json), "--json", str(files_json)]) == 0
    assert main(["evaluate", "--weights", str(ps_model_dir), "--data", str(root), "--split", "val",
                 "--json", str(model_json)]) == 0  # fmt: skip
    for path in (files_json, model_json):
        mine = json.loads(path.read_text())
        for group in ("All", "Things", "Stuff"):
            assert mine[group]["n"] == ref[group]["n"], (path.name, group)
            for key in ("pq", "sq", "rq"):
                assert mine[group][key] == pytest.approx(ref[group][key], abs=1e-12), (path.name, group)
        for cid, values in ref["per_class"].items():
            for key in ("pq", "sq", "rq"):
                assert mine["per_class"][str(cid)][key] == pytest.approx(values[key], abs=1e-12)


def test_evaluate_weights_limit_scores_the_first_images(ps_model_dir, tmp_path):
    """`--limit 1` equals cityscapesscripts on a GT JSON holding only that image."""
    from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic

    root = tmp_path / "cityscapes"
    _write_images(root)
    out = tmp_path / "pred"
    first = root / "leftImg8bit" / "val" / "aachen" / f"{PREFIXES[0]}_leftImg8bit.png"
    assert main(["predict", "--weights", str(ps_model_dir), "--input", str(first), "--output", str(out),
                 "--format", "coco-panoptic"]) == 0  # fmt: skip
    ann = json.loads((out / "panoptic.json").read_text())["annotations"][0]
    seg = _rgb_ids(out / "panoptic" / ann["file_name"])
    cats = {s["id"]: s["category_id"] for s in ann["segments_info"]}
    gt, segments = _perturbed_gt(seg, cats, np.random.default_rng(1))
    gt_dir = root / "gtFine" / "cityscapes_panoptic_val"
    categories = [
        {"id": lab.id, "name": lab.name, "isthing": int(lab.hasInstances)} for lab in _evaluated_labels()
    ]
    anns = []
    for k, prefix in enumerate(PREFIXES):  # the other images get an all-road GT, never predicted
        ids = gt if k == 0 else np.full_like(gt, 7)
        segs = segments if k == 0 else [{"id": 7, "category_id": 7, "iscrowd": 0, "area": ids.size}]
        _save_ids(gt_dir / f"{prefix}_gtFine_panoptic.png", ids)
        anns.append({"image_id": prefix, "file_name": f"{prefix}_gtFine_panoptic.png", "segments_info": segs})
    gt_json = root / "gtFine" / "cityscapes_panoptic_val.json"
    gt_json.write_text(json.dumps({"annotations": anns, "categories": categories}))
    only_first = tmp_path / "first.json"
    only_first.write_text(json.dumps({"annotations": anns[:1], "categories": categories}))
    with contextlib.redirect_stdout(io.StringIO()):
        pred_json, pred_dir = str(out / "panoptic.json"), str(out / "panoptic")
        ref = evaluatePanoptic(str(only_first), str(gt_dir), pred_json, pred_dir, str(tmp_path / "ref.json"))
    mine_json = tmp_path / "mine.json"
    assert main(["evaluate", "--weights", str(ps_model_dir), "--data", str(root), "--limit", "1",
                 "--dataset", "cityscapes-panoptic", "--json", str(mine_json)]) == 0  # fmt: skip
    mine = json.loads(mine_json.read_text())
    assert mine["images"] == 1
    for group in ("All", "Things", "Stuff"):
        assert mine[group]["n"] == ref[group]["n"]
        assert mine[group]["pq"] == pytest.approx(ref[group]["pq"], abs=1e-12)
