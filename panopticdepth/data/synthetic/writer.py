"""Write synthetic frames in the Cityscapes-DPS layout (spec §8.3) with the index JSON."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from ...io.formats import write_depth, write_image_rgb, write_panoptic_ids
from ...utils.files import atomic_write_text
from ...utils.progress import progress
from .render import Rendered, render
from .scene import sample_scene

log = logging.getLogger(__name__)

FRAMES_PER_SEQUENCE = 6  # the DVPQ evaluator groups by the first '_' field, 6 frames each


def synth_prefix(index: int) -> str:
    """`SSSSSS_FFFFFF_synth_IIIIII`: sequence = index // 6 (the DVPQ sequence key), frame = index % 6."""
    seq, frame = divmod(index, FRAMES_PER_SEQUENCE)
    return f"{seq:06d}_{frame:06d}_synth_{index:06d}"


def generate(seed: int, index: int, height: int = 256, width: int = 512) -> Rendered:
    """Frame `index` of the dataset with `seed`: a pure function of (seed, index, size)."""
    rng = np.random.default_rng([int(seed), int(index)])
    scene = sample_scene(rng, height, width)
    return render(scene, rng)


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
    out: str | os.PathLike, split: str, num: int, height: int = 256, width: int = 512, seed: int = 0
) -> Path:
    """Write `num` frames to `out/video_sequence/{split}/` and the index JSON beside that folder."""
    folder = split_dir(out, split)
    folder.mkdir(parents=True, exist_ok=True)
    if num % FRAMES_PER_SEQUENCE:
        log.warning(
            "%d frames is not a multiple of %d: the last sequence is short (official DVPQ needs 6)",
            num, FRAMES_PER_SEQUENCE,
        )  # fmt: skip
    entries = []
    for i in progress(range(num), desc=f"synth {split}", unit="img"):
        entries.append(write_frame(folder, synth_prefix(i), generate(seed, i, height, width)))
    index = folder.parent / f"dvps_cityscapes_{split}.json"
    atomic_write_text(index, json.dumps(entries, indent=1) + "\n")
    return folder
