"""Synthetic SemKITTI-DVPS output: LiDAR-sparse labels, encodings, layout, reader, checker and evaluator."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from panopticdepth.class_names import CITYSCAPES_CLASS_NAMES, SEMKITTI_CLASS_NAMES
from panopticdepth.cli.main import main
from panopticdepth.config.data import DataConfig
from panopticdepth.data.build import build_dataset
from panopticdepth.data.check import check_dataset
from panopticdepth.data.synthetic import generate, generate_semkitti, generate_semkitti_sequence
from panopticdepth.data.synthetic import semkitti as sk
from panopticdepth.data.synthetic.semkitti import write_semkitti_dataset

H, W = 94, 310  # a quarter of KITTI's 376x1241
NUM, SEED = 3, 4


@pytest.fixture(scope="module")
def full_frames():
    """Two frames at the KITTI size (the labelled fraction depends on the resolution)."""
    return [generate_semkitti(0, i) for i in range(2)]


@pytest.fixture(scope="module")
def sk_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_semkitti")
    write_semkitti_dataset(root, "val", NUM, height=H, width=W, seed=SEED)
    return root


def _split(root):
    return root / "video_sequence" / "val"


def test_labelled_fraction_at_kitti_size(full_frames):
    """About a tenth of the pixels carry a LiDAR point (measured: 9.1-10.1 %, mean 9.6 %, over
    seed 0, frames 0-19; the 5-15 % band leaves room for other scenes)."""
    for f in full_frames:
        assert f.semantic.shape == (376, 1241) and f.focal == 718.856
        frac = float((f.semantic != 255).mean())
        assert 0.05 <= frac <= 0.15, frac
        assert f.image.std() > 10  # the image stays dense


def _laser_gap(f, depth):
    """Angle (rad) between each pixel's point, seen from the scanner, and the nearest laser; and half
    the elevation angle its pixel row spans. Recomputed here from the camera, not from the generator."""
    cam = f.rendered.scene.camera
    assert cam.pitch == 0 and cam.fx == cam.fy
    v, u = np.mgrid[0 : depth.shape[0], 0 : depth.shape[1]].astype(np.float64)
    xc, yc = (u - cam.cx) / cam.fx, (v - cam.cy) / cam.fx
    up = -yc * depth - (1.73 - 1.65)  # the scanner sits 8 cm above the camera
    elev = np.arctan2(up, depth * np.hypot(xc, 1.0))
    lasers = np.deg2rad(sk.LASER_ELEVATIONS_DEG)
    gap = np.abs(elev[..., None] - lasers).min(-1)
    row = np.abs(
        np.arctan2(-(yc - 0.5 / cam.fx), np.hypot(xc, 1.0))
        - np.arctan2(-(yc + 0.5 / cam.fx), np.hypot(xc, 1.0))
    )
    return gap, row / 2, np.abs(elev[..., None] - lasers).argmin(-1)


def test_labels_lie_on_64_scan_lines(full_frames):
    """Labelled pixels sit within half a pixel row of a laser's elevation; a column crosses at most 64
    scan-line runs. Dense valid pixels mostly fail the first check, so it can fail."""
    for f in full_frames:
        lab = f.semantic != 255
        gap, half, nearest = _laser_gap(f, f.depth.astype(np.float64))
        assert (gap[lab] <= half[lab] + 1e-6).all()
        dense = f.rendered.depth > 0
        gap_d, half_d, _ = _laser_gap(f, f.rendered.depth.astype(np.float64))
        assert (gap_d[dense] <= half_d[dense] + 1e-6).mean() < 0.3
        runs = (lab[1:] & ~lab[:-1]).sum(0) + lab[0]
        assert runs.max() <= 64
        assert 30 <= len(np.unique(nearest[lab])) <= 64  # most lasers below the horizon are seen


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_sparse_encodings(index):
    """Depth > 0 exactly on labelled pixels; classes 0..18 or 255; instances >= 1 exactly on things."""
    f = generate_semkitti(1, index, H, W)
    lab = f.semantic != 255
    assert 0.05 < lab.mean() < 0.6  # at this quarter size neighbouring lasers fall into one row
    np.testing.assert_array_equal(f.depth > 0, lab)
    assert f.depth.max() <= 80.0 and np.all(f.depth * 256 == np.round(f.depth * 256))
    assert set(np.unique(f.semantic).tolist()) <= set(range(19)) | {255}
    thing = f.semantic < 8
    assert thing.any() and (f.instance[thing] >= 1).all() and (f.instance[~thing] == 0).all()
    sky = f.rendered.panoptic // 1000 == CITYSCAPES_CLASS_NAMES.index("sky")
    assert not lab[sky].any()
    # deterministic per (seed, index); another index drops other points
    g = generate_semkitti(1, index, H, W)
    np.testing.assert_array_equal(f.semantic, g.semantic)
    np.testing.assert_array_equal(f.instance, g.instance)


def test_class_table_and_riders(monkeypatch):
    """Every Cityscapes class maps by name; riders on motorcycles become motorcyclists; points on
    tree trunks (below the crowns) become trunk."""
    table = sk.CITYSCAPES_TO_SEMKITTI_NAMES
    assert set(table) == set(CITYSCAPES_CLASS_NAMES)
    assert set(v for v in table.values() if v) <= set(SEMKITTI_CLASS_NAMES)
    expect = {"wall": "building", "traffic light": "traffic-sign", "bus": "other-vehicle", "sky": None}
    assert all(table[k] == v for k, v in expect.items())
    monkeypatch.setattr(sk, "lidar_mask", lambda cam, depth, rng: depth > 0)  # every visible point
    seen = set()
    for i in range(40):
        dense = generate(0, i, H, W, camera="kitti")
        f = sk.to_semkitti(dense, np.random.default_rng(0))
        train = dense.panoptic // 1000
        for tid in np.unique(train[dense.depth > 0]).tolist():
            got = np.unique(f.semantic[(train == tid) & (dense.depth > 0)]).tolist()
            name = CITYSCAPES_CLASS_NAMES[tid]
            if name == "vegetation" and 15 in got:
                assert got == [14, 15]  # vegetation, trunk
                trunk_rows = np.nonzero(f.semantic == 15)[0]
                seen.add("trunk")
                assert (f.semantic == 15).sum() < 0.5 * (f.semantic == 14).sum()
                assert trunk_rows.mean() > np.nonzero(f.semantic == 14)[0].mean()  # below the crowns
            elif name != "rider":
                assert got == [SEMKITTI_CLASS_NAMES.index(table[name])], name
        for pid, vehicle in dense.scene.rides.items():
            m = (dense.panoptic == pid) & (dense.depth > 0)
            if m.any():
                rider = "motorcyclist" if CITYSCAPES_CLASS_NAMES[vehicle] == "motorcycle" else "bicyclist"
                assert (f.semantic[m] == SEMKITTI_CLASS_NAMES.index(rider)).all()
                seen.add(rider)
        if seen == {"motorcyclist", "bicyclist", "trunk"}:
            break
    assert seen == {"motorcyclist", "bicyclist", "trunk"}


def test_focal_in_depth_file_name(sk_root):
    depth_files = sorted(_split(sk_root).glob("*_depth_*.png"))
    assert len(depth_files) == NUM
    cam = generate(SEED, 0, H, W, camera="kitti").scene.camera
    for p in depth_files:
        assert float(p.name.split("_depth_")[1][: -len(".png")]) == cam.fx == cam.fy
        assert p.name.endswith("_depth_179.569.png")
    assert sk.focal_text(generate_semkitti(0, 0).focal) == "718.856"


def test_layout_and_index_json(sk_root):
    names = sorted(p.name for p in _split(sk_root).iterdir())
    assert names[:4] == [
        "000000_000000_depth_179.569.png",
        "000000_000000_gtFine_class.png",
        "000000_000000_gtFine_instance.png",
        "000000_000000_leftImg8bit.png",
    ]
    index = json.loads((sk_root / "video_sequence" / "dvps_semkitti_val.json").read_text())
    assert [e["class"] for e in index] == [f"000000_{i:06d}_gtFine_class.png" for i in range(NUM)]
    assert set(index[0]) == {"image", "class", "instance", "depth"}
    cls = Image.open(_split(sk_root) / index[0]["class"])
    ins = Image.open(_split(sk_root) / index[0]["instance"])
    dep = Image.open(_split(sk_root) / index[0]["depth"])
    assert cls.mode == "L" and ins.mode.startswith("I;16") and dep.mode.startswith("I;16")


def test_reader_and_checker_read_it(sk_root):
    cfg = DataConfig(dataset="semkitti-dps", root=str(sk_root))
    cfg.augmentation.enabled = False
    ds = build_dataset(cfg, "val", train=False)
    assert len(ds) == NUM
    classes: dict[int, set] = {}
    for i in range(NUM):
        f = generate_semkitti(SEED, i, H, W)
        s = ds[i]
        assert s["meta"]["focal"] == pytest.approx(f.focal) and s["meta"]["sequence"] == "000000"
        np.testing.assert_array_equal(s["image"].permute(1, 2, 0).numpy(), f.image)
        np.testing.assert_array_equal(s["depth"].numpy(), f.depth)
        sem = s["semantic"].numpy()
        np.testing.assert_array_equal(sem == 255, f.semantic == 255)
        for c in np.unique(f.semantic[f.semantic != 255]).tolist():
            classes.setdefault(c, set()).update(np.unique(sem[f.semantic == c]).tolist())
        pairs = {(int(c), int(k)) for c, k in zip(f.semantic[f.semantic < 8], f.instance[f.semantic < 8])}
        assert len(s["instance_masks"]) == len(pairs)
    assert all(len(v) == 1 for v in classes.values())  # one library class per SemKITTI class
    assert len({next(iter(v)) for v in classes.values()}) == len(classes)
    counts, problems = check_dataset(sk_root, "semkitti-dps", ["val"])
    assert counts == {"val": NUM} and problems == []
    assert main(["data", "check", str(sk_root), "--dataset", "semkitti-dps"]) == 0


def _write_predictions(gt, pred):
    """GT as SemKITTI predictions: <stem>_cat.png (void 19), <stem>_ins.png, <stem>_depth.png."""
    pred.mkdir()
    for p in sorted(gt.glob("*_gtFine_class.png")):
        stem = p.name[: -len("_gtFine_class.png")]
        cat = np.asarray(Image.open(p)).copy()
        cat[cat == 255] = 19
        Image.fromarray(cat).save(pred / f"{stem}_cat.png")
        shutil.copy(gt / f"{stem}_gtFine_instance.png", pred / f"{stem}_ins.png")
        shutil.copy(next(gt.glob(f"{stem}_depth_*.png")), pred / f"{stem}_depth.png")


def _evaluate(gt, pred, out):
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_evaluator_scores_gt_against_itself(sk_root, tmp_path):
    """PQ 100 on every class present (absent classes count 0 in the SemKITTI mean) and exact depth."""
    gt, pred = _split(sk_root), tmp_path / "pred"
    _write_predictions(gt, pred)
    res = _evaluate(gt, pred, tmp_path / "self.json")
    present = [c for c in res["classes"] if c["tp"] + c["fn"] + c["fp"] > 0]
    assert len(present) >= 6
    assert all(c["pq"] == pytest.approx(100.0) and c["fn"] == c["fp"] == 0 for c in present)
    assert res["depth"]["abs_rel"] == 0.0 and res["depth"]["num_pixels"] > 0
    # the same check fails on a wrong prediction: frame 0's cars called trucks
    cat_path = next(pred.glob("*_000000_cat.png"))
    cat = np.asarray(Image.open(cat_path)).copy()
    assert (cat == 0).any()
    cat[cat == 0] = 3
    Image.fromarray(cat).save(cat_path)
    car = _evaluate(gt, pred, tmp_path / "bad.json")["classes"][0]
    assert car["name"] == "car" and car["fn"] > 0 and car["pq"] < 100.0


def test_moving_sequences_keep_ids():
    """One (class, instance) pair names one scene object in every frame of a sequence."""
    frames = generate_semkitti_sequence(seed=2, sequence=0, length=3, height=H, width=W)
    owner: dict[tuple[int, int], set] = {}
    per_frame = []
    for f in frames:
        thing = f.semantic < 8
        keys = set()
        for c, k, pid in zip(f.semantic[thing], f.instance[thing], f.rendered.panoptic[thing]):
            owner.setdefault((int(c), int(k)), set()).add(int(pid))
            keys.add((int(c), int(k)))
        per_frame.append(keys)
    assert owner and all(len(p) == 1 for p in owner.values())
    assert len(per_frame[0] & per_frame[1] & per_frame[2]) >= 2  # objects stay labelled


def test_synth_cli_semkitti(tmp_path):
    out = tmp_path / "a"
    assert main(["synth", "--format", "semkitti", "--out", str(out), "--num", "2", "--size", "94x310"]) == 0
    files = sorted(p.name for p in (out / "video_sequence" / "train").iterdir())
    assert len(files) == 8 and files[0] == "000000_000000_depth_179.569.png"
    assert (out / "video_sequence" / "dvps_semkitti_train.json").is_file()
    mov = tmp_path / "b"
    args = ["--moving", "--sequence-length", "2", "--frame-step", "2"]
    assert (
        main(["synth", "--format", "semkitti", "--out", str(mov), "--num", "4", "--size", "47x155", *args])
        == 0
    )
    stems = sorted(p.name[:13] for p in (mov / "video_sequence" / "train").glob("*_gtFine_class.png"))
    assert stems == ["000000_000000", "000000_000002", "000001_000000", "000001_000002"]
