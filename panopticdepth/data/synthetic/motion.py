"""Moving street scenes: a camera that drives along the road and things that move with it.

A sequence is one `Scene` (so every object keeps its panoptic id) seen at times t = f * dt. The
ego vehicle drives along +Z in the middle lane; instead of moving the camera, `scene_at` moves the
world by -ego_speed * t, which the renderer (camera fixed at the origin) needs anyway. Each thing
moves by its role (`Scene.roles`):

* lane traffic (cars, trucks, buses, two-wheelers with their riders): one speed per lane, so queues
  keep their gaps; the own lane is never slower than the ego vehicle, neighbouring lanes are up to
  3 m/s slower or faster, so they overtake and fall back and occlude each other;
* parked cars stand still (they pass the camera and leave the view);
* pedestrians walk along the sidewalk or across the road at 1.0-1.6 m/s. Those crossing in the
  ego vehicle's path start ahead by the distance it drives in the sequence, so it never runs
  them over.

The default frame interval is Cityscapes-DVPS': every 5th frame of a 17 Hz video (0.29 s).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ...io.formats import LABEL_DIVISOR
from .scene import LANE_WIDTH, Scene

CITYSCAPES_FPS = 17.0
CITYSCAPES_FRAME_STEP = 5
EGO_SPEED = (5.0, 12.0)  # m/s, urban driving (18-43 km/h)
WALK_SPEED = (1.0, 1.6)  # m/s
NEAR_Z = 0.1  # boxes whose far end is closer than this (behind the camera) are not rendered


@dataclass
class Motion:
    """Speeds of one sequence: the ego vehicle's and each thing's (world frame, m/s)."""

    ego_speed: float
    velocity: dict[int, tuple[float, float]]  # panoptic id -> (vx, vz)
    offset: dict[int, tuple[float, float]]  # panoptic id -> (dx, dz) start shift


def frame_interval(frame_step: int = CITYSCAPES_FRAME_STEP, fps: float = CITYSCAPES_FPS) -> float:
    """Seconds between two frames of a sequence (annotated every `frame_step` frames at `fps`)."""
    if frame_step < 1 or fps <= 0:
        raise ValueError(f"frame_step must be >= 1 and fps > 0 (got {frame_step}, {fps})")
    return frame_step / fps


def sample_motion(
    scene: Scene, rng: np.random.Generator, duration: float, ego_speed: tuple[float, float] = EGO_SPEED
) -> Motion:
    """Draw the ego speed and every thing's velocity for a sequence lasting `duration` seconds."""
    ego = float(rng.uniform(*ego_speed))
    lanes = sorted({lane for kind, lane in scene.roles.values() if kind == "lane"})
    lane_speed = {}
    for lane in lanes:
        delta = rng.uniform(0.0, 1.5) if lane == 0 else rng.uniform(-3.0, 3.0)
        lane_speed[lane] = max(ego + float(delta), 0.0)
    velocity: dict[int, tuple[float, float]] = {}
    offset: dict[int, tuple[float, float]] = {}
    centre_x = _instance_centres(scene)
    for pid, (kind, lane) in sorted(scene.roles.items()):
        if kind == "lane":
            velocity[pid] = (0.0, lane_speed[lane])
        elif kind == "walk":
            velocity[pid] = (0.0, float(rng.choice([-1.0, 1.0]) * rng.uniform(*WALK_SPEED)))
        elif kind == "cross":
            velocity[pid] = (float(rng.choice([-1.0, 1.0]) * rng.uniform(*WALK_SPEED)), 0.0)
            if abs(centre_x.get(pid, 1e9)) < LANE_WIDTH / 2 + 1.0:
                offset[pid] = (0.0, ego * duration)
        else:
            velocity[pid] = (0.0, 0.0)
    return Motion(ego, velocity, offset)


def _instance_centres(scene: Scene) -> dict[int, float]:
    """Mean box centre X per thing instance."""
    out: dict[int, list[float]] = {}
    for pid, lo, hi in zip(scene.ids.tolist(), scene.lo[:, 0].tolist(), scene.hi[:, 0].tolist()):
        if pid % LABEL_DIVISOR:
            out.setdefault(pid, []).append(0.5 * (lo + hi))
    return {pid: float(np.mean(xs)) for pid, xs in out.items()}


def scene_at(scene: Scene, motion: Motion, t: float) -> Scene:
    """The scene at time `t` s, in the frame of the camera driven `ego_speed * t` metres along Z."""
    drive = motion.ego_speed * t
    shift = np.zeros((len(scene.ids), 3), np.float64)
    for i, pid in enumerate(scene.ids.tolist()):
        vx, vz = motion.velocity.get(pid, (0.0, 0.0))
        dx, dz = motion.offset.get(pid, (0.0, 0.0))
        shift[i] = (dx + vx * t, 0.0, dz + vz * t)
    shift[:, 2] -= drive
    lo = (scene.lo + shift).astype(np.float32)
    hi = (scene.hi + shift).astype(np.float32)
    keep = hi[:, 2] > NEAR_Z
    facades = [replace(f, z_edges=(f.z_edges - drive).astype(np.float32)) for f in scene.facades]
    return replace(
        scene,
        lo=lo[keep],
        hi=hi[keep],
        ids=scene.ids[keep],
        colors=scene.colors[keep],
        facades=facades,
        end_z=scene.end_z - drive,
        z_offset=scene.z_offset + drive,
    )
