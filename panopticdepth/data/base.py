"""Shared machinery of the dataset readers: file records, folder discovery, the map-style Dataset.

A reader subclasses `FrameDataset` and implements `load_arrays(index)`. Discovery returns problems
instead of raising, so that `panopticdepth data check` can list all of them; the readers raise the
first one as a `DataError`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from ..io.formats import LABEL_DIVISOR, VOID_ID
from ..io.inputs import is_still_frame
from ..label_space import CITYSCAPES, LabelSpace
from .augment import Augmentation
from .sample import make_sample

log = logging.getLogger(__name__)


class SplitNotFound(DataError):
    """The dataset root has no folder (or index) for the requested split."""


@dataclass
class Problem:
    """One thing wrong with a dataset: the file it concerns and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class Record:
    """The files of one frame. `files` maps a role ("image", "panoptic", "depth", ...) to a path."""

    image_id: str
    files: dict[str, Path]
    meta: dict[str, Any] = field(default_factory=dict)


def raise_problems(problems: list[Problem]) -> None:
    if problems:
        more = (
            f" (and {len(problems) - 1} more problem(s); run 'panopticdepth data check')"
            if len(problems) > 1
            else ""
        )
        raise DataError(f"{problems[0]}{more}")


def find_split_dir(root: str | os.PathLike, split: str, layouts: list[str], pattern: str) -> Path:
    """First of `root/<layout>/<split>` (layouts relative to root) holding a file matching `pattern`.

    `root` may also be the split folder itself, so users can point at any level of the layout.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset root is not a directory")
    candidates = [root / layout / split for layout in layouts] + [root / split, root]
    for cand in candidates:
        if cand.is_dir() and any(cand.glob(pattern)):
            return cand
    tried = ", ".join(str(c) for c in candidates)
    raise SplitNotFound(f"{root}: no '{pattern}' files for split '{split}' (looked in {tried})")


def sequence_fields(prefix: str) -> dict[str, Any]:
    """`SSSSSS_FFFFFF_...` -> sequence / frame meta (the DVPQ sequence key is the first field);
    `still` marks the synthetic generator's independent scenes, which are not to be tracked."""
    parts = prefix.split("_")
    meta: dict[str, Any] = {}
    if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
        meta["sequence"] = parts[0]
        meta["frame"] = int(parts[1])
        meta["still"] = is_still_frame(prefix)
    return meta


def pair_by_prefix(
    folder: Path, suffixes: dict[str, str], anchor: str, optional: tuple[str, ...] = ()
) -> tuple[list[Record], list[Problem]]:
    """Group files of `folder` by the prefix before their role suffix (never by zipping sorted lists).

    `suffixes` maps role -> file-name suffix; `anchor` is the role that defines a frame. Suffixes may
    contain a '*' (e.g. SemKITTI's `_depth_*.png`).
    """
    found: dict[str, dict[str, Path]] = {}
    problems: list[Problem] = []
    for role, suffix in suffixes.items():
        head, star, tail = suffix.partition("*")
        for path in sorted(folder.glob(f"*{suffix}")):
            name = path.name
            prefix = name[: name.rfind(head)] if star else name[: -len(suffix)]
            if not prefix:
                continue
            slot = found.setdefault(prefix, {})
            if role in slot:
                problems.append(
                    Problem(str(path), f"second {role} file for prefix '{prefix}' ({slot[role].name})")
                )
                continue
            slot[role] = path
    records = []
    for prefix in sorted(found):
        files = found[prefix]
        if anchor not in files:
            some = next(iter(files.values()))
            problems.append(
                Problem(str(some), f"no {anchor} file '{prefix}{suffixes[anchor]}' for this label")
            )
            continue
        missing = [r for r in suffixes if r not in files and r not in optional]
        for role in missing:
            problems.append(
                Problem(str(files[anchor]), f"missing partner {role} file '{prefix}{suffixes[role]}'")
            )
        if not missing:
            records.append(
                Record(prefix, files, {"image_path": str(files[anchor]), **sequence_fields(prefix)})
            )
    return records, problems


def read_index_json(path: Path) -> list[dict[str, Any]]:
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: unreadable index JSON ({err})") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise DataError(f"{path}: index JSON must be a list of objects")
    return entries


def check_panoptic_ids(
    panoptic_hw: np.ndarray, path: Path | str, label_space: LabelSpace = CITYSCAPES
) -> None:
    """Every id must be class_id * 1000 + instance with a class of `label_space`, or void."""
    cls = panoptic_hw // LABEL_DIVISOR
    n = label_space.num_classes
    bad = ~(((cls >= 0) & (cls < n)) | (panoptic_hw == VOID_ID))
    if bad.any():
        values = np.unique(panoptic_hw[bad])[:5].tolist()
        raise DataError(
            f"{path}: ids outside the label space {label_space.name!r} (class id must be 0..{n - 1} or "
            f"void {VOID_ID}); e.g. {values}"
        )


def check_same_size(image_hw3: np.ndarray, other_hw: np.ndarray, path: Path | str, what: str) -> None:
    if image_hw3.shape[:2] != other_hw.shape[:2]:
        raise DataError(
            f"{path}: {what} size {other_hw.shape[1]}x{other_hw.shape[0]} does not match the image "
            f"size {image_hw3.shape[1]}x{image_hw3.shape[0]}"
        )


class FrameDataset(Dataset):
    """Map-style dataset of Samples; augmentation seeded per (seed, epoch, index)."""

    #: Cityscapes panoptic marks crowd regions with instance 0; DVPS does not
    # (docs/original_implementation.md#cityscapes-dvps).
    crowd_instance_zero = False
    #: DVPS drops instances whose inclusive box is 1 pixel thin.
    drop_thin = True
    #: Box rule: (min, max + 1) in the panoptic-segmentation pipeline, inclusive max in the DVPS one.
    box_max_exclusive = False
    has_depth = True
    #: The label space of the format's files when the caller gives none.
    default_label_space: LabelSpace = CITYSCAPES

    def __init__(
        self,
        records: list[Record],
        augmentation: Augmentation | None = None,
        seed: int = 0,
        min_instance_pixels: int = 0,
        label_space: LabelSpace | None = None,
    ):
        self.records = records
        self.label_space = label_space or self.default_label_space
        self.min_instance_pixels = int(min_instance_pixels)
        self.augmentation = augmentation
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draw; call it at the start of every epoch."""
        self.epoch = int(epoch)

    def load_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, Any]]:
        """-> (image (H,W,3) uint8 RGB, panoptic (H,W) int64, depth (H,W) float32 or None, meta)."""
        raise NotImplementedError

    def generator(self, index: int) -> torch.Generator:
        # Deterministic per (seed, epoch, index), whatever the worker or the visiting order.
        g = torch.Generator()
        g.manual_seed(int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0]))
        return g

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += len(self)
        image, panoptic, depth, meta = self.load_arrays(index)
        if self.augmentation is not None and self.augmentation.enabled:
            image, panoptic, depth = self.augmentation(image, panoptic, depth, self.generator(index))
        return make_sample(
            image, panoptic, depth, meta, self.crowd_instance_zero, self.drop_thin,
            self.min_instance_pixels, self.box_max_exclusive, self.label_space,
        )  # fmt: skip
