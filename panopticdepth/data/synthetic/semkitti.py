"""Synthetic frames in the SemKITTI-DVPS layout: a KITTI-like camera and LiDAR-sparse labels.

The street scenes are the Cityscapes-DPS generator's (`scene.py`, same numbers drawn per
(seed, index)), seen by a level KITTI-like camera (`Camera.kitti_like`). SemKITTI-DVPS labels and
depth exist only where a LiDAR point projects into the image (docs/evaluation_protocol.md#semkitti),
so `lidar_mask` keeps the pixels that a 64-line scanner (HDL-64E-like, mounted slightly above the
camera) would hit: one elevation band about a pixel row thick per laser, random dropouts, no return
from the sky or beyond 80 m. Every other pixel is class 255, instance 0, depth 0; the image stays
dense. Files and encodings are the ones `data/semkitti_dps.py` reads.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...class_names import CITYSCAPES_CLASS_NAMES, SEMKITTI_CLASS_NAMES
from ...io.formats import LABEL_DIVISOR, VOID_ID, save_png, write_depth, write_image_rgb
from ...utils.files import atomic_write_text
from .camera import Camera
from .parallel import ordered_map
from .render import MAX_DEPTH, Rendered
from .writer import FRAMES_PER_SEQUENCE, generate, generate_sequence, split_dir

SEMKITTI_VOID = 255
KITTI_FPS = 10.0  # the KITTI scanner turns at 10 Hz; SemKITTI-DVPS labels every scan
KITTI_FRAME_STEP = 1

# Scene (Cityscapes) class -> SemKITTI-DVPS class; None = no label (void). Names as in class_names.py.
CITYSCAPES_TO_SEMKITTI_NAMES: dict[str, str | None] = {
    "road": "road",
    "sidewalk": "sidewalk",
    "building": "building",
    "wall": "building",  # no wall class; the scene's walls are low masonry along the facade rows
    "fence": "fence",
    "pole": "pole",
    "traffic light": "traffic-sign",  # no traffic-light class; a pole-mounted box, like the signs
    "traffic sign": "traffic-sign",
    "vegetation": "vegetation",  # except points on tree trunks: trunk (see _on_trunks)
    "terrain": "terrain",
    "sky": None,  # a LiDAR gets no return from the sky
    "person": "person",
    "rider": "bicyclist",  # motorcyclist when Scene.rides says the rider sits on a motorcycle
    "car": "car",
    "truck": "truck",
    "bus": "other-vehicle",  # no bus class
    "train": "other-vehicle",  # no train class (tram-like vehicles are other-vehicle)
    "motorcycle": "motorcycle",
    "bicycle": "bicycle",
}
NUM_THINGS = 8  # SemKITTI things are classes 0..7
# Instance offset of the second Cityscapes class that lands in the same SemKITTI thing class
# (bus and train -> other-vehicle), so their instances never share an id.
MERGED_INSTANCE_OFFSET = 500


def _class_tables() -> tuple[np.ndarray, np.ndarray]:
    """(Cityscapes train id -> SemKITTI class, -> instance offset), 256 entries (VOID 32000 // 1000 = 32)."""
    cls = np.full(256, SEMKITTI_VOID, np.int64)
    offset = np.zeros(256, np.int64)
    sources: dict[int, int] = {}
    for train_id, name in enumerate(CITYSCAPES_CLASS_NAMES):
        target = CITYSCAPES_TO_SEMKITTI_NAMES[name]
        if target is None:
            continue
        target_id = SEMKITTI_CLASS_NAMES.index(target)
        cls[train_id] = target_id
        if target_id < NUM_THINGS:
            offset[train_id] = MERGED_INSTANCE_OFFSET * sources.get(target_id, 0)
            sources[target_id] = sources.get(target_id, 0) + 1
    return cls, offset


CITYSCAPES_TO_SEMKITTI, INSTANCE_OFFSET = _class_tables()

# HDL-64E-like scanner: an upper block of 32 lasers from +2.0 to -8.33 deg and a lower block of 32
# from -8.83 to -24.8 deg; mounted 1.73 m above the road, 8 cm above the camera.
LASER_ELEVATIONS_DEG = np.concatenate([np.linspace(2.0, -8.33, 32), np.linspace(-8.83, -24.8, 32)])
LIDAR_HEIGHT_M = 1.73
LIDAR_MAX_RANGE = MAX_DEPTH  # metres; no return beyond
DROPOUT = 0.1  # fraction of points lost (dark or glancing surfaces, beam misses)


@dataclass
class SemKITTIFrame:
    image: np.ndarray  # (H, W, 3) uint8, dense
    semantic: np.ndarray  # (H, W) uint8 SemKITTI class 0..18, 255 = void / no LiDAR point
    instance: np.ndarray  # (H, W) uint16, >= 1 on thing points, 0 elsewhere
    depth: np.ndarray  # (H, W) float32 metres (multiples of 1/256), 0 = no LiDAR point
    focal: float  # px, the camera's (square-pixel) focal length
    rendered: Rendered  # the dense frame it was sampled from


def _rays(cam: Camera, v: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World (x, y, z) of the ray through pixel (u, v) whose camera-frame z is 1 (point = depth * ray)."""
    right, down, fwd = cam.axes()
    xc, yc = (u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy
    return tuple(right[i] * xc + down[i] * yc + fwd[i] for i in range(3))


def lidar_mask(cam: Camera, depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W) bool: pixels a 64-line scanner returns a point for (see the module docstring).

    A pixel holds laser k's point when the elevation of its surface point, seen from the scanner,
    lies within half a pixel row of laser k's elevation (half the angle the pixel's row spans).
    """
    kept = rng.random(depth.shape) >= DROPOUT  # one draw per pixel, whatever the scene holds
    v, u = np.nonzero(depth > 0)  # sky and points beyond 80 m camera depth return nothing
    v, u = v.astype(np.float64), u.astype(np.float64)
    z = depth[depth > 0].astype(np.float64)
    dx, dy, dz = _rays(cam, v, u)
    above = LIDAR_HEIGHT_M - cam.height_m
    px, py, pz = z * dx, z * dy - above, z * dz  # surface point relative to the scanner
    elev = np.arctan2(py, np.hypot(px, pz))
    top, bottom = _rays(cam, v - 0.5, u), _rays(cam, v + 0.5, u)
    half = 0.5 * np.abs(
        np.arctan2(top[1], np.hypot(top[0], top[2])) - np.arctan2(bottom[1], np.hypot(bottom[0], bottom[2]))
    )
    lasers = np.sort(np.deg2rad(LASER_ELEVATIONS_DEG))
    k = np.clip(np.searchsorted(lasers, elev), 1, len(lasers) - 1)
    gap = np.minimum(np.abs(elev - lasers[k - 1]), np.abs(lasers[k] - elev))
    hit = (gap <= half) & (np.sqrt(px**2 + py**2 + pz**2) <= LIDAR_MAX_RANGE)
    mask = np.zeros(depth.shape, bool)
    mask[depth > 0] = hit
    return mask & kept


def to_semkitti(frame: Rendered, rng: np.random.Generator) -> SemKITTIFrame:
    """Sparse SemKITTI-DVPS labels and depth of a dense rendered frame; `rng` draws the dropouts."""
    cam = frame.scene.camera
    hit = lidar_mask(cam, frame.depth, rng)
    train = frame.panoptic // LABEL_DIVISOR
    cls = CITYSCAPES_TO_SEMKITTI[np.minimum(train, 255)]
    moto = [pid for pid, vehicle in frame.scene.rides.items()
            if CITYSCAPES_CLASS_NAMES[vehicle] == "motorcycle"]  # fmt: skip
    if moto:
        cls = np.where(np.isin(frame.panoptic, moto), SEMKITTI_CLASS_NAMES.index("motorcyclist"), cls)
    hit &= (cls != SEMKITTI_VOID) & (frame.panoptic != VOID_ID)
    cls = np.where(hit, cls, SEMKITTI_VOID)
    trunk = _on_trunks(frame, cls == SEMKITTI_CLASS_NAMES.index("vegetation"))
    cls[trunk] = SEMKITTI_CLASS_NAMES.index("trunk")
    thing = cls < NUM_THINGS
    if (frame.panoptic[thing] % LABEL_DIVISOR >= MERGED_INSTANCE_OFFSET).any():
        raise ValueError(f"more than {MERGED_INSTANCE_OFFSET - 1} instances of one class: ids would collide")
    inst = np.where(thing, frame.panoptic % LABEL_DIVISOR + INSTANCE_OFFSET[np.minimum(train, 255)], 0)
    depth = np.where(hit, frame.depth, 0.0).astype(np.float32)
    return SemKITTIFrame(
        frame.image, cls.astype(np.uint8), inst.astype(np.uint16), depth, float(cam.fx), frame
    )


def _on_trunks(frame: Rendered, where: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels of `where` whose surface point lies on a tree trunk.

    The scene gives trunk and crown one vegetation id; trunks are the vegetation boxes standing on
    the ground (crowns start above it), so a point is on a trunk when it is inside one of them.
    """
    scene, out = frame.scene, np.zeros(where.shape, bool)
    trunk = (scene.ids == CITYSCAPES_CLASS_NAMES.index("vegetation") * LABEL_DIVISOR) & (scene.lo[:, 1] <= 0)
    v, u = np.nonzero(where)
    if not trunk.any() or not len(v):
        return out
    cam = scene.camera
    z = frame.depth[v, u].astype(np.float64)
    point = np.stack(_rays(cam, v.astype(np.float64), u.astype(np.float64)), -1) * z[:, None] + cam.origin
    tol = 0.01 + 1.0 / 256  # metres: depth is quantised to 1/256 m
    lo, hi = scene.lo[trunk] - tol, scene.hi[trunk] + tol
    inside = ((point[:, None] >= lo[None]) & (point[:, None] <= hi[None])).all(-1).any(-1)
    out[v[inside], u[inside]] = True
    return out


_LIDAR_STREAM = 6402  # keeps the dropout draws apart from the scene's and the sequences' streams


def generate_semkitti(seed: int, index: int, height: int = 376, width: int = 1241) -> SemKITTIFrame:
    """Frame `index` of the SemKITTI-DVPS-like dataset with `seed`: a pure function of the arguments."""
    dense = generate(seed, index, height, width, camera="kitti")
    return to_semkitti(dense, np.random.default_rng([int(seed), int(index), _LIDAR_STREAM]))


def generate_semkitti_sequence(
    seed: int,
    sequence: int,
    length: int = FRAMES_PER_SEQUENCE,
    height: int = 376,
    width: int = 1241,
    frame_step: int = KITTI_FRAME_STEP,
    fps: float = KITTI_FPS,
) -> list[SemKITTIFrame]:
    """Moving sequence `sequence` (`writer.generate_sequence` with the KITTI camera); ids kept."""
    frames = generate_sequence(seed, sequence, length, height, width, frame_step, fps, camera="kitti")
    return [
        to_semkitti(f, np.random.default_rng([int(seed), int(sequence), _LIDAR_STREAM, i]))
        for i, f in enumerate(frames)
    ]


def semkitti_prefix(sequence: int, frame: int) -> str:
    """`SSSSSS_FFFFFF` as the release names frames (the DVPQ sequence key is the first field)."""
    return f"{sequence:06d}_{frame:06d}"


def focal_text(focal: float) -> str:
    """Focal as the depth file names write it, e.g. 718.856 -> '718.856' (read back exactly)."""
    return repr(float(focal))


def write_semkitti_frame(folder: Path, prefix: str, frame: SemKITTIFrame) -> dict:
    """Write one frame's four PNGs; returns its index-JSON entry (basenames)."""
    names = {
        "image": f"{prefix}_leftImg8bit.png",
        "class": f"{prefix}_gtFine_class.png",
        "instance": f"{prefix}_gtFine_instance.png",
        "depth": f"{prefix}_depth_{focal_text(frame.focal)}.png",
    }
    write_image_rgb(folder / names["image"], frame.image, compress_level=1)
    save_png(frame.semantic, folder / names["class"], compress_level=1)
    save_png(frame.instance, folder / names["instance"], compress_level=1)
    write_depth(folder / names["depth"], frame.depth, compress_level=1)
    return names


def _write_index(folder: Path, split: str, entries: list[dict]) -> None:
    atomic_write_text(folder.parent / f"dvps_semkitti_{split}.json", json.dumps(entries, indent=1) + "\n")


def write_semkitti_dataset(
    out: str | os.PathLike,
    split: str,
    num: int,
    height: int = 376,
    width: int = 1241,
    seed: int = 0,
    workers: int = 1,
) -> Path:
    """Write `num` independent frames to `out/video_sequence/{split}/`, 6 per sequence key as the
    Cityscapes-DPS writer groups them, and the index JSON beside that folder (`workers` processes)."""
    folder = split_dir(out, split)
    folder.mkdir(parents=True, exist_ok=True)
    job = functools.partial(_write_semkitti_scene, folder, seed, height, width)
    entries = ordered_map(job, range(num), workers, desc=f"synth {split} (semkitti)", unit="img")
    _write_index(folder, split, entries)
    return folder


def _write_semkitti_scene(folder: Path, seed: int, height: int, width: int, index: int) -> dict:
    prefix = semkitti_prefix(*divmod(index, FRAMES_PER_SEQUENCE))
    return write_semkitti_frame(folder, prefix, generate_semkitti(seed, index, height, width))


def write_semkitti_sequences(
    out: str | os.PathLike,
    split: str,
    num_sequences: int,
    length: int = FRAMES_PER_SEQUENCE,
    height: int = 376,
    width: int = 1241,
    seed: int = 0,
    frame_step: int = KITTI_FRAME_STEP,
    fps: float = KITTI_FPS,
    workers: int = 1,
) -> Path:
    """Write moving sequences; file frame numbers are video frame numbers (frame * frame_step)."""
    folder = split_dir(out, split)
    folder.mkdir(parents=True, exist_ok=True)
    job = functools.partial(_write_semkitti_sequence, folder, seed, length, height, width, frame_step, fps)
    desc = f"synth {split} sequences (semkitti)"
    per_sequence = ordered_map(job, range(num_sequences), workers, desc=desc, unit="seq")
    _write_index(folder, split, [entry for sequence in per_sequence for entry in sequence])
    return folder


def _write_semkitti_sequence(
    folder: Path, seed: int, length: int, height: int, width: int, frame_step: int, fps: float, sequence: int
) -> list[dict]:
    frames = generate_semkitti_sequence(seed, sequence, length, height, width, frame_step, fps)
    return [
        write_semkitti_frame(folder, semkitti_prefix(sequence, f * frame_step), fr)
        for f, fr in enumerate(frames)
    ]
