"""SemKITTI-DVPS reader (ViP-DeepLab release; docs/evaluation_protocol.md#semkitti).

Per frame in `video_sequence/{split}/`: `<prefix>_leftImg8bit.png`, `<prefix>_gtFine_class.png`
(8-bit SemKITTI class 0..18, 255 = void), `<prefix>_gtFine_instance.png` (16-bit instance id,
0 for stuff/void) and `<prefix>_depth_<focal>.png` (16-bit metres*256, 0 = no LiDAR point).
Classes are mapped to the train ids of the SemKITTI label space (`label_space.SEMKITTI`); labels are
sparse (LiDAR points projected into the image), so most pixels are void and ignored by training.
An optional index JSON `video_sequence/dvps_semkitti_{split}.json` lists objects with the keys
`image`, `class`, `instance`, `depth` (basenames).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..io.formats import IGNORE_LABEL, LABEL_DIVISOR, VOID_ID, read_depth, read_image_rgb, read_label_png
from ..label_space import SEMKITTI, LabelSpace, LabelSpaceError
from .base import (
    FrameDataset,
    Problem,
    Record,
    check_same_size,
    find_split_dir,
    pair_by_prefix,
    read_index_json,
    sequence_fields,
)

LAYOUTS = ["semkitti-dvps/video_sequence", "video_sequence"]
SUFFIXES = {
    "image": "_leftImg8bit.png",
    "class": "_gtFine_class.png",
    "instance": "_gtFine_instance.png",
    "depth": "_depth_*.png",
}


def _focal(depth_path: Path) -> float | None:
    try:
        return float(depth_path.name.rsplit("_depth_", 1)[1][: -len(".png")])
    except (IndexError, ValueError):
        return None


def discover(
    root: str | os.PathLike, split: str, use_index: bool = True
) -> tuple[list[Record], list[Problem]]:
    split_dir = find_split_dir(root, split, LAYOUTS, "*" + SUFFIXES["class"])
    index = split_dir.parent / f"dvps_semkitti_{split}.json"
    if use_index and index.is_file():
        records, problems = [], []
        for i, entry in enumerate(read_index_json(index)):
            try:
                files = {role: split_dir / str(entry[role]) for role in SUFFIXES}
            except KeyError as err:
                problems.append(Problem(str(index), f"entry {i}: missing key {err}"))
                continue
            prefix = files["class"].name[: -len(SUFFIXES["class"])]
            odd = [p.name for p in files.values() if not p.name.startswith(prefix + "_")]
            missing = [p for p in files.values() if not p.is_file()]
            if odd:
                problems.append(
                    Problem(str(index), f"entry {i}: files do not share the prefix '{prefix}': {odd}")
                )
            for p in missing:
                problems.append(Problem(str(p), f"listed in {index.name} (entry {i}) but missing"))
            if not odd and not missing:
                records.append(
                    Record(prefix, files, {"image_path": str(files["image"]), **sequence_fields(prefix)})
                )
    else:
        records, problems = pair_by_prefix(split_dir, SUFFIXES, anchor="class")
    for rec in records:
        focal = _focal(rec.files["depth"])
        if focal is not None:
            rec.meta["focal"] = focal
    return records, problems


def semkitti_panoptic(
    cls_hw: np.ndarray, inst_hw: np.ndarray, path: Path | str, label_space: LabelSpace = SEMKITTI
) -> np.ndarray:
    """SemKITTI class/instance maps -> internal panoptic ids (train_id*1000 + instance, VOID_ID)."""
    try:
        train = label_space.to_train_ids(cls_hw, str(path))
    except LabelSpaceError as err:
        raise DataError(f"{err}; SemKITTI-DVPS class maps hold 0..18 and 255 = void") from None
    thing = (train >= label_space.first_thing_id) & (train < label_space.num_classes)
    inst = np.where(thing, inst_hw, 0).astype(np.int64)
    if inst.max(initial=0) >= LABEL_DIVISOR:  # renumber 1..n (the label id keeps only 3 digits)
        uniq, inv = np.unique(inst, return_inverse=True)
        if len(uniq) > LABEL_DIVISOR:
            raise DataError(f"{path}: more than {LABEL_DIVISOR - 1} instances in one frame")
        ranks = np.arange(len(uniq)) + (0 if uniq[0] == 0 else 1)
        inst = ranks[inv.reshape(inst.shape)]
    return np.where(train == IGNORE_LABEL, VOID_ID, train * LABEL_DIVISOR + inst)


def load_frame(
    record: Record, label_space: LabelSpace = SEMKITTI
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    image = read_image_rgb(record.files["image"])
    cls = read_label_png(record.files["class"], "class map", bits=8)
    check_same_size(image, cls, record.files["class"], "class map")
    inst = read_label_png(record.files["instance"], "instance map", bits=None)
    check_same_size(image, inst, record.files["instance"], "instance map")
    panoptic = semkitti_panoptic(cls, inst, record.files["class"], label_space)
    depth = read_depth(record.files["depth"])
    check_same_size(image, depth, record.files["depth"], "depth map")
    return image, panoptic, depth, {**record.meta, "image_id": record.image_id}


class SemKITTIDPSDataset(FrameDataset):
    """SemKITTI-DVPS frames; thing pixels with instance 0 are not instances; sparse masks are kept
    even when one scan row thin (no thin-box filter)."""

    crowd_instance_zero = True
    drop_thin = False
    default_label_space = SEMKITTI

    def load_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, Any]]:
        return load_frame(self.records[index], self.label_space)
