"""Build the Sample dict from decoded arrays (image, panoptic ids, depth).

Instances are derived from the panoptic id map *after* augmentation, so masks, classes and the
semantic map always agree with the transformed image.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..io.formats import IGNORE_LABEL, LABEL_DIVISOR, VOID_ID
from ..label_space import CITYSCAPES, LabelSpace


def semantic_from_panoptic(panoptic_hw: np.ndarray, num_classes: int = CITYSCAPES.num_classes) -> np.ndarray:
    """Train id per pixel; classes outside 0..num_classes-1 (VOID included) -> 255 (ignored)."""
    sem = panoptic_hw // LABEL_DIVISOR
    return np.where((sem >= 0) & (sem < num_classes), sem, IGNORE_LABEL).astype(np.int64)


def boxes_from_masks(masks_nhw: torch.Tensor, max_exclusive: bool = False) -> torch.Tensor:
    """(N, H, W) bool -> (N, 4) float32 boxes (x0, y0, x1, y1), on the masks' device.

    Inclusive maxima (min x, min y, max x, max y) by default, the rule of the original's
    depth-aware pipeline and of the training targets (docs/augmentation.md); `max_exclusive`:
    (min x, min y, max x + 1, max y + 1), the rule of its panoptic-segmentation pipeline, where a
    one-pixel-wide instance has width 1. Empty masks get an all-zero box (scale 0: assigned to no
    level). The one box helper of the library (`torchvision.ops.masks_to_boxes` computes the same
    but raises on empty masks in older releases of the supported torchvision range).
    """
    n = masks_nhw.shape[0]
    if n == 0:
        return torch.zeros((0, 4), dtype=torch.float32, device=masks_nhw.device)
    rows_nh = masks_nhw.any(dim=2)
    cols_nw = masks_nhw.any(dim=1)
    h, w = rows_nh.shape[1], cols_nw.shape[1]
    end = 0 if max_exclusive else 1
    y0 = rows_nh.float().argmax(1)
    y1 = h - end - rows_nh.flip(1).float().argmax(1)
    x0 = cols_nw.float().argmax(1)
    x1 = w - end - cols_nw.flip(1).float().argmax(1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return torch.where(rows_nh.any(1, keepdim=True), boxes, torch.zeros_like(boxes))


def instances_from_panoptic(
    panoptic_hw: np.ndarray,
    crowd_instance_zero: bool = False,
    drop_thin: bool = True,
    min_pixels: int = 0,
    label_space: LabelSpace = CITYSCAPES,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thing segments of a panoptic map -> (ids (N,), masks (N,H,W) bool, thing index (N,)
    = train id - first thing train id).

    `crowd_instance_zero`: a thing pixel with instance 0 is a crowd region (Cityscapes panoptic
    `iscrowd` segment) and yields no instance. In Cityscapes-DVPS it is an ordinary instance.
    `drop_thin`: drop instances whose inclusive box has zero width or height (DVPS pipeline).
    `min_pixels`: drop instances with fewer pixels (`data.min_instance_pixels`, 0 = off).
    """
    ids = np.unique(panoptic_hw)
    cls = ids // LABEL_DIVISOR
    first_thing = label_space.first_thing_id
    keep = (cls >= first_thing) & (cls < label_space.num_classes)
    if crowd_instance_zero:
        keep &= ids % LABEL_DIVISOR != 0
    ids = ids[keep]
    h, w = panoptic_hw.shape
    if ids.size == 0:
        return ids.astype(np.int64), np.zeros((0, h, w), bool), np.zeros((0,), np.int64)
    masks_nhw = panoptic_hw[None] == ids[:, None, None]
    if drop_thin:
        rows_nh = masks_nhw.any(axis=2)
        cols_nw = masks_nhw.any(axis=1)
        height = h - 1 - np.argmax(rows_nh[:, ::-1], axis=1) - np.argmax(rows_nh, axis=1)
        width = w - 1 - np.argmax(cols_nw[:, ::-1], axis=1) - np.argmax(cols_nw, axis=1)
        thick = (height > 0) & (width > 0)
        ids, masks_nhw = ids[thick], masks_nhw[thick]
    if min_pixels > 0:
        big = masks_nhw.sum(axis=(1, 2)) >= min_pixels
        ids, masks_nhw = ids[big], masks_nhw[big]
    classes = (ids // LABEL_DIVISOR - first_thing).astype(np.int64)
    return ids.astype(np.int64), masks_nhw, classes


def make_sample(
    image_hw3: np.ndarray,
    panoptic_hw: np.ndarray,
    depth_hw: np.ndarray | None,
    meta: dict[str, Any],
    crowd_instance_zero: bool = False,
    drop_thin: bool = True,
    min_pixels: int = 0,
    box_max_exclusive: bool = False,
    label_space: LabelSpace = CITYSCAPES,
) -> dict[str, Any]:
    """Numpy arrays -> the Sample dict with torch tensors.

    `instance_boxes` (N, 4) float32 follow the dataset's box rule (`boxes_from_masks`); they set
    the instance scale sqrt(box area) that assigns an instance to FPN levels.
    """
    panoptic_hw = np.asarray(panoptic_hw, dtype=np.int64)
    _, masks_nhw, classes = instances_from_panoptic(
        panoptic_hw, crowd_instance_zero, drop_thin, min_pixels, label_space
    )
    boxes = boxes_from_masks(torch.from_numpy(np.ascontiguousarray(masks_nhw)), box_max_exclusive).numpy()
    h, w = panoptic_hw.shape
    meta = dict(meta)
    meta["height"], meta["width"] = int(h), int(w)
    return {
        "image": torch.from_numpy(np.ascontiguousarray(image_hw3.transpose(2, 0, 1))),
        "semantic": torch.from_numpy(semantic_from_panoptic(panoptic_hw, label_space.num_classes)),
        "panoptic": torch.from_numpy(panoptic_hw),
        "instance_masks": torch.from_numpy(np.ascontiguousarray(masks_nhw)),
        "instance_classes": torch.from_numpy(classes),
        "instance_boxes": torch.from_numpy(boxes),
        "depth": None if depth_hw is None else torch.from_numpy(np.asarray(depth_hw, dtype=np.float32)),
        "meta": meta,
    }


__all__ = ["VOID_ID", "boxes_from_masks", "instances_from_panoptic", "make_sample", "semantic_from_panoptic"]
