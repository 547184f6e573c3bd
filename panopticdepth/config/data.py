"""Data configuration: which dataset, where, and the training augmentation."""

from __future__ import annotations

from dataclasses import dataclass, field

from .checks import above, ascending, at_least, each, length, rules


@dataclass
class AugmentationConfig:
    """Training augmentation; the two pipelines of the original are described in docs/augmentation.md."""

    # false = training sees exactly the file content
    enabled: bool = True
    # dps: colour -> flip -> rescale (scale_range) -> crop/pad (original stage 3)
    # ps: shortest-edge resize (short_edges) -> flip -> random crop -> colour (original stages 1-2)
    pipeline: str = "dps"
    # ps: the shortest edge is drawn uniformly from this list of lengths (pixels)
    short_edges: list[int] = field(default_factory=list, metadata=rules(each(at_least(1))))
    # ps: the longest edge after the shortest-edge resize is at most this
    max_size: int = field(default=4096, metadata=rules(at_least(1)))
    # dps: random rescale factor range (min, max); [1, 1] = off (released DPS config: crop disabled)
    scale_range: list[float] = field(
        default_factory=lambda: [1.0, 1.0], metadata=rules(length(2), each(above(0)), ascending)
    )
    # crop to this (H, W); [] = no crop. dps: pads when smaller, and the rescale is relative to it
    # (ResizeScale); ps: crop size (min(H, h), min(W, w)), no padding.
    crop_size: list[int] = field(default_factory=list, metadata=rules(length(0, 2), each(at_least(1))))
    # center (original DPS pipeline) | random (required by ps)
    crop_mode: str = "center"
    hflip: bool = True
    color: bool = True
    # clip rescaled depth to the [min, max] of the depth map before scaling (INPUT.DEPTH_BOUND)
    depth_bound: bool = True


@dataclass
class DataConfig:
    # cityscapes-dps | semkitti-dps | cityscapes-panoptic | custom | synthetic (= cityscapes-dps layout)
    dataset: str = "cityscapes-dps"
    root: str = ""
    train_split: str = "train"
    val_split: str = "val"
    num_workers: int = field(default=2, metadata=rules(at_least(0)))
    # seed of the augmentation draws (per seed, epoch, index)
    seed: int = field(default=0, metadata=rules(at_least(0)))
    # drop thing instances with fewer pixels than this after augmentation (0 = keep all, as the original)
    min_instance_pixels: int = field(default=0, metadata=rules(at_least(0)))
    # custom dataset: path of the class-definition YAML ("" = <root>/classes.yaml)
    classes_file: str = ""
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
