"""COCO-panoptic prediction files, the input of cityscapesscripts' panoptic evaluation.

Layout written by `predict --format coco-panoptic` (and read by `evaluate --dataset
cityscapes-panoptic --pred <dir>/panoptic.json`):

* `<dir>/panoptic/<image_id>.png`: RGB, segment id = R + 256 G + 256^2 B, 0 = VOID;
* `<dir>/panoptic.json`: `{"annotations": [{"image_id", "file_name", "segments_info": [{"id",
  "category_id", "iscrowd", "area", "bbox"}]}], "categories": [...]}`.

Category ids are the data set's: Cityscapes label ids (road 7 ... bicycle 33), not train ids.
`image_id` is the input's file stem without a trailing `_leftImg8bit`, which is the image id of
Cityscapes' panoptic ground-truth JSON. Segment ids are 1..N per image in ascending library id
(train id * 1000 + instance); pixels with a negative id or a class outside the label space are VOID.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.files import atomic_write_text
from .formats import LABEL_DIVISOR, write_segment_rgb

CITYSCAPES_IMAGE_SUFFIX = "_leftImg8bit"


def cityscapes_categories() -> list[dict[str, Any]]:
    """The 19 evaluated Cityscapes classes in train-id order, with their label ids as COCO ids."""
    from cityscapesscripts.helpers.labels import labels

    evaluated = sorted((lab for lab in labels if 0 <= lab.trainId < 255), key=lambda lab: lab.trainId)
    return [
        {"id": lab.id, "name": lab.name, "isthing": int(lab.hasInstances), "color": list(lab.color)}
        for lab in evaluated
    ]


def image_id_from_stem(stem: str) -> str:
    """`frankfurt_000000_000294_leftImg8bit` -> `frankfurt_000000_000294`; other stems unchanged."""
    return stem[: -len(CITYSCAPES_IMAGE_SUFFIX)] if stem.endswith(CITYSCAPES_IMAGE_SUFFIX) else stem


def panoptic_to_coco(
    panoptic_hw: np.ndarray, category_ids: Sequence[int]
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Library ids (train id * 1000 + instance) -> (segment ids (H, W) int64, 0 = VOID, segments_info).

    `category_ids[t]` is the COCO category of train id t; other classes and negative ids are VOID.
    Boxes are [x, y, width, height] with width = max x - min x + 1, as Cityscapes' panoptic JSON.
    """
    pan = np.asarray(panoptic_hw, dtype=np.int64)
    cls = np.where(pan >= 0, pan // LABEL_DIVISOR, -1)
    valid = (cls >= 0) & (cls < len(category_ids))
    values, inverse = np.unique(np.where(valid, pan, -1), return_inverse=True)
    inverse = inverse.reshape(pan.shape)
    seg_of_value = np.zeros(values.size, np.int64)
    segments = []
    for k, value in enumerate(values.tolist()):
        if value < 0:
            continue
        seg_id = len(segments) + 1
        seg_of_value[k] = seg_id
        ys, xs = np.nonzero(inverse == k)
        x0, y0 = int(xs.min()), int(ys.min())
        segments.append(
            {
                "id": seg_id,
                "category_id": int(category_ids[value // LABEL_DIVISOR]),
                "iscrowd": 0,
                "area": int(xs.size),
                "bbox": [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1],
            }
        )
    return seg_of_value[inverse], segments


class CocoPanopticWriter:
    """Collects per-image PNGs under `<out_dir>/panoptic/` and writes `<out_dir>/panoptic.json`."""

    def __init__(self, out_dir: str | os.PathLike, categories: list[dict[str, Any]] | None = None):
        self.out_dir = Path(out_dir)
        self.png_dir = self.out_dir / "panoptic"
        self.json_path = self.out_dir / "panoptic.json"
        self.categories = cityscapes_categories() if categories is None else categories
        self.category_ids = [c["id"] for c in self.categories]
        self.annotations: list[dict[str, Any]] = []

    def add(self, stem: str, panoptic_hw: np.ndarray) -> dict[str, Any]:
        """Write the PNG of one image and keep its annotation; returns the annotation."""
        image_id = image_id_from_stem(stem)
        seg, segments = panoptic_to_coco(panoptic_hw, self.category_ids)
        file_name = f"{image_id}.png"
        write_segment_rgb(self.png_dir / file_name, seg)
        ann = {"image_id": image_id, "file_name": file_name, "segments_info": segments}
        self.annotations.append(ann)
        return ann

    def close(self) -> Path:
        """Write the JSON (atomically) and return its path."""
        doc = {"annotations": self.annotations, "categories": self.categories}
        atomic_write_text(self.json_path, json.dumps(doc) + "\n")
        return self.json_path


__all__ = [
    "CocoPanopticWriter",
    "cityscapes_categories",
    "image_id_from_stem",
    "panoptic_to_coco",
]
