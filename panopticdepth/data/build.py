"""`build_dataset` / `collate_samples`: one entry point for every dataset format."""

from __future__ import annotations

import importlib
import logging
from typing import Any

from ..config.data import DataConfig
from ..errors import DataError
from ..label_space import CITYSCAPES, SEMKITTI, LabelSpace
from .augment import Augmentation
from .base import FrameDataset, Problem, Record, raise_problems

log = logging.getLogger(__name__)

# dataset name -> (reader module, dataset class); the synthetic generator writes the Cityscapes-DPS layout
_READERS = {
    "cityscapes-dps": ("cityscapes_dps", "CityscapesDPSDataset"),
    "semkitti-dps": ("semkitti_dps", "SemKITTIDPSDataset"),
    "cityscapes-panoptic": ("cityscapes_panoptic", "CityscapesPanopticDataset"),
    "custom": ("custom", "CustomDataset"),
    "synthetic": ("cityscapes_dps", "CityscapesDPSDataset"),
}
DATASETS = tuple(_READERS)


def _reader(name: str):
    if name not in _READERS:
        raise DataError(f"unknown dataset '{name}' (data.dataset must be one of {', '.join(DATASETS)})")
    return importlib.import_module(f"{__package__}.{_READERS[name][0]}")


def discover_records(
    data_cfg: DataConfig, split: str, root: str | None = None
) -> tuple[list[Record], list[Problem]]:
    """Frames of a split and the pairing problems, for the dataset named by `data_cfg.dataset`."""
    root = root if root is not None else data_cfg.root
    if not root:
        raise DataError("data.root is empty: set it to the dataset folder (data.root=DIR)")
    return _reader(data_cfg.dataset).discover(root, split)


def dataset_class(name: str) -> type[FrameDataset]:
    return getattr(_reader(name), _READERS[name][1])


def dataset_label_space(data_cfg: DataConfig) -> LabelSpace:
    """The label space of the dataset's files: SemKITTI for semkitti-dps, the classes.yaml of a
    custom dataset, Cityscapes for the Cityscapes formats and the synthetic scenes."""
    if data_cfg.dataset == "semkitti-dps":
        return SEMKITTI
    if data_cfg.dataset == "custom":
        from .custom import load_label_space

        if not data_cfg.root and not data_cfg.classes_file:
            raise DataError("data.root is empty: a custom dataset needs its folder (data.root=DIR)")
        return load_label_space(data_cfg.root, data_cfg.classes_file or None)
    _reader(data_cfg.dataset)  # an unknown name is a DataError
    return CITYSCAPES


def check_label_space(
    expected: LabelSpace, data_space: LabelSpace, model_source: str, data_cfg: DataConfig
) -> None:
    """A model trained in one label space cannot be trained further or scored on data in another."""
    if not expected.same_classes(data_space):
        where = data_cfg.classes_file or data_cfg.root
        hint = ""
        if (expected.num_classes, expected.first_thing_id) == (
            data_space.num_classes,
            data_space.first_thing_id,
        ):
            hint = f"; if the model's channels mean these classes, override labels.name={data_space.name}"
        raise DataError(
            f"{model_source}: the model's label space {expected.describe()} differs from the data's "
            f"({where}, {data_cfg.dataset}): {data_space.describe()}{hint}"
        )


def build_dataset(
    data_cfg: DataConfig,
    split: str,
    train: bool,
    label_space: LabelSpace | None = None,
    source: str = "model",
) -> FrameDataset:
    """Map-style dataset of Samples for `split`; training applies `data_cfg.augmentation`.

    `split` is a split folder name (e.g. `data_cfg.train_split`). `label_space`: the model's; the
    data's own must equal it (`source` names the model's config in the error). Raises DataError
    when files are missing or do not pair up.
    """
    space = dataset_label_space(data_cfg)
    if label_space is not None:
        check_label_space(label_space, space, source, data_cfg)
    records, problems = discover_records(data_cfg, split)
    raise_problems(problems)
    if not records:
        raise DataError(f"{data_cfg.root}: no frames found for split '{split}'")
    aug = Augmentation(data_cfg.augmentation) if train and data_cfg.augmentation.enabled else None
    cls = dataset_class(data_cfg.dataset)
    ds = cls(
        records, aug, seed=data_cfg.seed, min_instance_pixels=data_cfg.min_instance_pixels, label_space=space
    )
    log.info("%s %s: %d frames (augmentation %s)", data_cfg.dataset, split, len(ds), "on" if aug else "off")
    return ds


def collate_samples(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Batches are plain lists of samples (images differ in size; targets are built per image)."""
    return list(batch)
