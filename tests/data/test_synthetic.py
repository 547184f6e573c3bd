"""Synthetic generator: round trip through the files, determinism, camera geometry, scene content."""

from __future__ import annotations

import json

import numpy as np
import pytest

from panopticdepth.config.data import DataConfig
from panopticdepth.data import synthetic
from panopticdepth.data.build import build_dataset
from panopticdepth.data.synthetic import generate, synth_prefix

from .conftest import NUM, SEED, H, W


def _cfg(root, **aug) -> DataConfig:
    cfg = DataConfig(dataset="synthetic", root=str(root))
    cfg.augmentation.enabled = False
    return cfg


def test_round_trip_exact(synth_root):
    """write -> read gives the rendered ids, classes and depth exactly (augmentation off)."""
    ds = build_dataset(_cfg(synth_root), "train", train=True)
    assert len(ds) == NUM
    for i in range(NUM):
        frame = generate(SEED, i, H, W)
        s = ds[i]
        assert s["meta"]["image_id"] == synth_prefix(i)
        np.testing.assert_array_equal(s["image"].permute(1, 2, 0).numpy(), frame.image)
        np.testing.assert_array_equal(s["panoptic"].numpy(), frame.panoptic)
        np.testing.assert_array_equal(s["depth"].numpy(), frame.depth)
        # semantic and instances against a brute-force derivation from the rendered ids
        cls = frame.panoptic // 1000
        np.testing.assert_array_equal(s["semantic"].numpy(), np.where(cls <= 18, cls, 255))
        expected = []
        for v in np.unique(frame.panoptic):
            if 11 <= v // 1000 <= 18:
                ys, xs = np.nonzero(frame.panoptic == v)
                if ys.max() > ys.min() and xs.max() > xs.min():
                    expected.append(v)
        got = [int(np.unique(s["panoptic"].numpy()[m.numpy()])[0]) for m in s["instance_masks"]]
        assert sorted(got) == sorted(int(v) for v in expected)
        for m, c in zip(s["instance_masks"], s["instance_classes"]):
            vals = np.unique(frame.panoptic[m.numpy()])
            assert len(vals) == 1 and vals[0] // 1000 - 11 == int(c)
            assert m.sum() == (frame.panoptic == vals[0]).sum()


def test_index_json_and_prefixes(synth_root):
    index = json.loads((synth_root / "video_sequence" / "dvps_cityscapes_train.json").read_text())
    assert len(index) == NUM
    for i, e in enumerate(index):
        prefix = synth_prefix(i)
        assert e == {
            "height": H,
            "width": W,
            "image": f"{prefix}_leftImg8bit.png",
            "depth": f"{prefix}_depth.png",
            "seg": f"{prefix}_gtFine_instanceTrainIds.png",
        }
    # DVPQ groups frames by the first '_' field: 6 frames per sequence.
    keys = [synth_prefix(i).split("_")[0] for i in range(13)]
    assert keys[:6] == ["000000"] * 6 and keys[6:12] == ["000001"] * 6 and keys[12] == "000002"


def test_deterministic_per_seed_and_index():
    a, b = generate(3, 5, H, W), generate(3, 5, H, W)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.panoptic, b.panoptic)
    c = generate(3, 6, H, W)
    assert not np.array_equal(a.panoptic, c.panoptic)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_ground_plane_depth_is_analytic(index):
    """Road pixels: depth = h / (sin(pitch) + cos(pitch) (v - cy) / fy), the ray/ground intersection."""
    h, w = 128, 256
    frame = generate(11, index, h, w)
    cam = frame.scene.camera
    assert 1.2 <= cam.height_m <= 1.5 and abs(np.rad2deg(cam.pitch)) <= 5
    assert cam.fx == pytest.approx(2262 * w / 2048) and cam.cx == pytest.approx(1096 * w / 2048)
    assert cam.fy == pytest.approx(2262 * h / 1024) and cam.cy == pytest.approx(513 * h / 1024)
    road = (frame.panoptic == 0) & (frame.depth > 0)
    vs, us = np.nonzero(road)
    assert len(vs) > 100
    y = (vs - cam.cy) / cam.fy  # camera-frame ray (x, y, 1), y pointing down
    # The camera is pitched down by `pitch`: the ray's downward world component is y cos + sin.
    analytic = cam.height_m / (y * np.cos(cam.pitch) + np.sin(cam.pitch))
    np.testing.assert_allclose(frame.depth[vs, us], analytic, atol=1 / 512 + 1e-5 * analytic.max(), rtol=1e-5)


def test_scene_content_is_learnable():
    """Several thing instances at 5-40 m, VOID hood, invalid sky, depth jumps at instance borders."""
    n_things, n_near = [], []
    for i in range(4):
        f = generate(0, i, 256, 512)
        cls = f.panoptic // 1000
        assert (f.panoptic == 32000).any()
        assert (f.depth[f.panoptic == 32000] == 0).all()
        assert (f.depth[cls == 10] == 0).all() and f.depth.max() <= 80.0
        ids = [v for v in np.unique(f.panoptic) if 11 <= v // 1000 <= 18]
        n_things.append(len(ids))
        near = [
            v for v in ids if (f.panoptic == v).sum() > 400 and 5 <= np.median(f.depth[f.panoptic == v]) <= 40
        ]
        n_near.append(len(near))
        # a depth discontinuity exists along some thing boundary (z-buffered occlusion)
        dx = np.abs(np.diff(f.depth, axis=1))
        border = (f.panoptic[:, 1:] != f.panoptic[:, :-1]) & (cls[:, 1:] >= 11) & (f.depth[:, 1:] > 0)
        assert (dx[border & (f.depth[:, :-1] > 0)] > 2.0).any()
    assert min(n_things) >= 4 and np.mean(n_near) >= 3


def test_walls_and_fences_look_different():
    """A class rendered exactly like another cannot be learned: walls (light masonry) and fences
    (dark slats) once shared one colour draw. Every wall must be brighter than every fence."""
    bright = {3: [], 4: []}  # train ids: wall, fence
    for i in range(60):
        f = generate(0, i, 128, 256)
        cls = f.panoptic // 1000
        for c in bright:
            if (cls == c).sum() >= 30:
                bright[c].append(f.image[cls == c].astype(np.float64).mean())
    assert len(bright[3]) >= 3 and len(bright[4]) >= 3
    assert min(bright[3]) > max(bright[4]) + 20


def test_wall_and_fence_geometry_is_pinned():
    """Their new looks changed colours only: labels and depth of frames holding a wall (13) and a
    fence (5) are bit-identical to the generator before."""
    import hashlib

    h = hashlib.sha256()
    for i in (5, 13):
        f = generate(0, i, 128, 256)
        assert {3, 4} & set(np.unique(f.panoptic // 1000).tolist())
        h.update(f.panoptic.tobytes())
        h.update(f.depth.tobytes())
    assert h.hexdigest() == "b7a9143ab8b7935e0471aa19502c93571d2c895d732bbb6875bde0b2c6d465a2"


def test_synth_cli(tmp_path):
    from panopticdepth.cli.main import main

    assert main(["synth", "--out", str(tmp_path), "--num", "2", "--size", "32x64", "--seed", "1"]) == 0
    files = sorted(p.name for p in (tmp_path / "video_sequence" / "train").iterdir())
    assert len(files) == 6 and files[0] == "000000_000000_synth_000000_depth.png"
    assert main(["synth", "--out", str(tmp_path), "--num", "0"]) == 2


def test_cityscapes_output_is_pinned():
    """Frames and sequences are bit-identical to the generator before the SemKITTI format existed."""
    import hashlib

    from panopticdepth.data.synthetic import generate_sequence

    h = hashlib.sha256()
    frames = [generate(7, i, 48, 96) for i in range(3)] + generate_sequence(5, 1, 3, 48, 96)
    for f in frames:
        for a in (f.image, f.panoptic, f.depth):
            h.update(a.tobytes())
    assert h.hexdigest() == "2449fbbb40761eb14b4d480c32ae3e7223d990e0f0af612330d8b989edb5bc0c"


# Each writes at least 2 x workers items (scenes or sequences), so the pool is used.
WRITERS = {
    "scenes": lambda out, workers: synthetic.write_dataset(out, "train", 6, 32, 64, seed=5, workers=workers),
    "sequences": lambda out, workers: synthetic.write_sequences(
        out, "val", 4, 2, 32, 64, seed=5, workers=workers
    ),
    "semkitti scenes": lambda out, workers: synthetic.write_semkitti_dataset(
        out, "train", 6, 24, 80, seed=5, workers=workers
    ),
    "semkitti sequences": lambda out, workers: synthetic.write_semkitti_sequences(
        out, "val", 4, 2, 24, 80, seed=5, workers=workers
    ),
}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_worker_processes_write_the_same_files(tmp_path, kind):
    one, two = WRITERS[kind](tmp_path / "one", 1), WRITERS[kind](tmp_path / "two", 2)
    names = sorted(p.name for p in one.iterdir())
    assert len(names) >= 18 and names == sorted(p.name for p in two.iterdir())
    for name in names:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    indexes = sorted(p.name for p in one.parent.glob("*.json"))
    assert len(indexes) == 1
    assert (one.parent / indexes[0]).read_text() == (two.parent / indexes[0]).read_text()
