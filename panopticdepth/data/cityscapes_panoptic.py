"""Cityscapes panoptic reader (docs/original_implementation.md#cityscapes-panoptic):
`leftImg8bit/{split}/<city>/*_leftImg8bit.png` with
`gtFine/cityscapes_panoptic_{split}/*.png` + `gtFine/cityscapes_panoptic_{split}.json` (COCO panoptic,
as written by `cityscapesscripts/preparation/createPanopticImgs.py`).

Segment id = R + 256 G + 256² B; `category_id` is a Cityscapes label id, mapped to a train id with
`cityscapesscripts`' table. Non-crowd thing segments become instances 1, 2, ... per class; crowd
segments (`iscrowd = 1`) get instance 0: their pixels keep the thing class in the semantic map but
yield no instance. Labels with train id 255 and pixels of no listed segment become VOID. No depth.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..io.formats import LABEL_DIVISOR, VOID_ID, read_image_rgb, read_segment_rgb
from ..label_space import CITYSCAPES
from .base import FrameDataset, Problem, Record, SplitNotFound, check_same_size
from .classes import CITYSCAPES_ID_TO_TRAIN_ID


def _find_root(root: Path, split: str) -> Path:
    for cand in (root, root / "cityscapes"):
        if (cand / "gtFine" / f"cityscapes_panoptic_{split}.json").is_file():
            return cand
    raise SplitNotFound(
        f"{root}: no gtFine/cityscapes_panoptic_{split}.json (expected the Cityscapes panoptic layout "
        "written by the cityscapesScripts panoptic conversion)"
    )


def _read_json(path: Path) -> dict:
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: unreadable panoptic JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DataError(f"{path}: panoptic JSON needs an 'annotations' list (COCO panoptic format)")
    return data


def discover(root: str | os.PathLike, split: str) -> tuple[list[Record], list[Problem]]:
    base = _find_root(Path(root), split)
    json_path = base / "gtFine" / f"cityscapes_panoptic_{split}.json"
    data = _read_json(json_path)
    label_dir = base / "gtFine" / f"cityscapes_panoptic_{split}"
    images = {
        p.name[: -len("_leftImg8bit.png")]: p
        for p in (base / "leftImg8bit" / split).glob("*/*_leftImg8bit.png")
    }
    records, problems = [], []
    for i, ann in enumerate(data["annotations"]):
        image_id, file_name = ann.get("image_id"), ann.get("file_name")
        if (
            not isinstance(image_id, str)
            or not isinstance(file_name, str)
            or not isinstance(ann.get("segments_info"), list)
        ):
            problems.append(
                Problem(
                    str(json_path),
                    f"annotation {i}: needs string 'image_id', 'file_name' and a 'segments_info' list",
                )
            )
            continue
        label = label_dir / file_name
        if not label.is_file():
            problems.append(Problem(str(label), f"panoptic PNG of annotation '{image_id}' is missing"))
            continue
        if image_id not in images:
            problems.append(
                Problem(
                    str(label),
                    f"missing partner image '{image_id}_leftImg8bit.png' in leftImg8bit/{split}/*/",
                )
            )
            continue
        meta = {
            "image_path": str(images[image_id]),
            "segments_info": ann["segments_info"],
            "json": str(json_path),
        }
        records.append(Record(image_id, {"image": images[image_id], "panoptic": label}, meta))
    return records, problems


def segments_to_panoptic(
    segment_ids_hw: np.ndarray, segments_info: list[dict], path: Path | str
) -> np.ndarray:
    """COCO segment ids -> library ids (train_id*1000 + instance; crowd -> instance 0; VOID 32000)."""
    uniq, inverse = np.unique(segment_ids_hw, return_inverse=True)
    by_id = {}
    counters: dict[int, int] = {}
    for seg in segments_info:
        cat = int(seg.get("category_id", -1))
        if cat not in CITYSCAPES_ID_TO_TRAIN_ID:
            raise DataError(
                f"{path}: segment {seg.get('id')} has category id {cat}, not a Cityscapes label id"
            )
        train = CITYSCAPES_ID_TO_TRAIN_ID[cat]
        if train >= CITYSCAPES.num_classes:
            by_id[int(seg["id"])] = VOID_ID
        elif train >= CITYSCAPES.first_thing_id and not seg.get("iscrowd", 0):
            counters[train] = counters.get(train, 0) + 1
            if counters[train] >= LABEL_DIVISOR:
                raise DataError(f"{path}: more than {LABEL_DIVISOR - 1} instances of class {train}")
            by_id[int(seg["id"])] = train * LABEL_DIVISOR + counters[train]
        else:
            by_id[int(seg["id"])] = train * LABEL_DIVISOR
    lut = np.array([by_id.get(int(s), VOID_ID) for s in uniq], dtype=np.int64)
    return lut[inverse.reshape(segment_ids_hw.shape)]


def load_frame(record: Record) -> tuple[np.ndarray, np.ndarray, None, dict[str, Any]]:
    image = read_image_rgb(record.files["image"])
    seg = read_segment_rgb(record.files["panoptic"])
    check_same_size(image, seg, record.files["panoptic"], "panoptic label")
    panoptic = segments_to_panoptic(seg, record.meta["segments_info"], record.files["panoptic"])
    meta = {"image_path": record.meta["image_path"], "image_id": record.image_id}
    return image, panoptic, None, meta


class CityscapesPanopticDataset(FrameDataset):
    """Cityscapes panoptic frames (PS stages); `depth` is None."""

    crowd_instance_zero = True
    drop_thin = False  # the PS pipeline removes only empty instances (docs/augmentation.md)
    box_max_exclusive = True  # boxes (min, max + 1), as the Cityscapes panoptic JSON
    has_depth = False

    def load_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, Any]]:
        return load_frame(self.records[index])


__all__ = ["CityscapesPanopticDataset", "discover", "segments_to_panoptic"]
