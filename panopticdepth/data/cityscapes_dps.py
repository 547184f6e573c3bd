"""Cityscapes-DVPS reader (docs/original_implementation.md#cityscapes-dvps).

Layout: `video_sequence/{split}/<prefix>_{leftImg8bit,gtFine_instanceTrainIds,depth}.png`.

With the index JSON `video_sequence/dvps_cityscapes_{split}.json` the frame list comes from it, but
every entry's three files must share one prefix (the original zipped three independently sorted
lists and checked only the first triple). Without it, files are paired by prefix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..io.formats import read_depth, read_image_rgb, read_panoptic_ids
from ..label_space import CITYSCAPES, LabelSpace
from .base import (
    FrameDataset,
    Problem,
    Record,
    check_panoptic_ids,
    check_same_size,
    find_split_dir,
    pair_by_prefix,
    read_index_json,
    sequence_fields,
)

LAYOUTS = ["dvps/cityscapes-dvps/video_sequence", "cityscapes-dvps/video_sequence", "video_sequence"]
SUFFIXES = {"image": "_leftImg8bit.png", "panoptic": "_gtFine_instanceTrainIds.png", "depth": "_depth.png"}
INDEX_KEYS = {"image": "image", "panoptic": "seg", "depth": "depth"}


def index_json_path(split_dir: Path, split: str) -> Path:
    return split_dir.parent / f"dvps_cityscapes_{split}.json"


def _records_from_index(split_dir: Path, index: Path) -> tuple[list[Record], list[Problem]]:
    records, problems = [], []
    for i, entry in enumerate(read_index_json(index)):
        files: dict[str, Path] = {}
        prefixes = set()
        for role, key in INDEX_KEYS.items():
            name = entry.get(key)
            if not isinstance(name, str) or not name.endswith(SUFFIXES[role]):
                problems.append(
                    Problem(str(index), f"entry {i}: '{key}' must name a '*{SUFFIXES[role]}' file")
                )
                continue
            files[role] = split_dir / name
            prefixes.add(name[: -len(SUFFIXES[role])])
        if len(files) < len(INDEX_KEYS):
            continue
        if len(prefixes) != 1:
            problems.append(
                Problem(str(index), f"entry {i}: files do not share one prefix: {sorted(prefixes)}")
            )
            continue
        missing = [p for p in files.values() if not p.is_file()]
        for p in missing:
            problems.append(Problem(str(p), f"listed in {index.name} (entry {i}) but missing"))
        if missing:
            continue
        prefix = prefixes.pop()
        meta: dict[str, Any] = {"image_path": str(files["image"]), **sequence_fields(prefix)}
        if "height" in entry and "width" in entry:
            meta["expected_size"] = (int(entry["height"]), int(entry["width"]))
        records.append(Record(prefix, files, meta))
    return records, problems


def discover(
    root: str | os.PathLike, split: str, use_index: bool = True
) -> tuple[list[Record], list[Problem]]:
    """Frames of one split and the problems found while pairing files (missing partners, bad index)."""
    split_dir = find_split_dir(root, split, LAYOUTS, "*" + SUFFIXES["image"])
    index = index_json_path(split_dir, split)
    if use_index and index.is_file():
        return _records_from_index(split_dir, index)
    return pair_by_prefix(split_dir, SUFFIXES, anchor="image")


def load_frame(
    record: Record, label_space: LabelSpace = CITYSCAPES
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Read and validate one frame; raises DataError naming the file."""
    image = read_image_rgb(record.files["image"])
    expected = record.meta.get("expected_size")
    if expected is not None and tuple(image.shape[:2]) != tuple(expected):
        raise DataError(
            f"{record.files['image']}: image is {image.shape[1]}x{image.shape[0]} but the index JSON says "
            f"{expected[1]}x{expected[0]}"
        )
    panoptic = read_panoptic_ids(record.files["panoptic"]).astype(np.int64)
    check_same_size(image, panoptic, record.files["panoptic"], "panoptic label")
    check_panoptic_ids(panoptic, record.files["panoptic"], label_space)
    depth = read_depth(record.files["depth"])
    check_same_size(image, depth, record.files["depth"], "depth map")
    meta = {k: v for k, v in record.meta.items() if k != "expected_size"}
    meta["image_id"] = record.image_id
    return image, panoptic, depth, meta


class CityscapesDPSDataset(FrameDataset):
    """Cityscapes-DVPS frames (also what `panopticdepth synth` writes)."""

    def load_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, Any]]:
        return load_frame(self.records[index], self.label_space)
