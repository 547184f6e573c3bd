"""SemKITTI-DVPS file encodings (ViP-DeepLab release; docs/evaluation_protocol.md#semkitti).

* GT class  `SSSSSS_FFFFFF_gtFine_class.png`: 8-bit class 0..18, 255 = void / unlabelled.
* GT instance `SSSSSS_FFFFFF_gtFine_instance.png`: instance id (0 for stuff and void).
* GT depth `SSSSSS_FFFFFF_depth_<focal>.png`: 16-bit metres * 256, 0 = no LiDAR point.
* Prediction `<stem>_cat.png` (class) and `<stem>_ins.png` (instance), depth `<stem>_depth.png`.
The official evaluator combines class and instance as `class * 2^20 + instance` (int32).
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import DataError
from ..label_space import LabelSpace
from .formats import read_label_png, save_png

SEMKITTI_LABEL_DIVISOR = 2**20
SEMKITTI_VOID = 255


def read_semkitti_panoptic(class_path: str | os.PathLike, instance_path: str | os.PathLike) -> np.ndarray:
    """(H, W) int32 ids = class * 2^20 + instance, as the ViP-DeepLab SemKITTI evaluator builds them."""
    cls = read_label_png(class_path, "class map", bits=None).astype(np.int32)
    ins = read_label_png(instance_path, "instance map", bits=None).astype(np.int32)
    if cls.shape != ins.shape:
        raise DataError(f"{instance_path}: size {ins.shape} differs from {class_path} {cls.shape}")
    if ins.min(initial=0) < 0 or ins.max(initial=0) >= SEMKITTI_LABEL_DIVISOR:
        raise DataError(f"{instance_path}: instance ids must be in 0..{SEMKITTI_LABEL_DIVISOR - 1}")
    return cls * SEMKITTI_LABEL_DIVISOR + ins


def write_semkitti_panoptic(
    class_path: str | os.PathLike, instance_path: str | os.PathLike, ids: np.ndarray
) -> None:
    """Inverse of `read_semkitti_panoptic` (class 8-bit, instance 16-bit)."""
    ids = np.asarray(ids, dtype=np.int64)
    cls, ins = ids // SEMKITTI_LABEL_DIVISOR, ids % SEMKITTI_LABEL_DIVISOR
    if cls.min(initial=0) < 0 or cls.max(initial=0) > 255 or ins.max(initial=0) > 65535:
        raise ValueError("SemKITTI ids need class 0..255 and instance 0..65535")
    save_png(cls.astype(np.uint8), class_path)
    save_png(ins.astype(np.uint16), instance_path)


def write_semkitti_prediction(
    out_dir: str | os.PathLike, stem: str, panoptic_hw: np.ndarray, space: LabelSpace
) -> None:
    """Model output (internal ids) -> `<stem>_cat.png` / `<stem>_ins.png` in the SemKITTI-DVPS
    prediction format. Unassigned pixels get category N (= 19 for SemKITTI), which the evaluator
    accepts and never matches (docs/evaluation_protocol.md#encodings); `_leftImg8bit` is dropped from
    the stem so that the names pair with the ground truth's."""
    from pathlib import Path

    stem = stem.removesuffix("_leftImg8bit")
    ids = space.panoptic_to_dataset(panoptic_hw, SEMKITTI_LABEL_DIVISOR, void_class=space.num_classes)
    out = Path(out_dir)
    write_semkitti_panoptic(out / f"{stem}_cat.png", out / f"{stem}_ins.png", ids)
