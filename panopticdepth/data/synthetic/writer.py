"""Write synthetic frames in the Cityscapes-DPS layout with the index JSON.

`write_dataset` writes independent scenes (image training); `write_sequences` writes moving
sequences (`motion.py`) whose ground-truth instance ids are kept across the frames of a sequence.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from pathlib import Path

import numpy as np

from ...io.formats import write_depth, write_image_rgb, write_panoptic_ids
from ...io.inputs import STILL_FRAMES_CITY
from ...utils.files import atomic_write_text
from .depth_noise import apply_depth_noise
from .motion import CITYSCAPES_FPS, CITYSCAPES_FRAME_STEP, frame_interval, sample_motion, scene_at
from .parallel import ordered_map
from .render import Rendered, render
from .scene import sample_scene

log = logging.getLogger(__name__)

FRAMES_PER_SEQUENCE = 6  # the DVPQ evaluator groups by the first '_' field, 6 frames each


def synth_prefix(index: int) -> str:
    """`SSSSSS_FFFFFF_synth_IIIIII`: sequence = index // 6 (the DVPQ sequence key), frame = index % 6."""
    seq, frame = divmod(index, FRAMES_PER_SEQUENCE)
    return f"{seq:06d}_{frame:06d}_{STILL_FRAMES_CITY}_{index:06d}"


def generate(
    seed: int,
    index: int,
    height: int = 256,
    width: int = 512,
    camera: str = "cityscapes",
    *,
    depth_noise: str | None = None,
) -> Rendered:
    """Frame `index` of the dataset with `seed`: a pure function of (seed, index, size, camera, noise).

    `depth_noise="stereo"` replaces the exact depth by stereo-like ground truth (`depth_noise.py`),
    drawn from a stream of its own: image and labels stay those of the clean frame.
    """
    rng = np.random.default_rng([int(seed), int(index)])
    scene = sample_scene(rng, height, width, camera)
    frame = render(scene, rng)
    if depth_noise is None or depth_noise == "none":
        return frame
    key = [int(seed), int(index), _DEPTH_NOISE_STREAM]
    noisy = apply_depth_noise(frame.depth, frame.panoptic, scene.camera.fx, depth_noise, key)
    return dataclasses.replace(frame, depth=noisy)


_DEPTH_NOISE_STREAM = 2718  # keeps the depth noise apart from the scene's [seed, index] stream


def sequence_prefix(sequence: int, frame: int, frame_step: int = CITYSCAPES_FRAME_STEP) -> str:
    """`SSSSSS_FFFFFF_synthmove_SSSSSS_VVVVVV` like Cityscapes-DVPS' names (V = video frame number)."""
    return f"{sequence:06d}_{frame:06d}_synthmove_{sequence:06d}_{frame * frame_step:06d}"


def generate_sequence(
    seed: int,
    sequence: int,
    length: int = FRAMES_PER_SEQUENCE,
    height: int = 256,
    width: int = 512,
    frame_step: int = CITYSCAPES_FRAME_STEP,
    fps: float = CITYSCAPES_FPS,
    camera: str = "cityscapes",
) -> list[Rendered]:
    """Frames of moving sequence `sequence`: a pure function of the arguments.

    One scene per sequence (ids stay), one texture-noise draw per frame. The streams differ from
    `generate`'s, so sequence 0 is not image 0.
    """
    if length < 1:
        raise ValueError(f"a sequence needs at least one frame (got {length})")
    dt = frame_interval(frame_step, fps)
    rng = np.random.default_rng([int(seed), int(sequence), _SEQUENCE_STREAM])
    scene = sample_scene(rng, height, width, camera)
    motion = sample_motion(scene, rng, duration=dt * (length - 1))
    frames = []
    for f in range(length):
        noise = np.random.default_rng([int(seed), int(sequence), _SEQUENCE_STREAM, f])
        frames.append(render(scene_at(scene, motion, f * dt), noise))
    return frames


_SEQUENCE_STREAM = 1729  # keeps the sequences' random streams apart from the images' [seed, index]


def split_dir(out: str | os.PathLike, split: str) -> Path:
    return Path(out) / "video_sequence" / split


def write_frame(folder: Path, prefix: str, frame: Rendered) -> dict:
    # Fast zlib level: the noisy images compress no better at PIL's default and take 3x longer.
    write_image_rgb(folder / f"{prefix}_leftImg8bit.png", frame.image, compress_level=1)
    write_panoptic_ids(folder / f"{prefix}_gtFine_instanceTrainIds.png", frame.panoptic, compress_level=1)
    write_depth(folder / f"{prefix}_depth.png", frame.depth, compress_level=1)
    h, w = frame.panoptic.shape
    return {"height": int(h), "width": int(w), "image": f"{prefix}_leftImg8bit.png",
            "depth": f"{prefix}_depth.png", "seg": f"{prefix}_gtFine_instanceTrainIds.png"}  # fmt: skip


def write_dataset(
    out: str | os.PathLike,
    split: str,
    num: int,
    height: int = 256,
    width: int = 512,
    seed: int = 0,
    depth_noise: str | None = None,
    workers: int = 1,
) -> Path:
    """Write `num` frames to `out/video_sequence/{split}/` and the index JSON beside that folder;
    `depth_noise` as in `generate`. `workers` > 1 renders in that many processes (the same files:
    a frame is a pure function of (seed, index))."""
    folder = split_dir(out, split)
    folder.mkdir(parents=True, exist_ok=True)
    if num % FRAMES_PER_SEQUENCE:
        log.warning(
            "%d frames is not a multiple of %d: the last sequence is short (official DVPQ needs 6)",
            num, FRAMES_PER_SEQUENCE,
        )  # fmt: skip
    job = functools.partial(_write_scene, folder, seed, height, width, depth_noise)
    entries = ordered_map(job, range(num), workers, desc=f"synth {split}", unit="img")
    index = folder.parent / f"dvps_cityscapes_{split}.json"
    atomic_write_text(index, json.dumps(entries, indent=1) + "\n")
    return folder


def _write_scene(
    folder: Path, seed: int, height: int, width: int, depth_noise: str | None, index: int
) -> dict:
    frame = generate(seed, index, height, width, depth_noise=depth_noise)
    return write_frame(folder, synth_prefix(index), frame)


def write_sequences(
    out: str | os.PathLike,
    split: str,
    num_sequences: int,
    length: int = FRAMES_PER_SEQUENCE,
    height: int = 256,
    width: int = 512,
    seed: int = 0,
    frame_step: int = CITYSCAPES_FRAME_STEP,
    fps: float = CITYSCAPES_FPS,
    workers: int = 1,
) -> Path:
    """Write `num_sequences` moving sequences of `length` frames like `write_dataset` does frames
    (`workers` processes, one sequence at a time each)."""
    folder = split_dir(out, split)
    folder.mkdir(parents=True, exist_ok=True)
    job = functools.partial(_write_sequence, folder, seed, length, height, width, frame_step, fps)
    per_sequence = ordered_map(
        job, range(num_sequences), workers, desc=f"synth {split} sequences", unit="seq"
    )
    entries = [entry for sequence in per_sequence for entry in sequence]
    index = folder.parent / f"dvps_cityscapes_{split}.json"
    atomic_write_text(index, json.dumps(entries, indent=1) + "\n")
    return folder


def _write_sequence(
    folder: Path, seed: int, length: int, height: int, width: int, frame_step: int, fps: float, sequence: int
) -> list[dict]:
    frames = generate_sequence(seed, sequence, length, height, width, frame_step, fps)
    return [
        write_frame(folder, sequence_prefix(sequence, f, frame_step), frame) for f, frame in enumerate(frames)
    ]
