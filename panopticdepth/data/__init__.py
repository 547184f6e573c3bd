"""Dataset readers (Cityscapes-DPS, SemKITTI-DPS, Cityscapes panoptic, custom folder), training
augmentation and the synthetic street-scene generator. Entry point: `build_dataset`."""

from .build import DATASETS, build_dataset, collate_samples

__all__ = ["DATASETS", "build_dataset", "collate_samples"]
