"""Model configuration: backbone, FPN, heads, depth and inference.

Defaults are the released Cityscapes-DPS configuration of the original implementation
(docs/original_implementation.md#config-defaults), so a converted original checkpoint runs with no YAML at
all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..label_space import CITYSCAPES
from .checks import above, ascending, at_least, between, each, length, not_empty, one_of, rules

# Input convention per backbone family: (channel order, mean, std), 0-255 scale.
BACKBONE_INPUT: dict[str, tuple[str, tuple[float, ...], tuple[float, ...]]] = {
    # MSRA R-50 / the original checkpoints: BGR, the ImageNet *RGB* means on the B, G, R channels, std 1.
    "resnet": ("BGR", (123.675, 116.28, 103.53), (1.0, 1.0, 1.0)),
    # timm's Swin ImageNet weights: RGB, ImageNet mean and std (timm's IMAGENET_DEFAULT_* x 255).
    "swin": ("RGB", (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
}


@dataclass
class BackboneConfig:
    # resnet18 | resnet34 | resnet50 | resnet101 | swin_t | swin_s
    name: str = "resnet50"
    # MSRA/Detectron2 layout (stride in the first 1x1 conv) for original checkpoints;
    # False = torchvision layout (stride in the 3x3) for torchvision's ImageNet weights.
    stride_in_1x1: bool = True
    # FrozenBN | BN | SyncBN
    norm: str = "FrozenBN"
    # 0 = nothing frozen, 1 = stem, 2 = stem + res2, ...
    freeze_at: int = field(default=2, metadata=rules(between(0, 5)))
    # "" = random init; a file path, or "imagenet" to load torchvision/timm weights from the local cache.
    pretrained: str = ""
    # Swin only: stochastic-depth rate of the last block (linear from 0 over the blocks).
    drop_path_rate: float = 0.0
    # Swin only: a LayerNorm on each returned stage (the official Swin detection backbone's norm0..3).
    out_norm: bool = True


@dataclass
class FPNConfig:
    out_channels: int = field(default=256, metadata=rules(at_least(1)))


@dataclass
class HeadsConfig:
    """Widths and switches of the semantic FPN, encoders and per-level heads
    (docs/original_implementation.md#single-head)."""

    # FPN levels the position / kernel / depth-kernel heads run on, finest first (shared weights).
    # The paper's p3..p7; adding p2 (stride 4) gives small objects and thin regions 4x the
    # positions (benchmarks/README.md, demo configuration trials). train.targets.instance_scales
    # and model.inference.pool_sizes need one entry per level.
    levels: list[str] = field(
        default_factory=lambda: ["p3", "p4", "p5", "p6", "p7"],
        metadata=rules(not_empty, each(one_of("p2", "p3", "p4", "p5", "p6", "p7")), ascending),
    )
    convs_dim: int = field(default=256, metadata=rules(at_least(1)))
    num_convs: int = field(default=3, metadata=rules(at_least(0)))
    # Modulated deformable convs (DCNv2) where the original has them; off = plain 3x3 convs
    # (much cheaper on the CPU, used by the small config).
    position_deform: bool = True
    kernel_deform: bool = False
    encoder_deform: bool = True
    depth_kernel_deform: bool = True
    # DCNv2 kernel: "torchvision" (torchvision.ops.deform_conv2d, what the original's outputs were
    # made with); "native" (modeling/native_dcn.py: the same forward bits, ~4x faster CPU forward,
    # with a native backward for CPU training, compiled once with the system C compiler); "auto" =
    # native on CPU float32/float64 (inference and training) when available, else torchvision
    # (CUDA, tracing/export, no compiler); "sample" (grid_sample + matmul: 2.7x faster
    # forward+backward for CPU training, equal only up to float32 rounding, which can flip
    # near-tied centre peaks).
    deform_impl: Literal["auto", "native", "torchvision", "sample"] = "auto"
    # CoordConv input (two coordinate channels appended once, docs/original_implementation.md#coordconv) per
    # tower.
    position_coord: bool = False
    kernel_coord: bool = True
    encoder_coord: bool = True
    depth_kernel_coord: bool = True
    # Tower norms: "GN" (GroupNorm, conv without bias) or "" (no norm, conv with bias).
    position_norm: str = "GN"
    kernel_norm: str = "GN"
    encoder_norm: str = ""
    depth_kernel_norm: str = "GN"
    # Semantic FPN norm ("GN" or "").
    semantic_norm: str = "GN"
    # GroupNorm groups used by the heads' towers.
    norm_groups: int = field(default=32, metadata=rules(at_least(1)))
    # Prior bias of the centre and region logits (MODEL.POSITION_HEAD.THING.BIAS_VALUE,
    # docs/original_implementation.md#prior-bias).
    bias_value: float = -2.19


@dataclass
class DepthConfig:
    """Depth branch; every variant of the paper's Table 3 is a switch here."""

    enabled: bool = True
    # instance: instance-wise depth (Eq. 3); pixel: one pixel-wise depth map (variant A)
    mode: Literal["instance", "pixel"] = "instance"
    # none (variant B), T1 (Eq. 4, min-based), T2 (Eq. 5, mean/shift-based; the original's code)
    normalization: Literal["none", "T1", "T2"] = "T2"
    kernel_dim: int = field(default=16, metadata=rules(at_least(1)))
    # d_max of the paper: shift scale = max_depth / 2, range scale = max_depth
    max_depth: float = field(default=88.0, metadata=rules(above(0)))
    # output clamp at inference
    clamp_max: float = field(default=80.0, metadata=rules(above(0)))


@dataclass
class InferenceConfig:
    """Post-processing thresholds (docs/original_implementation.md#thing-thresholds); defaults = the released
    Cityscapes-DPS YAML."""

    # MODEL.POSITION_HEAD.THING.THRES: keep centre candidates with score > this (strict)
    thing_threshold: float = field(default=0.01, metadata=rules(at_least(0)))
    # MODEL.POSITION_HEAD.THING.TOP_NUM: per-level cap top_num // 2, final instance cap top_num
    top_num: int = field(default=200, metadata=rules(at_least(1)))
    # MODEL.POSITION_HEAD.STUFF.THRES: keep stuff classes with score > this (strict)
    stuff_threshold: float = field(default=0.1, metadata=rules(at_least(0)))
    # stuff region = argmax class & probability >= this (hard-coded 0.4 in the original)
    stuff_region_threshold: float = field(default=0.4, metadata=rules(at_least(0)))
    # centre smoothing avg-pool sizes for p3..p7 (hard-coded in the original)
    pool_sizes: list[int] = field(default_factory=lambda: [3, 3, 3, 5, 5], metadata=rules(each(at_least(1))))
    # MODEL.INFERENCE.INST_THRES: mask binarisation
    mask_threshold: float = field(default=0.5, metadata=rules(at_least(0)))
    # MODEL.INFERENCE.SIMILAR_THRES / CLASS_SPECIFIC: cosine thing-kernel fusion
    similarity_threshold: float = 0.97
    class_specific: bool = True
    # minimum rescored instance score (hard-coded 0.05 in the original)
    rescore_min: float = field(default=0.05, metadata=rules(at_least(0)))
    # MODEL.INFERENCE.COMBINE.INST_THRESH / OVERLAP_THRESH / STUFF_AREA_LIMIT
    combine_instance_threshold: float = field(default=0.2, metadata=rules(at_least(0)))
    combine_overlap_threshold: float = field(default=0.5, metadata=rules(at_least(0)))
    stuff_area_limit: int = field(default=2048, metadata=rules(at_least(0)))
    # Depth embedding resized straight from 1/4 to the output size
    # (docs/original_implementation.md#depth-resize); False = the mask path (x4, crop the padding, resize),
    # which is correct for padded inputs.
    depth_direct_resize: bool = True


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    fpn: FPNConfig = field(default_factory=FPNConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    # Class counts: set from the label space when training starts (docs/label_spaces.md); the
    # defaults are the Cityscapes ones of the original checkpoints.
    num_thing_classes: int = field(default=CITYSCAPES.num_thing_classes, metadata=rules(at_least(0)))
    num_classes: int = field(default=CITYSCAPES.num_classes, metadata=rules(at_least(1)))
    # first thing train id (things are train ids first_thing_id .. num_classes-1)
    first_thing_id: int = field(default=CITYSCAPES.first_thing_id, metadata=rules(at_least(0)))
    # Input channel order and per-channel mean/std on the 0-255 scale. "auto" / [] take the
    # backbone's convention (`input_normalization`): for ResNets the original checkpoints' (BGR,
    # ImageNet RGB means applied to the BGR channels, std 1), for Swin timm's ImageNet weights'
    # (RGB, ImageNet mean and std). Set them explicitly to override.
    input_format: Literal["auto", "BGR", "RGB"] = "auto"
    pixel_mean: list[float] = field(default_factory=list, metadata=rules(length(0, 3)))
    pixel_std: list[float] = field(default_factory=list, metadata=rules(length(0, 3), each(above(0))))
    size_divisibility: int = field(default=32, metadata=rules(at_least(1)))

    def input_normalization(self) -> tuple[str, list[float], list[float]]:
        """(channel order, mean, std) with "auto" / empty values resolved from the backbone."""
        fmt, mean, std = BACKBONE_INPUT["swin" if self.backbone.name.startswith("swin") else "resnet"]
        return (
            fmt if self.input_format == "auto" else self.input_format,
            list(self.pixel_mean) if self.pixel_mean else list(mean),
            list(self.pixel_std) if self.pixel_std else list(std),
        )
