"""Data configuration: which dataset, where, and the training augmentation."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AugmentationConfig:
    enabled: bool = True
    # random rescale factor range (min, max); [1, 1] = off
    scale_range: list[float] = field(default_factory=lambda: [1.0, 1.0])
    # crop/pad to this (H, W); [] = no crop
    crop_size: list[int] = field(default_factory=list)
    hflip: bool = True
    color: bool = True


@dataclass
class DataConfig:
    # cityscapes-dps | semkitti-dps | cityscapes-panoptic | custom | synthetic
    dataset: str = "cityscapes-dps"
    root: str = ""
    train_split: str = "train"
    val_split: str = "val"
    num_workers: int = 2
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
