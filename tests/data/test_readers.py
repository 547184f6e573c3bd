"""Readers of every format on small generated folders, with and without index JSON."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from panopticdepth.config.data import DataConfig
from panopticdepth.data.build import build_dataset, collate_samples
from panopticdepth.errors import DataError

from .conftest import NUM


def _cfg(name, root, **kw) -> DataConfig:
    cfg = DataConfig(dataset=name, root=str(root), **kw)
    cfg.augmentation.enabled = False
    return cfg


def _save(path, arr, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path)


def _check_sample_contract(s, depth=True):
    h, w = s["image"].shape[-2:]
    assert s["image"].dtype == torch.uint8 and s["image"].shape[0] == 3
    assert s["semantic"].dtype == torch.int64 and s["semantic"].shape == (h, w)
    assert s["panoptic"].dtype == torch.int64 and s["panoptic"].shape == (h, w)
    assert s["instance_masks"].dtype == torch.bool and s["instance_masks"].shape[1:] == (h, w)
    assert s["instance_classes"].dtype == torch.int64
    assert len(s["instance_classes"]) == len(s["instance_masks"])
    if depth:
        assert s["depth"].dtype == torch.float32 and s["depth"].shape == (h, w)
    else:
        assert s["depth"] is None
    assert s["meta"]["height"] == h and s["meta"]["width"] == w
    assert {"image_path", "image_id"} <= set(s["meta"])


def test_cityscapes_dps_with_and_without_index(synth_copy):
    with_index = build_dataset(_cfg("cityscapes-dps", synth_copy), "train", train=False)
    (synth_copy / "video_sequence" / "dvps_cityscapes_train.json").unlink()
    without = build_dataset(_cfg("cityscapes-dps", synth_copy / "video_sequence"), "train", train=False)
    assert len(with_index) == len(without) == NUM
    for a, b in zip(with_index, without):
        _check_sample_contract(a)
        assert a["meta"] == b["meta"]
        assert torch.equal(a["panoptic"], b["panoptic"]) and torch.equal(a["depth"], b["depth"])
    assert collate_samples([a, b]) == [a, b]
    assert a["meta"]["sequence"] == "000000" and a["meta"]["frame"] == NUM - 1


def test_pairing_is_by_prefix_not_by_sorted_position(synth_copy):
    """An extra image without labels must not shift the pairs: it is reported, the rest still pair."""
    split = synth_copy / "video_sequence" / "train"
    (synth_copy / "video_sequence" / "dvps_cityscapes_train.json").unlink()
    shutil.copy(
        split / "000000_000001_synth_000001_leftImg8bit.png", split / "000000_000000_a_leftImg8bit.png"
    )
    from panopticdepth.data.cityscapes_dps import discover

    records, problems = discover(synth_copy, "train")
    assert len(records) == NUM
    for r in records:
        assert {p.name[: len(r.image_id)] for p in r.files.values()} == {r.image_id}
    assert len(problems) == 2 and all("000000_000000_a_leftImg8bit.png" in str(p) for p in problems)
    with pytest.raises(DataError, match="missing partner"):
        build_dataset(_cfg("cityscapes-dps", synth_copy), "train", train=False)


def test_index_json_with_mismatched_prefixes(synth_copy):
    index = synth_copy / "video_sequence" / "dvps_cityscapes_train.json"
    entries = json.loads(index.read_text())
    entries[0]["depth"], entries[1]["depth"] = entries[1]["depth"], entries[0]["depth"]
    index.write_text(json.dumps(entries))
    with pytest.raises(DataError, match="do not share one prefix"):
        build_dataset(_cfg("cityscapes-dps", synth_copy), "train", train=False)


def _semkitti_case(root):
    """2 frames: class map with cars/person/road/void, instance ids, depth with invalid pixels."""
    split = root / "video_sequence" / "val"
    cls = np.full((6, 8), 255, np.uint8)
    cls[0, :] = 8  # road
    cls[1, :4] = 0  # car
    cls[1, 4:] = 5  # person
    cls[2, :] = 0  # second car
    cls[3, :2] = 12  # building
    inst = np.zeros((6, 8), np.uint16)
    inst[1, :4] = 3
    inst[1, 4:] = 1200  # > 999: renumbered
    inst[2, :] = 7
    depth = np.zeros((6, 8), np.uint16)
    depth[:4] = 2560
    for f in range(2):
        prefix = f"000002_{f:06d}"
        _save(split / f"{prefix}_leftImg8bit.png", np.full((6, 8, 3), 50 * f, np.uint8))
        _save(split / f"{prefix}_gtFine_class.png", cls)
        _save(split / f"{prefix}_gtFine_instance.png", inst)
        _save(split / f"{prefix}_depth_718.8560180664062.png", depth)
    return cls, inst, depth


def test_semkitti_reader(tmp_path):
    cls, inst, depth = _semkitti_case(tmp_path)
    ds = build_dataset(_cfg("semkitti-dps", tmp_path), "val", train=False)
    assert len(ds) == 2
    s = ds[1]
    _check_sample_contract(s)
    assert s["meta"]["focal"] == pytest.approx(718.856018)
    assert s["meta"]["sequence"] == "000002" and s["meta"]["frame"] == 1
    sem = s["semantic"].numpy()
    # mapping by meaning: road -> 0, car -> 13, person -> 11, building -> 2, void -> 255
    assert (sem[0] == 0).all() and (sem[1, :4] == 13).all() and (sem[1, 4:] == 11).all()
    assert (sem[3, :2] == 2).all() and (sem[4:] == 255).all()
    assert (s["panoptic"].numpy()[4:] == 32000).all()
    np.testing.assert_allclose(s["depth"].numpy(), depth / 256.0)
    assert sorted(s["instance_classes"].tolist()) == [0, 2, 2]  # person, car, car (thing index)
    masks = {int(c): [] for c in s["instance_classes"]}
    for m, c in zip(s["instance_masks"].numpy(), s["instance_classes"].tolist()):
        masks[c].append(m)
    assert (masks[0][0] == ((cls == 5) & (inst == 1200))).all()
    cars = sorted(masks[2], key=lambda m: m.sum())
    assert (cars[0] == ((cls == 0) & (inst == 3))).all() and (cars[1] == ((cls == 0) & (inst == 7))).all()


@pytest.mark.oracle
def test_semkitti_public_example(oracle_dir, tmp_path):
    """The released file layout of public_3 (images added: the example has none)."""
    src = oracle_dir / "eval" / "public_3" / "gt"
    split = tmp_path / "video_sequence" / "val"
    shutil.copytree(src, split)
    names = sorted(p.name[:13] for p in split.glob("*_gtFine_class.png"))
    for n in names:
        _save(split / f"{n}_leftImg8bit.png", np.zeros((376, 1241, 3), np.uint8))
    ds = build_dataset(_cfg("semkitti-dps", tmp_path), "val", train=False)
    assert len(ds) == 6
    s = ds[0]
    _check_sample_contract(s)
    cls = np.asarray(Image.open(split / f"{names[0]}_gtFine_class.png")).astype(int)
    labelled = cls != 255
    assert ((s["semantic"].numpy() != 255) == labelled).all()
    assert 0.1 < labelled.mean() < 0.15  # sparse LiDAR-like GT (README: ~12 %)
    assert len(s["instance_masks"]) >= 5


def _cityscapes_panoptic_case(root):
    """Hand-built COCO-panoptic JSON: road, car (2 instances), a crowd of persons, an ignored label."""
    seg = np.zeros((4, 6), np.int64)
    seg[0] = 7  # road
    seg[1, :3] = 26001  # car instance
    seg[1, 3:] = 26002  # car instance
    seg[2] = 24000 + 256 * 3  # person crowd (id with a G component)
    seg[3, :2] = 5  # 'dynamic' (label id 5, ignored)
    seg[3, 2:] = 0  # unlabelled: no segment
    rgb = np.stack([seg % 256, seg // 256 % 256, seg // 65536], -1).astype(np.uint8)
    prefix = "aachen_000000_000019"
    _save(root / "gtFine" / "cityscapes_panoptic_val" / f"{prefix}_gtFine_panoptic.png", rgb)
    _save(
        root / "leftImg8bit" / "val" / "aachen" / f"{prefix}_leftImg8bit.png", np.zeros((4, 6, 3), np.uint8)
    )
    segs = [
        {"id": 7, "category_id": 7, "iscrowd": 0},
        {"id": 26001, "category_id": 26, "iscrowd": 0},
        {"id": 26002, "category_id": 26, "iscrowd": 0},
        {"id": 24000 + 768, "category_id": 24, "iscrowd": 1},
        {"id": 5, "category_id": 5, "iscrowd": 0},
    ]
    doc = {
        "images": [{"id": prefix, "file_name": f"{prefix}_gtFine_leftImg8bit.png", "height": 4, "width": 6}],
        "annotations": [
            {"image_id": prefix, "file_name": f"{prefix}_gtFine_panoptic.png", "segments_info": segs}
        ],
        "categories": [],
    }
    (root / "gtFine" / "cityscapes_panoptic_val.json").write_text(json.dumps(doc))
    return doc


def test_cityscapes_panoptic_reader(tmp_path):
    _cityscapes_panoptic_case(tmp_path)
    ds = build_dataset(_cfg("cityscapes-panoptic", tmp_path), "val", train=False)
    s = ds[0]
    _check_sample_contract(s, depth=False)
    sem, pan = s["semantic"].numpy(), s["panoptic"].numpy()
    assert (sem[0] == 0).all() and (sem[1] == 13).all()
    assert (sem[2] == 11).all()  # crowd pixels keep their class
    assert (sem[3] == 255).all() and (pan[3] == 32000).all()
    assert s["instance_classes"].tolist() == [2, 2]  # two cars; the crowd is no instance
    assert {int(m.sum()) for m in s["instance_masks"]} == {3}
    assert s["meta"]["image_id"] == "aachen_000000_000019"


def _custom_case(root, depth=True):
    (root / "classes.yaml").write_text(
        "classes:\n"
        "  - {id: 0, name: road}\n"
        "  - {id: 2, name: car, thing: true}\n"
        "  - {id: 1, name: grass}\n"
        "  - {id: 3, name: junk, ignore: true}\n"
    )
    ids = np.zeros((5, 7), np.uint16)
    ids[1] = 1000
    ids[2:4, :3] = 2001
    ids[2:4, 3:] = 2002
    ids[4, :2] = 3000
    ids[4, 2:] = 32000
    for name in ("b", "a"):
        _save(root / "train" / "images" / f"{name}.png", np.full((5, 7, 3), 9, np.uint8))
        _save(root / "train" / "panoptic" / f"{name}.png", ids)
        if depth:
            _save(root / "train" / "depth" / f"{name}.png", np.full((5, 7), 512, np.uint16))
    return ids


@pytest.mark.parametrize("with_depth", [True, False])
def test_custom_reader(tmp_path, with_depth):
    ids = _custom_case(tmp_path, with_depth)
    ds = build_dataset(_cfg("custom", tmp_path), "train", train=False)
    assert [r.image_id for r in ds.records] == ["a", "b"]
    s = ds[0]
    _check_sample_contract(s, depth=with_depth)
    sem = s["semantic"].numpy()
    # the dataset's own label space: stuff in list order (road 0, grass 1), then things (car 2)
    assert (sem[0] == 0).all() and (sem[1] == 1).all() and (sem[2:4] == 2).all() and (sem[4] == 255).all()
    assert sorted(int(m.sum()) for m in s["instance_masks"]) == [6, 8]
    assert s["instance_classes"].tolist() == [0, 0]  # thing index of car
    assert (s["panoptic"].numpy()[ids == 2002] == 2002).all()
    assert ds.label_space.names == ("road", "grass", "car")
    if with_depth:
        assert (s["depth"].numpy() == 2.0).all()


def test_semkitti_index_json(tmp_path):
    _semkitti_case(tmp_path)
    entries = [
        {
            "image": f"000002_{f:06d}_leftImg8bit.png",
            "class": f"000002_{f:06d}_gtFine_class.png",
            "instance": f"000002_{f:06d}_gtFine_instance.png",
            "depth": f"000002_{f:06d}_depth_718.8560180664062.png",
        }
        for f in (1,)
    ]
    (tmp_path / "video_sequence" / "dvps_semkitti_val.json").write_text(json.dumps(entries))
    ds = build_dataset(_cfg("semkitti-dps", tmp_path), "val", train=False)
    assert [r.image_id for r in ds.records] == ["000002_000001"]
    entries[0]["instance"] = "000002_000000_gtFine_instance.png"
    (tmp_path / "video_sequence" / "dvps_semkitti_val.json").write_text(json.dumps(entries))
    with pytest.raises(DataError, match="do not share the prefix"):
        build_dataset(_cfg("semkitti-dps", tmp_path), "val", train=False)


def test_min_instance_pixels_and_dataloader(synth_root):
    from torch.utils.data import DataLoader

    ds = build_dataset(_cfg("synthetic", synth_root), "train", train=False)
    big = build_dataset(_cfg("synthetic", synth_root, min_instance_pixels=200), "train", train=False)
    sizes = [int(m.sum()) for m in ds[0]["instance_masks"]]
    assert len(big[0]["instance_masks"]) == sum(s >= 200 for s in sizes) < len(sizes)
    batch = next(iter(DataLoader(ds, batch_size=2, collate_fn=collate_samples)))
    assert (
        isinstance(batch, list) and len(batch) == 2 and batch[1]["meta"]["image_id"] == ds.records[1].image_id
    )
