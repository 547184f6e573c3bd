"""Custom folder format (docs/custom_dataset.md): image / panoptic id PNG / depth PNG triplets.

    ROOT/classes.yaml
    ROOT/<split>/images/<name>.png|.jpg|.jpeg
    ROOT/<split>/panoptic/<name>.png     uint16, value = class_id * 1000 + instance (VOID 32000)
    ROOT/<split>/depth/<name>.png        uint16, metres * 256, 0 = invalid (folder optional)

`classes.yaml` maps each class id of the files to a library train id (stuff 0..10, things 11..18,
255 = ignore), so a custom dataset trains the same 19-class model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..errors import DataError
from ..io.formats import IGNORE_LABEL, LABEL_DIVISOR, VOID_ID, read_depth, read_image_rgb, read_panoptic_ids
from .base import FrameDataset, Problem, Record, SplitNotFound, check_same_size, sequence_fields
from .classes import FIRST_THING_ID, NUM_CLASSES

IMAGE_EXTS = (".png", ".jpg", ".jpeg")
MAX_CLASS_ID = 65535 // LABEL_DIVISOR


@dataclass
class ClassTable:
    """File class id -> library train id (255 = ignore); names and colours for display."""

    to_train: np.ndarray  # (MAX_CLASS_ID + 1,) int64, -1 = not in the table
    names: dict[int, str]
    void_class: int  # class id of VOID in the files (32 for 32000)
    path: Path


def load_class_table(root: str | os.PathLike, path: str | os.PathLike | None = None) -> ClassTable:
    """Parse and validate `classes.yaml` (see docs/custom_dataset.md)."""
    path = Path(path) if path else Path(root) / "classes.yaml"
    if not path.is_file():
        raise DataError(f"{path}: class-definition YAML not found (see docs/custom_dataset.md)")
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise DataError(f"{path}: unreadable YAML ({err})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("classes"), list) or not doc["classes"]:
        raise DataError(f"{path}: needs a non-empty 'classes' list")
    to_train = np.full(MAX_CLASS_ID + 1, -1, dtype=np.int64)
    names = {}
    void_id = int(doc.get("void_id", VOID_ID))
    if void_id % LABEL_DIVISOR:
        raise DataError(f"{path}: void_id must be a multiple of {LABEL_DIVISOR} (got {void_id})")
    for i, c in enumerate(doc["classes"]):
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise DataError(f"{path}: class entry {i} needs 'id' and 'name'")
        cid, train, thing = int(c["id"]), int(c.get("train_id", c["id"])), bool(c.get("thing", False))
        if not 0 <= cid <= MAX_CLASS_ID or to_train[cid] != -1 or cid == void_id // LABEL_DIVISOR:
            raise DataError(f"{path}: class '{c['name']}': id {cid} is out of range, repeated or the void id")
        if train != IGNORE_LABEL:
            ok = FIRST_THING_ID <= train < NUM_CLASSES if thing else 0 <= train < FIRST_THING_ID
            if not ok:
                kind = (
                    f"things need {FIRST_THING_ID}..{NUM_CLASSES - 1}"
                    if thing
                    else f"stuff needs 0..{FIRST_THING_ID - 1}"
                )
                raise DataError(f"{path}: class '{c['name']}': train_id {train} invalid ({kind}, or 255)")
        to_train[cid] = train
        names[cid] = str(c["name"])
    return ClassTable(to_train, names, void_id // LABEL_DIVISOR, path)


def discover(root: str | os.PathLike, split: str) -> tuple[list[Record], list[Problem]]:
    folder = Path(root) / split
    if not (folder / "images").is_dir():
        raise SplitNotFound(
            f"{folder}: no 'images' folder (custom layout: ROOT/<split>/images, panoptic, depth)"
        )
    has_depth = (folder / "depth").is_dir()
    records, problems = [], []
    images = sorted(p for p in (folder / "images").iterdir() if p.suffix.lower() in IMAGE_EXTS)
    stems = {p.stem for p in images}
    for img in images:
        files = {"image": img, "panoptic": folder / "panoptic" / f"{img.stem}.png"}
        if has_depth:
            files["depth"] = folder / "depth" / f"{img.stem}.png"
        missing = [r for r, p in files.items() if not p.is_file()]
        for role in missing:
            problems.append(Problem(str(img), f"missing partner {role} file {files[role]}"))
        if not missing:
            records.append(Record(img.stem, files, {"image_path": str(img), **sequence_fields(img.stem)}))
    for sub in ("panoptic", "depth"):
        if (folder / sub).is_dir():
            for p in sorted((folder / sub).glob("*.png")):
                if p.stem not in stems:
                    problems.append(
                        Problem(str(p), f"no image '{p.stem}.*' in {folder / 'images'} for this {sub} file")
                    )
    return records, problems


def map_panoptic(ids_hw: np.ndarray, table: ClassTable, path: Path | str) -> np.ndarray:
    """File ids (class_id*1000 + instance) -> library ids; unknown class ids are a DataError."""
    cls = ids_hw // LABEL_DIVISOR
    train = table.to_train[cls]
    void = cls == table.void_class
    bad = (train < 0) & ~void
    if bad.any():
        raise DataError(
            f"{path}: ids outside the class table {table.path.name}: {np.unique(ids_hw[bad])[:5].tolist()}"
        )
    thing = train >= FIRST_THING_ID
    out = np.where(thing, train * LABEL_DIVISOR + ids_hw % LABEL_DIVISOR, train * LABEL_DIVISOR)
    return np.where(void | (train == IGNORE_LABEL), VOID_ID, out)


def load_frame(
    record: Record, table: ClassTable
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, Any]]:
    image = read_image_rgb(record.files["image"])
    ids = read_panoptic_ids(record.files["panoptic"]).astype(np.int64)
    check_same_size(image, ids, record.files["panoptic"], "panoptic label")
    panoptic = map_panoptic(ids, table, record.files["panoptic"])
    depth = None
    if "depth" in record.files:
        depth = read_depth(record.files["depth"])
        check_same_size(image, depth, record.files["depth"], "depth map")
    return image, panoptic, depth, {**record.meta, "image_id": record.image_id}


class CustomDataset(FrameDataset):
    """Custom folder dataset; `depth` is None when the split has no depth folder."""

    drop_thin = True

    def __init__(self, records: list[Record], augmentation=None, seed: int = 0, min_instance_pixels: int = 0,
                 class_table: ClassTable | None = None):  # fmt: skip
        super().__init__(records, augmentation, seed, min_instance_pixels)
        if class_table is None:
            raise DataError("custom dataset needs its class table (classes.yaml)")
        self.class_table = class_table

    def load_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, Any]]:
        return load_frame(self.records[index], self.class_table)
