"""Moving synthetic sequences: ids kept across frames, plausible motion, the Cityscapes-DVPS layout."""

from __future__ import annotations

import json

import numpy as np
import pytest

from panopticdepth.config.data import DataConfig
from panopticdepth.data.build import build_dataset
from panopticdepth.data.synthetic import generate_sequence, sample_scene, sequence_prefix, write_sequences
from panopticdepth.data.synthetic.motion import frame_interval, sample_motion, scene_at

H, W = 96, 192


def _thing_areas(panoptic: np.ndarray) -> dict[int, int]:
    ids, counts = np.unique(panoptic, return_counts=True)
    return {int(i): int(c) for i, c in zip(ids, counts) if i % 1000 and i < 32000}


def _boxes_by_id(scene) -> dict[int, np.ndarray]:
    """Thing id -> (n_boxes, 2, 3) lo/hi corners of its boxes in this frame's (moved) scene."""
    out: dict[int, list] = {}
    for pid, lo, hi in zip(scene.ids.tolist(), scene.lo, scene.hi):
        if pid % 1000:
            out.setdefault(pid, []).append(np.stack([lo, hi]))
    return {pid: np.stack(b) for pid, b in out.items()}


def _centroid(panoptic: np.ndarray, pid: int) -> np.ndarray:
    ys, xs = np.nonzero(panoptic == pid)
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("sequence", [0, 1, 2])
def test_ground_truth_keeps_ids_across_frames(sequence):
    """An id names the same object in every frame: same box shapes, small steps, it persists."""
    frames = generate_sequence(seed=5, sequence=sequence, length=4, height=H, width=W)
    for a, b in zip(frames, frames[1:]):
        assert not np.array_equal(a.image, b.image)  # the camera moved
        boxes_a, boxes_b = _boxes_by_id(a.scene), _boxes_by_id(b.scene)
        for pid in set(boxes_a) & set(boxes_b):
            if len(boxes_a[pid]) != len(boxes_b[pid]):  # a box went behind the camera
                continue
            size_a = boxes_a[pid][:, 1] - boxes_a[pid][:, 0]
            size_b = boxes_b[pid][:, 1] - boxes_b[pid][:, 0]
            np.testing.assert_allclose(size_a, size_b, atol=1e-3)  # the same object, not another one
            step = np.abs(boxes_b[pid] - boxes_a[pid]).max()
            assert step <= 16.0 * frame_interval()  # at most ego + 3 m/s + walking, per frame
        areas_a, areas_b = _thing_areas(a.panoptic), _thing_areas(b.panoptic)
        assert set(areas_b) <= set(boxes_b)
        big = [pid for pid, n in areas_a.items() if n >= 80]
        assert big
        persisting = [pid for pid in big if areas_b.get(pid, 0) >= 20]
        assert len(persisting) >= 0.6 * len(big)
        shifts = [np.abs(_centroid(b.panoptic, p) - _centroid(a.panoptic, p)).max() for p in persisting]
        assert np.median(shifts) < 0.15 * W


def test_ids_follow_the_objects_not_the_frame_order():
    """The check above can fail: a different object under the same id has another box shape."""
    frames = generate_sequence(seed=5, sequence=0, length=2, height=H, width=W)
    boxes = _boxes_by_id(frames[0].scene)
    cars = [pid for pid in boxes if pid // 1000 == 13]
    assert len(cars) >= 2
    sizes = [boxes[p][0, 1] - boxes[p][0, 0] for p in cars]
    assert not np.allclose(sizes[0], sizes[1], atol=1e-3)


def test_motion_by_role():
    """Camera drives along +Z; parked cars stand, lanes move together, walkers move at walking pace."""
    rng = np.random.default_rng(3)
    scene = sample_scene(rng, H, W)
    kinds = {kind for kind, _ in scene.roles.values()}
    assert {"lane", "walk"} <= kinds
    motion = sample_motion(scene, rng, duration=1.5)
    dt = frame_interval()
    assert dt == pytest.approx(5 / 17)
    later = scene_at(scene, motion, dt)
    assert later.z_offset == pytest.approx(motion.ego_speed * dt)
    assert later.end_z == pytest.approx(scene.end_z - motion.ego_speed * dt)
    assert 5.0 <= motion.ego_speed <= 12.0
    lane_speeds: dict[int, set] = {}
    for pid, (kind, lane) in scene.roles.items():
        vx, vz = motion.velocity[pid]
        if kind == "parked":
            assert (vx, vz) == (0.0, 0.0)
        elif kind == "lane":
            lane_speeds.setdefault(lane, set()).add(vz)
        else:
            assert 1.0 <= abs(vx) + abs(vz) <= 1.6
    assert all(len(v) == 1 for v in lane_speeds.values())  # queues keep their gaps
    assert min(lane_speeds[0]) >= motion.ego_speed  # the own lane never comes closer
    # Stuff boxes (poles, trees) move by -drive along Z only.
    stuff = np.nonzero(scene.ids % 1000 == 0)[0]
    moved = scene_at(scene, motion, 0.5)
    kept_stuff = np.nonzero(moved.ids % 1000 == 0)[0]
    near = scene.hi[stuff, 2] - 0.5 * motion.ego_speed > 0.1
    np.testing.assert_allclose(
        moved.lo[kept_stuff], scene.lo[stuff][near] - [0, 0, 0.5 * motion.ego_speed], atol=1e-4
    )


def test_written_sequences_read_back_with_sequence_meta(tmp_path):
    folder = write_sequences(tmp_path, "val", num_sequences=2, length=3, height=H, width=W, seed=1)
    index = json.loads((folder.parent / "dvps_cityscapes_val.json").read_text())
    assert [e["image"] for e in index][:4] == [
        f"{sequence_prefix(s, f)}_leftImg8bit.png" for s, f in ((0, 0), (0, 1), (0, 2), (1, 0))
    ]
    assert sequence_prefix(1, 2) == "000001_000002_synthmove_000001_000010"
    cfg = DataConfig(dataset="synthetic", root=str(tmp_path))
    cfg.augmentation.enabled = False
    ds = build_dataset(cfg, "val", train=False)
    assert len(ds) == 6
    metas = [ds[i]["meta"] for i in range(6)]
    assert [(m["sequence"], m["frame"]) for m in metas] == [
        (f"{s:06d}", f) for s in range(2) for f in range(3)
    ]
    expected = generate_sequence(1, 1, 3, H, W)[2]
    np.testing.assert_array_equal(ds[5]["panoptic"].numpy(), expected.panoptic)
