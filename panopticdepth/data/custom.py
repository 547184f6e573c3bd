"""Custom folder format (docs/custom_dataset.md): image / panoptic id PNG / depth PNG triplets.

    ROOT/classes.yaml
    ROOT/<split>/images/<name>.png|.jpg|.jpeg
    ROOT/<split>/panoptic/<name>.png     uint16, value = class_id * 1000 + instance (VOID 32000)
    ROOT/<split>/depth/<name>.png        uint16, metres * 256, 0 = invalid (folder optional)

`classes.yaml` defines the dataset's own label space (`label_space.py`): any number of thing and
stuff classes in any order; the model trains one channel per class (stuff first, then things).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..errors import DataError
from ..io.formats import IGNORE_LABEL, LABEL_DIVISOR, VOID_ID, read_depth, read_image_rgb, read_panoptic_ids
from ..label_space import LabelSpace, LabelSpaceError, build_label_space
from .base import FrameDataset, Problem, Record, SplitNotFound, check_same_size, sequence_fields

IMAGE_EXTS = (".png", ".jpg", ".jpeg")
MAX_CLASS_ID = 65535 // LABEL_DIVISOR


def classes_path(root: str | os.PathLike, path: str | os.PathLike | None = None) -> Path:
    return Path(path) if path else Path(root) / "classes.yaml"


def load_label_space(root: str | os.PathLike, path: str | os.PathLike | None = None) -> LabelSpace:
    """Parse and validate `classes.yaml` (see docs/custom_dataset.md); errors name the file."""
    path = classes_path(root, path)
    if not path.is_file():
        raise DataError(f"{path}: class-definition YAML not found (see docs/custom_dataset.md)")
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise DataError(f"{path}: unreadable YAML ({err})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("classes"), list) or not doc["classes"]:
        raise DataError(f"{path}: needs a non-empty 'classes' list")
    void_id = doc.get("void_id", VOID_ID)
    if not isinstance(void_id, int) or void_id % LABEL_DIVISOR or not 0 <= void_id <= 65535:
        raise DataError(
            f"{path}: void_id must be a multiple of {LABEL_DIVISOR} in 0..65535 (got {void_id!r})"
        )
    for i, c in enumerate(doc["classes"]):
        cid = c.get("id") if isinstance(c, dict) else None
        if isinstance(cid, int) and not 0 <= cid <= MAX_CLASS_ID:
            raise DataError(f"{path}: class entry {i}: id {cid} is outside 0..{MAX_CLASS_ID}")
    try:
        return build_label_space(
            str(doc.get("name") or Path(path).parent.name or "custom"),
            list(doc["classes"]),
            void_id=void_id // LABEL_DIVISOR,
            protocol=str(doc.get("protocol", "cityscapes-dps")),
            source=str(path),
        )
    except LabelSpaceError as err:
        raise DataError(str(err)) from None


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


def map_panoptic(ids_hw: np.ndarray, label_space: LabelSpace, path: Path | str) -> np.ndarray:
    """File ids (class_id*1000 + instance) -> internal ids; class ids outside the label space are a
    DataError naming the file."""
    try:
        train = label_space.to_train_ids(ids_hw // LABEL_DIVISOR, str(path))
    except LabelSpaceError as err:
        known = label_space.id_to_train
        cls = ids_hw // LABEL_DIVISOR
        bad = (cls >= len(known)) | (known[np.clip(cls, 0, len(known) - 1)] < 0)
        raise DataError(f"{err}; panoptic ids e.g. {np.unique(ids_hw[bad])[:5].tolist()}") from None
    thing = (train >= label_space.first_thing_id) & (train != IGNORE_LABEL)
    out = np.where(thing, train * LABEL_DIVISOR + ids_hw % LABEL_DIVISOR, train * LABEL_DIVISOR)
    return np.where(train == IGNORE_LABEL, VOID_ID, out)


def load_frame(
    record: Record, label_space: LabelSpace
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, Any]]:
    image = read_image_rgb(record.files["image"])
    ids = read_panoptic_ids(record.files["panoptic"]).astype(np.int64)
    check_same_size(image, ids, record.files["panoptic"], "panoptic label")
    panoptic = map_panoptic(ids, label_space, record.files["panoptic"])
    depth = None
    if "depth" in record.files:
        depth = read_depth(record.files["depth"])
        check_same_size(image, depth, record.files["depth"], "depth map")
    return image, panoptic, depth, {**record.meta, "image_id": record.image_id}


class CustomDataset(FrameDataset):
    """Custom folder dataset; `depth` is None when the split has no depth folder. Needs the label
    space of its classes.yaml (`load_label_space`)."""

    drop_thin = True

    def __init__(self, records: list[Record], augmentation=None, seed: int = 0, min_instance_pixels: int = 0,
                 label_space: LabelSpace | None = None):  # fmt: skip
        if label_space is None:
            raise DataError("custom dataset needs its label space (classes.yaml)")
        super().__init__(records, augmentation, seed, min_instance_pixels, label_space)

    def load_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, Any]]:
        return load_frame(self.records[index], self.label_space)
