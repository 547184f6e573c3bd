"""Training-time kernel extraction (docs/original_implementation.md#guidance-weights,
docs/original_implementation.md#stuff-training-kernels).

Things: per level, the GT masks are resized to the level, the live centre probability of each
slot's class inside the mask (> 0.1, < 255) is the guidance map, and its top-7 positions give 7
kernels per instance, weighted by the (non-detached) guidance values. Stuff: the kernel map
averaged over the binary GT region of each present class, per level (the training form of AKF,
Eq. 1). Both are concatenated over levels and projected by the `KernelProjection` that
post-processing also calls (`project_things` / `project_stuff`: the original's 1x1
`embed_extractor` convs as `nn.Linear`). Depth-kernel vectors are gathered the same way and are not
projected.

Shapes: B images, N = sum_l T_l thing slots, S = sum_l S_l stuff slots, P = pos_num (7),
C = kernel channels, E2 = depth kernel length (kernel_dim + 2), (H4, W4) mask embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..modeling.kernel_projection import KernelProjection
from ..modeling.outputs import HeadOutputs, LevelOutputs
from .targets import LevelTargets, Targets


@dataclass
class ThingKernels:
    kernels: torch.Tensor  # (B, N, P, C) projected mask kernels
    weights: torch.Tensor  # (B, N, P) top-P guidance values (gradient flows into the centre head)
    depth_kernels: torch.Tensor | None  # (B, N, P, E2) raw depth-kernel vectors
    valid: torch.Tensor  # (B, N) bool, assigned slots
    masks: torch.Tensor  # (B, N, H4, W4) soft GT masks, 255 in unused slots
    depth_count: torch.Tensor | None  # (B, N) valid depth pixels per slot
    depth_mean: torch.Tensor | None  # (B, N)
    depth_min: torch.Tensor | None  # (B, N)


@dataclass
class StuffKernels:
    kernels: torch.Tensor  # (B, S, C) projected mask kernels
    depth_kernels: torch.Tensor | None  # (B, S, E2)
    valid: torch.Tensor  # (B, S) bool
    labels: torch.Tensor  # (B, S, H4, W4) soft GT maps (dice targets)
    classes: torch.Tensor  # (B, S) train ids


def guidance_topk(
    level: LevelOutputs, tgt: LevelTargets, pos_num: int, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-`pos_num` guidance values and flat positions per slot -> ((B, T, P), (B, T, P)).

    Guidance = sigma(centre logit of the slot's class) where the bilinearly resized GT mask is in
    (threshold, 255), else 0; not detached (docs/original_implementation.md#guidance-weights). On a level with
    fewer than `pos_num` positions the missing entries get weight 0 at position 0 (the original would fail
    there).
    """
    center = level.center_logits
    b, _, h, w = center.shape
    t = tgt.thing_masks.shape[1]
    guided = F.interpolate(tgt.thing_masks, size=(h, w), mode="bilinear", align_corners=False)
    keep = (guided > threshold) & (guided < 255)
    cls_index = tgt.thing_classes.view(b, t, 1, 1).expand(b, t, h, w)
    prob = torch.gather(center, 1, cls_index).sigmoid()
    guidance = torch.where(keep, prob, torch.zeros_like(prob)).view(b, t, h * w)
    k = min(pos_num, h * w)
    values, index = torch.topk(guidance, k=k, dim=-1)
    if k < pos_num:
        values = torch.cat([values, values.new_zeros(b, t, pos_num - k)], -1)
        index = torch.cat([index, index.new_zeros(b, t, pos_num - k)], -1)
    return values, index


def _gather_positions(maps_bchw: torch.Tensor, index_btp: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) at flat positions (B, T, P) -> (B, T, P, C)."""
    b, c = maps_bchw.shape[:2]
    _, t, p = index_btp.shape
    flat = maps_bchw.reshape(b, c, -1)
    picked = torch.gather(flat, 2, index_btp.reshape(b, 1, t * p).expand(b, c, t * p))
    return picked.view(b, c, t, p).permute(0, 2, 3, 1)


def gather_thing_kernels(
    outputs: HeadOutputs,
    targets: Targets,
    projection: KernelProjection,
    pos_num: int = 7,
    threshold: float = 0.1,
) -> ThingKernels:
    """Thing kernels of every (slot, level) with their guidance weights
    (docs/original_implementation.md#guidance-weights)."""
    kernels, weights, depth_kernels = [], [], []
    with_depth = all(lv.depth_kernels is not None for lv in outputs.levels)
    for level, tgt in zip(outputs.levels, targets.levels):
        values, index = guidance_topk(level, tgt, pos_num, threshold)
        weights.append(values)
        kernels.append(_gather_positions(level.kernels, index))
        if with_depth:
            depth_kernels.append(_gather_positions(level.depth_kernels, index))
    lv = targets.levels
    projected = projection.project_things(torch.cat(kernels, 1))
    has_stats = with_depth and all(t.thing_depth_count is not None for t in lv)
    return ThingKernels(
        kernels=projected,
        weights=torch.cat(weights, 1),
        depth_kernels=torch.cat(depth_kernels, 1) if with_depth else None,
        valid=torch.cat([t.thing_valid for t in lv], 1),
        masks=torch.cat([t.thing_masks for t in lv], 1),
        depth_count=torch.cat([t.thing_depth_count for t in lv], 1) if has_stats else None,
        depth_mean=torch.cat([t.thing_depth_mean for t in lv], 1) if has_stats else None,
        depth_min=torch.cat([t.thing_depth_min for t in lv], 1) if has_stats else None,
    )


def region_average(maps_bchw: torch.Tensor, masks_bshw: torch.Tensor) -> torch.Tensor:
    """Sum(M * G) / max(Sum M, 1) over positions -> (B, S, C)
    (docs/original_implementation.md#stuff-training-kernels)."""
    total = torch.einsum("bshw,bchw->bsc", masks_bshw, maps_bchw)
    count = masks_bshw.sum((-1, -2)).clamp(min=1).unsqueeze(-1)
    return total / count


def gather_stuff_kernels(
    outputs: HeadOutputs, targets: Targets, projection: KernelProjection
) -> StuffKernels:
    """Stuff kernels of every (present class, level) entry, region-averaged
    (docs/original_implementation.md#stuff-training-kernels)."""
    kernels, depth_kernels = [], []
    with_depth = all(lv.depth_kernels is not None for lv in outputs.levels)
    for level, tgt in zip(outputs.levels, targets.levels):
        kernels.append(region_average(level.kernels, tgt.stuff_masks))
        if with_depth:
            depth_kernels.append(region_average(level.depth_kernels, tgt.stuff_masks))
    lv = targets.levels
    return StuffKernels(
        kernels=projection.project_stuff(torch.cat(kernels, 1)),
        depth_kernels=torch.cat(depth_kernels, 1) if with_depth else None,
        valid=torch.cat([t.stuff_valid for t in lv], 1),
        labels=torch.cat([t.stuff_labels for t in lv], 1),
        classes=torch.cat([t.stuff_classes for t in lv], 1),
    )
