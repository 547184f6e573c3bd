"""Instance ids that stay the same across the frames of a video (depth-aware video panoptic
segmentation) without any training.

The original PanopticDepth labels every frame on its own, so a car is instance 3 in one frame and
7 in the next. `Tracker` links the thing segments of consecutive frames from what the network
already produces for each segment (`PanopticDepthResult.segment_kernels`, `.depth`):

* identity: cosine similarity of the segment's projected mask kernel (the vector that, applied to
  the mask embedding, gives the segment's mask, Eq. 2) and the track's kernel, an average over the
  frames it was seen in;
* position: the segment's 3D centre, i.e. its pixel centroid back-projected through the camera
  intrinsics at the segment's mean predicted depth, against the track's position predicted with
  its velocity. The camera's own motion moves every track alike; a first assignment on the kernels
  alone measures that shift (median displacement of its confident matches) before the final one.

The affinity of a (track, segment) pair is a = w cos + (1 - w) exp(-d^2 / 2 sigma^2), with
sigma = sigma_0 + sigma_rel * depth (predicted depth errors grow with distance). Pairs of different
categories or with a below the threshold are never matched; the rest is an optimal assignment
(`scipy.optimize.linear_sum_assignment` on -a). Tracks without a match are remembered for
`memory` frames (occlusions, missed detections), segments without a match open new tracks. Stuff
keeps one id per class (instance 0) and is left as it is.

Score hysteresis: an object whose instance score dips below the merge's threshold for one frame
would drop out of that frame. When a result carries `candidates` (`Predictor.candidate_score`),
tracks left unmatched by the frame's segments are offered its lower-scored instances (score >=
`low_score`) in a second assignment with the stricter `low_match_threshold`; the matched ones are
admitted and the frame is merged again with them. Low-score instances never open tracks. This is
the two-stage association of ByteTrack (Zhang et al., ECCV 2022) on PanopticDepth's segments.

Track ids are the instance part of the panoptic id (category * 1000 + track id), counted per
category from 1 and wrapping at `max_instance_id` (255: the official RGB prediction PNG holds the
instance in one 8-bit channel), skipping ids of tracks still alive. No file access, no torch
autograd: results in, relabelled results out, in frame order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .outputs import PanopticDepthResult

LABEL_DIVISOR = 1000
Intrinsics = tuple[float, float, float, float]  # fx, fy, cx, cy in pixels of the result
_NEVER = -1e6  # affinity of pairs that must not match (different category)


@dataclass
class TrackerConfig:
    """Association settings; the defaults suit Cityscapes-DVPS-like frame intervals (~0.3 s).

    Chosen on synthetic tuning sequences (not the benchmark's): with the small demo model the
    kernel cosine of one object in consecutive frames is 0.98-1.0 (10th-90th percentile), that of
    two objects of one class 0.34-0.81, so the kernels carry most of the weight.
    """

    kernel_weight: float = 0.7  # w: share of the kernel cosine in the affinity (rest: 3D position)
    match_threshold: float = 0.5  # pairs with a lower affinity are never matched
    position_sigma: float = 1.0  # sigma_0, metres
    position_sigma_rel: float = 0.1  # sigma_rel, fraction of the segment's depth
    memory: int = 3  # frames a lost track is kept (it may return within them)
    kernel_momentum: float = 0.5  # weight of the track's kernel against the new segment's
    velocity_momentum: float = 0.5  # same for the velocity
    anchor_similarity: float = 0.9  # kernel cosine of a match trusted for the camera-motion estimate
    max_instance_id: int = 255
    nominal_depth: float = 10.0  # metres, for a model without depth (the position cue is then angular)
    # Score hysteresis: instances scored >= low_score (below the merge's threshold) may continue a
    # track with an affinity >= low_match_threshold; low_score = None turns it off.
    low_score: float | None = 0.05
    low_match_threshold: float = 0.7


@dataclass
class Observation:
    """One thing segment of a frame, as the tracker sees it."""

    index: int  # position in `result.segments`
    rank: int  # `Segment.rank`: the instance's place in the frame's score order
    category: int
    kernel: np.ndarray | None  # (C,) unit-norm mask kernel
    position: np.ndarray  # (3,) camera-frame centre in metres (x right, y down, z forward)
    depth: float  # mean depth of the segment (metres)


@dataclass
class Track:
    category: int
    instance: int
    kernel: np.ndarray | None
    position: np.ndarray
    velocity: np.ndarray  # metres per frame
    last_frame: int
    hits: int = 1

    @property
    def id(self) -> int:
        return self.category * LABEL_DIVISOR + self.instance


def default_intrinsics(height: int, width: int) -> Intrinsics:
    """A pinhole camera with Cityscapes' focal length per image width (fx = 1.104 W), centred."""
    f = 1.104 * width
    return (f, f, width / 2.0, height / 2.0)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def segment_observations(
    result: PanopticDepthResult, intrinsics: Intrinsics, nominal_depth: float = 10.0
) -> list[Observation]:
    """Thing segments of `result` with their kernel and back-projected 3D centre (mean depth)."""
    things = [(i, s) for i, s in enumerate(result.segments) if s.is_thing]
    if not things:
        return []
    pan = result.panoptic.detach().cpu().numpy().astype(np.int64)
    h, w = pan.shape
    lut = np.full(int(max(pan.max(), max(s.id for _, s in things))) + 1, len(things), np.int64)
    for k, (_, s) in enumerate(things):
        lut[s.id] = k
    label = lut[np.clip(pan, 0, None)].ravel()
    n = len(things) + 1
    area = np.bincount(label, minlength=n)[:-1].astype(np.float64)
    cols = np.tile(np.arange(w, dtype=np.float64), h)
    rows = np.repeat(np.arange(h, dtype=np.float64), w)
    u = np.bincount(label, cols, n)[:-1] / np.maximum(area, 1)
    v = np.bincount(label, rows, n)[:-1] / np.maximum(area, 1)
    z = np.full(len(things), float(nominal_depth))
    if result.depth is not None:
        depth = result.depth.detach().float().cpu().numpy().ravel().astype(np.float64)
        valid = depth > 0
        dsum = np.bincount(label[valid], depth[valid], n)[:-1]
        dcount = np.bincount(label[valid], minlength=n)[:-1]
        z = np.where(dcount > 0, dsum / np.maximum(dcount, 1), z)
    fx, fy, cx, cy = intrinsics
    kernels = None
    if result.segment_kernels is not None:
        kernels = result.segment_kernels.detach().float().cpu().numpy().astype(np.float64)
    out = []
    for k, (i, s) in enumerate(things):
        if area[k] == 0:
            continue
        pos = np.array([(u[k] - cx) * z[k] / fx, (v[k] - cy) * z[k] / fy, z[k]])
        kernel = None if kernels is None else _unit(kernels[i])
        out.append(Observation(i, s.rank, s.category, kernel, pos, float(z[k])))
    return out


class Tracker:
    """Online tracker: call `update` with the results of one sequence in frame order."""

    def __init__(self, config: TrackerConfig | None = None, intrinsics: Intrinsics | None = None) -> None:
        self.config = config or TrackerConfig()
        self.intrinsics = intrinsics
        self.reset()

    def reset(self) -> None:
        """Forget every track (start of a new sequence)."""
        self.tracks: list[Track] = []
        self.frame = -1
        self.scene_velocity = np.zeros(3)  # median per-frame displacement of matched tracks
        self._residual = np.zeros(3)  # this frame's camera-motion correction (`associate`)
        self._next_instance: dict[int, int] = {}

    # ------------------------------------------------------------------ association
    def _kernel_similarity(self, tracks: Sequence[Track], obs: Sequence[Observation]) -> np.ndarray:
        sim = np.zeros((len(tracks), len(obs)))
        for i, t in enumerate(tracks):
            for j, o in enumerate(obs):
                if t.kernel is not None and o.kernel is not None and t.kernel.shape == o.kernel.shape:
                    sim[i, j] = float(t.kernel @ o.kernel)
        return sim

    def _assign(self, affinity: np.ndarray, threshold: float) -> list[tuple[int, int]]:
        if affinity.size == 0:
            return []
        rows, cols = linear_sum_assignment(-affinity)
        return [(int(r), int(c)) for r, c in zip(rows, cols) if affinity[r, c] >= threshold]

    def associate(
        self,
        obs: Sequence[Observation],
        tracks: Sequence[Track] | None = None,
        *,
        threshold: float | None = None,
        reuse_camera_motion: bool = False,
    ) -> list[tuple[int, int]]:
        """(track index, observation index) pairs between `tracks` (default: all live tracks) and
        this frame's segments, with affinity >= `threshold` (default `match_threshold`).
        `reuse_camera_motion`: keep the frame's camera-motion estimate from the first association
        instead of measuring it again (the second, low-score association)."""
        cfg = self.config
        tracks = self.tracks if tracks is None else tracks
        if not tracks or not obs:
            return []
        same = np.array([[t.category == o.category for o in obs] for t in tracks])
        sim = self._kernel_similarity(tracks, obs)
        gaps = np.array([self.frame - t.last_frame for t in tracks], np.float64)
        predicted = np.stack([t.position + t.velocity * g for t, g in zip(tracks, gaps)])
        positions = np.stack([o.position for o in obs])
        has_kernels = obs[0].kernel is not None and all(t.kernel is not None for t in tracks)
        if not reuse_camera_motion:
            # Pass 1 (kernels only): the camera-motion error of the prediction, from confident
            # matches; kept for this frame's second (low-score) association.
            self._residual = np.zeros(3)
            if has_kernels:
                anchors = self._assign(np.where(same, sim, _NEVER), cfg.anchor_similarity)
                if anchors:
                    self._residual = np.median([positions[j] - predicted[i] for i, j in anchors], axis=0)
        # Pass 2: kernels and 3D position after removing that shift.
        dist2 = ((positions[None, :, :] - (predicted + self._residual)[:, None, :]) ** 2).sum(-1)
        sigma = cfg.position_sigma + cfg.position_sigma_rel * np.array([o.depth for o in obs])
        closeness = np.exp(-dist2 / (2.0 * sigma[None, :] ** 2))
        w = cfg.kernel_weight if has_kernels else 0.0
        affinity = np.where(same, w * sim + (1.0 - w) * closeness, _NEVER)
        return self._assign(affinity, cfg.match_threshold if threshold is None else threshold)

    # ------------------------------------------------------------------ bookkeeping
    def _new_instance(self, category: int) -> int:
        """Next free instance id of the category (wrapping; evicts the stalest lost track if all are
        taken; raises if every id names a segment of this very frame)."""
        top = self.config.max_instance_id
        used = {t.instance for t in self.tracks if t.category == category}
        start = self._next_instance.get(category, 1)
        for step in range(top):
            candidate = (start - 1 + step) % top + 1
            if candidate not in used:
                self._next_instance[category] = candidate % top + 1
                return candidate
        lost = [t for t in self.tracks if t.category == category and t.last_frame < self.frame]
        if not lost:
            raise ValueError(f"more than {top} segments of category {category} in one frame")
        stalest = min(lost, key=lambda t: t.last_frame)
        self.tracks.remove(stalest)
        return stalest.instance

    def _update_track(self, track: Track, o: Observation) -> np.ndarray:
        cfg = self.config
        gap = max(self.frame - track.last_frame, 1)
        step = (o.position - track.position) / gap
        m = cfg.velocity_momentum if track.hits > 1 else 0.0
        track.velocity = m * track.velocity + (1.0 - m) * step
        track.position = o.position
        if o.kernel is not None and track.kernel is not None and track.kernel.shape == o.kernel.shape:
            track.kernel = _unit(cfg.kernel_momentum * track.kernel + (1.0 - cfg.kernel_momentum) * o.kernel)
        else:
            track.kernel = o.kernel
        track.last_frame = self.frame
        track.hits += 1
        return step

    def update(
        self, result: PanopticDepthResult, intrinsics: Intrinsics | None = None
    ) -> PanopticDepthResult:
        """Relabel the thing segments of the next frame with track ids; returns a new result (merged
        again when low-score instances were admitted, see the module docstring)."""
        self.frame += 1
        h, w = result.panoptic.shape[-2:]
        intr = intrinsics or self.intrinsics or default_intrinsics(int(h), int(w))
        # Tracks lost for more than `memory` frames are gone.
        self.tracks = [t for t in self.tracks if self.frame - t.last_frame <= self.config.memory + 1]
        obs = segment_observations(result, intr, self.config.nominal_depth)
        pairs = [(self.tracks[ti], obs[oj]) for ti, oj in self.associate(obs)]
        matched = {id(t) for t, _ in pairs}
        unmatched = [t for t in self.tracks if id(t) not in matched]
        admitted = self._low_score_pairs(result, unmatched, intr)
        new_ids = {o.index: t.id for t, o in pairs}  # segment index -> track id
        steps = [self._update_track(t, o) for t, o in [*pairs, *admitted]]
        if steps:
            self.scene_velocity = np.median(np.stack(steps), axis=0)
        for o in obs:
            if o.index in new_ids:
                continue
            track = Track(o.category, self._new_instance(o.category), o.kernel, o.position,
                          self.scene_velocity.copy(), self.frame)  # fmt: skip
            self.tracks.append(track)
            new_ids[o.index] = track.id
        if admitted:  # merge again with the admitted instances; segments are found by rank
            by_rank = {result.segments[i].rank: tid for i, tid in new_ids.items()}
            by_rank.update({o.rank: t.id for t, o in admitted})
            result = result.candidates.admit([o.rank for _, o in admitted])
            new_ids = {i: by_rank[s.rank] for i, s in enumerate(result.segments) if s.rank in by_rank}
        return replace(relabel(result, new_ids), candidates=None)

    def _low_score_pairs(
        self, result: PanopticDepthResult, tracks: list[Track], intrinsics: Intrinsics
    ) -> list[tuple[Track, Observation]]:
        """Second association: unmatched tracks against the frame's low-score instances."""
        cfg = self.config
        candidates = getattr(result, "candidates", None)
        if not tracks or candidates is None or cfg.low_score is None or not candidates.num_candidates:
            return []
        if candidates.min_score > cfg.low_score:
            raise ValueError(
                f"the result's candidates go down to score {candidates.min_score}, the tracker's "
                f"low_score is {cfg.low_score}: set Predictor.candidate_score to at most low_score"
            )
        expanded = candidates.expanded()
        low = [
            o
            for o in segment_observations(expanded, intrinsics, cfg.nominal_depth)
            if o.rank >= candidates.num_selected and expanded.segments[o.index].score >= cfg.low_score
        ]
        pairs = self.associate(low, tracks, threshold=cfg.low_match_threshold, reuse_camera_motion=True)
        return [(tracks[ti], low[oj]) for ti, oj in pairs]


def relabel(result: PanopticDepthResult, new_ids: dict[int, int]) -> PanopticDepthResult:
    """`result` with segment `i` renamed to `new_ids[i]` (panoptic map and segment list)."""
    mapping = {result.segments[i].id: nid for i, nid in new_ids.items() if result.segments[i].id != nid}
    if not mapping:
        return result
    pan = result.panoptic
    size = int(max(int(pan.max()), max(mapping), max(mapping.values()))) + 1
    lut = torch.arange(size, dtype=pan.dtype, device=pan.device)
    lut[torch.tensor(list(mapping), dtype=torch.long, device=pan.device)] = torch.tensor(
        list(mapping.values()), dtype=pan.dtype, device=pan.device
    )
    panoptic = torch.where(pan >= 0, lut[pan.clamp(min=0)], pan)
    segments = [
        replace(s, id=new_ids[i], instance=new_ids[i] % LABEL_DIVISOR) if i in new_ids else s
        for i, s in enumerate(result.segments)
    ]
    return replace(result, panoptic=panoptic, segments=segments)


def track_sequence(
    results: Iterable[PanopticDepthResult],
    config: TrackerConfig | None = None,
    intrinsics: Intrinsics | None = None,
) -> list[PanopticDepthResult]:
    """Track one sequence's per-frame results (in frame order) with a fresh `Tracker`."""
    tracker = Tracker(config, intrinsics)
    return [tracker.update(r) for r in results]
