"""Dataset validation for `panopticdepth data check`: every problem with the file it concerns.

It runs the readers' own discovery and per-frame loading (the same checks that raise `DataError`
during training), collecting the problems instead of stopping at the first.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..config.data import DataConfig
from ..errors import DataError
from ..label_space import LabelSpace
from ..utils.progress import progress
from .base import Problem, Record, SplitNotFound

log = logging.getLogger(__name__)

DEFAULT_SPLITS = ("train", "val", "test")


def detect_dataset(root: str | os.PathLike) -> str:
    """Guess the dataset format of a folder from its file names."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    if (root / "classes.yaml").is_file():
        return "custom"
    if any(root.glob("gtFine/cityscapes_panoptic_*.json")) or any(
        root.glob("cityscapes/gtFine/cityscapes_panoptic_*.json")
    ):
        return "cityscapes-panoptic"
    for pattern, name in (
        ("*_gtFine_class.png", "semkitti-dps"),
        ("*_gtFine_instanceTrainIds.png", "cityscapes-dps"),
    ):
        for depth in range(5):
            if any(root.glob("/".join(["*"] * depth + [pattern]))):
                return name
    raise DataError(f"{root}: cannot tell the dataset format; pass --dataset")


def _load(name: str, record: Record, space: LabelSpace) -> None:
    if name in ("cityscapes-dps", "synthetic"):
        from .cityscapes_dps import load_frame
    elif name == "semkitti-dps":
        from .semkitti_dps import load_frame
    elif name == "cityscapes-panoptic":
        from .cityscapes_panoptic import load_frame

        load_frame(record)  # category ids are checked against the Cityscapes label ids
        return
    else:
        from .custom import load_frame
    load_frame(record, space)


def check_dataset(
    root: str | os.PathLike, dataset: str | None = None, splits: list[str] | None = None
) -> tuple[dict[str, int], list[Problem]]:
    """Validate `root`; returns ({split: number of frames}, problems). Splits default to the ones present."""
    from .build import dataset_label_space, discover_records

    name = dataset or detect_dataset(root)
    cfg = DataConfig(dataset=name, root=str(root))
    problems: list[Problem] = []
    try:
        space = dataset_label_space(cfg)
    except DataError as err:
        path, _, msg = str(err).partition(": ")
        return {}, [Problem(path, msg)]
    counts: dict[str, int] = {}
    seen: set = set()
    for split in splits or DEFAULT_SPLITS:
        try:
            records, found = discover_records(cfg, split)
        except SplitNotFound as err:
            if splits:  # asked for explicitly: its absence is a problem
                problems.append(Problem(str(root), str(err)))
            continue
        except DataError as err:  # the split is there but unusable (e.g. a corrupt index JSON)
            path, _, msg = str(err).partition(": ")
            problems.append(Problem(path, msg) if msg else Problem(str(root), str(err)))
            counts[split] = 0
            continue
        key = (tuple(r.meta.get("image_path", r.image_id) for r in records), tuple(map(str, found)))
        if key in seen:  # the root is itself a split folder: every split name resolves to it
            continue
        seen.add(key)
        problems.extend(found)
        counts[split] = len(records)
        for rec in progress(records, desc=f"check {split}", unit="img"):
            try:
                _load(name, rec, space)
            except DataError as err:
                path, _, msg = str(err).partition(": ")
                problems.append(Problem(path, msg))
    if not counts and not problems:
        problems.append(
            Problem(str(root), f"no split found (looked for {', '.join(splits or DEFAULT_SPLITS)})")
        )
    return counts, problems
