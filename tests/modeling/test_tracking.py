"""Tracker on hand-made frames: segments with known kernels, boxes and depths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from panopticdepth.modeling.outputs import PanopticDepthResult, Segment
from panopticdepth.modeling.tracking import (
    Tracker,
    TrackerConfig,
    relabel,
    segment_observations,
    track_sequence,
)

H, W = 60, 120
INTR = (100.0, 100.0, W / 2, H / 2)
ROAD = 0  # stuff train id
CAR, PERSON = 13, 11


def _kernels(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim))


def make_frame(
    objects: list[tuple[int, int, np.ndarray, tuple[int, int, int, int], float]],
) -> PanopticDepthResult:
    """objects: (category, per-frame instance, kernel, (y0, y1, x0, x1), depth) -> a result.

    The background is road (stuff) at 20 m; later objects are drawn over earlier ones.
    """
    pan = np.full((H, W), ROAD * 1000, np.int64)
    depth = np.full((H, W), 20.0, np.float32)
    for cat, inst, _, (y0, y1, x0, x1), z in objects:
        pan[y0:y1, x0:x1] = cat * 1000 + inst
        depth[y0:y1, x0:x1] = z
    segments, kernels = [], []
    ids, counts = np.unique(pan, return_counts=True)
    area = dict(zip(ids.tolist(), counts.tolist()))
    for cat, inst, kernel, _, _ in objects:
        pid = cat * 1000 + inst
        if area.get(pid, 0):
            segments.append(Segment(pid, cat, inst, True, 0.9, area[pid]))
            kernels.append(kernel)
    segments.append(Segment(ROAD * 1000, ROAD, 0, False, 0.9, area.get(ROAD * 1000, 0)))
    kernels.append(np.ones_like(objects[0][2]) if objects else np.ones(16))
    return PanopticDepthResult(
        panoptic=torch.from_numpy(pan),
        semantic=torch.from_numpy(pan // 1000),
        depth=torch.from_numpy(depth),
        segments=segments,
        segment_kernels=torch.tensor(np.stack(kernels), dtype=torch.float32),
    )


def _id_at(result: PanopticDepthResult, y: int, x: int) -> int:
    return int(result.panoptic[y, x])


BOXES = [(5, 20, 5, 25), (5, 20, 35, 55), (30, 50, 5, 30), (30, 50, 60, 90)]


def test_observations_back_project_centroid_and_mean_depth():
    k = _kernels(1)
    frame = make_frame([(CAR, 1, k[0], (10, 20, 70, 90), 8.0)])
    (obs,) = segment_observations(frame, INTR)
    u, v = 79.5, 14.5  # pixel centroid of rows 10..19, columns 70..89
    np.testing.assert_allclose(obs.position, [(u - 60) * 8 / 100, (v - 30) * 8 / 100, 8.0])
    assert obs.depth == pytest.approx(8.0) and obs.category == CAR and obs.index == 0
    np.testing.assert_allclose(np.linalg.norm(obs.kernel), 1.0)


def test_known_permutation_of_kernels_is_recovered():
    """Frame 2 lists the same four cars in another order under other per-frame ids, and the
    cars moved by half their spacing: each keeps its frame-1 track id."""
    k = _kernels(4)
    first = make_frame([(CAR, i + 1, k[i], BOXES[i], 10.0 + i) for i in range(4)])
    perm = [2, 0, 3, 1]  # object perm[j] gets per-frame instance j + 1
    moved = [(y0, y1, x0 + 4, x1 + 4) for y0, y1, x0, x1 in BOXES]
    second = make_frame([(CAR, j + 1, k[o], moved[o], 10.0 + o) for j, o in enumerate(perm)])
    out = track_sequence([first, second], intrinsics=INTR)
    for y0, _, x0, _ in BOXES:
        assert _id_at(out[1], y0 + 1, x0 + 5) == _id_at(out[0], y0 + 1, x0 + 1)
    assert len({s.id for s in out[1].segments if s.is_thing}) == 4
    # Without tracking the per-frame ids do differ for permuted objects.
    assert _id_at(second, BOXES[0][0] + 1, BOXES[0][2] + 5) != _id_at(first, BOXES[0][0] + 1, BOXES[0][2] + 1)


def test_kernels_decide_when_positions_swap():
    """Two cars swap places between frames: the kernel cue, not the position, keeps the ids."""
    k = _kernels(2, seed=1)
    cfg = TrackerConfig(kernel_weight=0.8)
    a = make_frame([(CAR, 1, k[0], BOXES[0], 10.0), (CAR, 2, k[1], BOXES[1], 10.0)])
    b = make_frame([(CAR, 1, k[0], BOXES[1], 10.0), (CAR, 2, k[1], BOXES[0], 10.0)])
    out = track_sequence([a, b], cfg, INTR)
    y, x = BOXES[0][0] + 1, BOXES[0][2] + 1
    y2, x2 = BOXES[1][0] + 1, BOXES[1][2] + 1
    assert _id_at(out[1], y2, x2) == _id_at(out[0], y, x)


def _approach(box: tuple[int, int, int, int], z: float, z_new: float) -> tuple[int, int, int, int]:
    """Where a static box at depth z is seen from z - z_new metres closer (pinhole INTR)."""
    s = z / z_new
    y0, y1, x0, x1 = box
    cy, cx = INTR[3], INTR[2]
    return (
        round(cy + (y0 - cy) * s),
        round(cy + (y1 - cy) * s),
        round(cx + (x0 - cx) * s),
        round(cx + (x1 - cx) * s),
    )


def _centre(box: tuple[int, int, int, int]) -> tuple[int, int]:
    return (box[0] + box[1]) // 2, (box[2] + box[3]) // 2


def test_camera_motion_is_compensated():
    """The camera drives 3 m towards a static scene (every depth drops by 3 m, boxes grow away from
    the centre); with tight position tolerances only the measured camera motion keeps the ids."""
    k = _kernels(4, seed=2)
    noisy = k + 0.3 * _kernels(4, seed=3)  # kernels change a little between frames
    boxes = [(16, 26, 26, 42), (16, 26, 78, 94), (34, 44, 26, 42), (34, 44, 78, 94)]
    z0 = [12.0 + 2 * i for i in range(4)]
    a = make_frame([(CAR, i + 1, k[i], boxes[i], z0[i]) for i in range(4)])
    moved = [_approach(boxes[i], z0[i], z0[i] - 3.0) for i in range(4)]
    b = make_frame([(CAR, 4 - i, noisy[i], moved[i], z0[i] - 3.0) for i in range(4)])
    # Equal weights: the kernel cosine (about 0.96) alone stays below the match threshold.
    tight = TrackerConfig(kernel_weight=0.5, position_sigma=0.3, position_sigma_rel=0.0)
    out = track_sequence([a, b], tight, INTR)
    for i in range(4):
        assert _id_at(out[1], *_centre(moved[i])) == _id_at(out[0], *_centre(boxes[i]))
    # Without the camera-motion estimate (no confident kernel anchors) the same frames lose the ids.
    blind = TrackerConfig(
        kernel_weight=0.5, position_sigma=0.3, position_sigma_rel=0.0, anchor_similarity=1.5
    )
    out = track_sequence([a, b], blind, INTR)
    assert all(_id_at(out[1], *_centre(moved[i])) != _id_at(out[0], *_centre(boxes[i])) for i in range(4))


def test_object_returning_within_memory_keeps_its_id_and_beyond_gets_a_new_one():
    k = _kernels(3, seed=4)
    both = [(CAR, 1, k[0], BOXES[0], 10.0), (PERSON, 1, k[1], BOXES[1], 12.0)]
    car_only = [(CAR, 1, k[0], BOXES[0], 10.0)]
    # Person visible in frame 0, hidden for 3 frames (memory 3), back in frame 4.
    frames = [make_frame(both)] + [make_frame(car_only)] * 3 + [make_frame(both)]
    out = track_sequence(frames, TrackerConfig(memory=3), INTR)
    y, x = BOXES[1][0] + 1, BOXES[1][2] + 1
    assert _id_at(out[4], y, x) == _id_at(out[0], y, x)
    # One frame longer than the memory: the person is a new track with a new id.
    frames = [make_frame(both)] + [make_frame(car_only)] * 4 + [make_frame(both)]
    out = track_sequence(frames, TrackerConfig(memory=3), INTR)
    assert _id_at(out[5], y, x) != _id_at(out[0], y, x)
    assert _id_at(out[5], y, x) // 1000 == PERSON


def test_new_object_gets_a_new_id_and_stuff_keeps_its_id():
    k = _kernels(3, seed=5)
    a = make_frame([(CAR, 1, k[0], BOXES[0], 10.0), (CAR, 2, k[1], BOXES[1], 11.0)])
    # The new car comes with per-frame instance 1, which the tracker had given to another car.
    b = make_frame(
        [(CAR, 3, k[0], BOXES[0], 10.0), (CAR, 2, k[1], BOXES[1], 11.0), (CAR, 1, k[2], BOXES[2], 15.0)]
    )
    tracker = Tracker(intrinsics=INTR)
    out_a, out_b = tracker.update(a), tracker.update(b)
    old = {_id_at(out_a, BOXES[i][0] + 1, BOXES[i][2] + 1) for i in range(2)}
    new = _id_at(out_b, BOXES[2][0] + 1, BOXES[2][2] + 1)
    assert new // 1000 == CAR and new not in old
    assert {_id_at(out_b, BOXES[i][0] + 1, BOXES[i][2] + 1) for i in range(2)} == old
    assert _id_at(out_b, 59, 119) == ROAD * 1000  # stuff: one id per class, instance 0
    assert [s.id for s in out_b.segments if not s.is_thing] == [ROAD * 1000]
    # Segment list and map agree.
    for s in out_b.segments:
        assert int((out_b.panoptic == s.id).sum()) == s.area and s.instance == s.id % 1000


def test_other_category_is_never_matched():
    k = _kernels(1, seed=6)
    a = make_frame([(CAR, 1, k[0], BOXES[0], 10.0)])
    b = make_frame([(PERSON, 1, k[0], BOXES[0], 10.0)])
    tracker = Tracker(intrinsics=INTR)
    tracker.update(a)
    tracker.update(b)
    assert sorted((t.category, t.hits) for t in tracker.tracks) == [(PERSON, 1), (CAR, 1)]


def test_instance_ids_wrap_and_skip_live_tracks():
    tracker = Tracker(TrackerConfig(max_instance_id=3), intrinsics=INTR)
    k = _kernels(4, seed=7)
    a = make_frame([(CAR, i + 1, k[i], BOXES[i], 10.0 + 3 * i) for i in range(3)])
    out = tracker.update(a)
    assert sorted(s.instance for s in out.segments if s.is_thing) == [1, 2, 3]
    # Car 2 is lost (in memory) and a new car comes: ids 1..3 are all taken, so the new car gets the
    # lost track's id and the tracks still seen keep theirs.
    b = make_frame(
        [(CAR, 1, k[0], BOXES[0], 10.0), (CAR, 2, k[1], BOXES[1], 13.0), (CAR, 3, k[3], BOXES[3], 30.0)]
    )
    out = tracker.update(b)
    ids = {int(out.panoptic[b0 + 1, b2 + 1]) for b0, _, b2, _ in BOXES[:2]}
    assert ids == {13001, 13002}
    assert _id_at(out, BOXES[3][0] + 1, BOXES[3][2] + 1) == 13003
    # Four cars in one frame cannot have four ids below 4.
    c = make_frame([(CAR, i + 1, k[i], BOXES[i], 10.0 + 3 * i) for i in range(4)])
    tracker = Tracker(TrackerConfig(max_instance_id=3), intrinsics=INTR)
    with pytest.raises(ValueError, match="more than 3"):
        tracker.update(c)


def test_relabel_swaps_ids_at_once():
    k = _kernels(2, seed=8)
    a = make_frame([(CAR, 1, k[0], BOXES[0], 10.0), (CAR, 2, k[1], BOXES[1], 10.0)])
    out = relabel(a, {0: CAR * 1000 + 2, 1: CAR * 1000 + 1})
    assert _id_at(out, BOXES[0][0], BOXES[0][2]) == CAR * 1000 + 2
    assert _id_at(out, BOXES[1][0], BOXES[1][2]) == CAR * 1000 + 1
    assert _id_at(a, BOXES[0][0], BOXES[0][2]) == CAR * 1000 + 1  # the input is not modified


class _Candidates:
    """Stands in for `postprocess.ThingCandidates`: `expanded` is the frame merged with every
    low-score instance; `admit` records what the tracker admitted and returns that merge."""

    def __init__(self, num_selected: int, expanded: PanopticDepthResult, min_score: float = 0.05):
        self.min_score = min_score
        self.num_selected = num_selected
        self.num_candidates = sum(s.is_thing for s in expanded.segments) - num_selected
        self._expanded = expanded
        self.admitted: list[int] | None = None

    def expanded(self) -> PanopticDepthResult:
        return self._expanded

    def admit(self, ranks) -> PanopticDepthResult:
        self.admitted = sorted(ranks)
        return self._expanded


def _ranked(result: PanopticDepthResult, score: float | None = None) -> PanopticDepthResult:
    """Things get ranks 0, 1, ... in list order (and `score`, when given)."""
    things = iter(range(len(result.segments)))
    for s in result.segments:
        if s.is_thing:
            s.rank = next(things)
            s.score = s.score if score is None else score
    return result


def _with_candidate(standard_objects, low_objects, low_score: float = 0.1) -> PanopticDepthResult:
    standard = _ranked(make_frame(standard_objects))
    expanded = _ranked(make_frame(standard_objects + low_objects))
    for s in expanded.segments[len(standard_objects) : len(standard_objects) + len(low_objects)]:
        s.score = low_score
    standard.candidates = _Candidates(len(standard_objects), expanded)
    return standard


def test_low_score_instance_continues_its_track():
    """The car scores under the merge threshold in frame 2: it is admitted back with its id,
    while frame 2's confident person keeps its own track."""
    k = _kernels(2)
    car = (CAR, 1, k[0], BOXES[0], 10.0)
    person = (PERSON, 1, k[1], BOXES[2], 12.0)
    tracker = Tracker(intrinsics=INTR)
    first = tracker.update(_ranked(make_frame([car, person])))
    car_id, person_id = _id_at(first, 10, 10), _id_at(first, 40, 10)
    second_in = _with_candidate([person], [(CAR, 2, k[0], (5, 20, 7, 27), 10.0)])
    second = tracker.update(second_in)
    assert second_in.candidates.admitted == [1]
    assert _id_at(second, 10, 10) == car_id and _id_at(second, 40, 10) == person_id
    assert second.candidates is None


def test_low_score_instance_without_a_track_is_not_admitted():
    """A low-score car that matches no lost track (another kernel, elsewhere) stays out, and opens
    no track; with `low_score=None` even the matching one stays out."""
    k = _kernels(3)
    tracker = Tracker(intrinsics=INTR)
    tracker.update(_ranked(make_frame([(CAR, 1, k[0], BOXES[0], 10.0)])))
    frame = _with_candidate([], [(CAR, 1, k[1], BOXES[3], 25.0)])
    out = tracker.update(frame)
    assert frame.candidates.admitted is None
    assert not any(s.is_thing for s in out.segments) and len(tracker.tracks) == 1

    off = Tracker(TrackerConfig(low_score=None), intrinsics=INTR)
    off.update(_ranked(make_frame([(CAR, 1, k[0], BOXES[0], 10.0)])))
    frame = _with_candidate([], [(CAR, 2, k[0], BOXES[0], 10.0)])
    out = off.update(frame)
    assert frame.candidates.admitted is None and not any(s.is_thing for s in out.segments)


def test_candidates_scored_above_low_score_are_refused():
    """Candidates cut at a higher score than the tracker's low_score would silently miss some."""
    k = _kernels(1)
    tracker = Tracker(intrinsics=INTR)
    tracker.update(_ranked(make_frame([(CAR, 1, k[0], BOXES[0], 10.0)])))
    frame = _with_candidate([], [(CAR, 1, k[0], BOXES[0], 10.0)])
    frame.candidates.min_score = 0.15
    with pytest.raises(ValueError, match="candidate_score"):
        tracker.update(frame)
