"""Typed containers passed between the network, the post-processing, the losses and the CLI.

Shapes use B = batch, Hp x Wp = padded input, H4 x W4 = Hp/4 x Wp/4 (the mask/depth embedding
resolution), h x w = size of one FPN level (p3..p7).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class LevelOutputs:
    """Per-level head outputs (one entry per level p3..p7, shared head weights)."""

    center_logits: torch.Tensor  # (B, num_thing_classes, h, w) thing-centre heat-map logits
    region_logits: torch.Tensor  # (B, num_classes, h, w) stuff-region logits
    kernels: torch.Tensor  # (B, C, h, w) kernel weight map G_l (before the thing/stuff projection)
    depth_kernels: torch.Tensor | None = None  # (B, kernel_dim + 2, h, w): [shift, range, kernel...]


@dataclass
class HeadOutputs:
    """Everything the network computes for a padded image batch."""

    levels: list[LevelOutputs]
    mask_embedding: torch.Tensor  # (B, C, H4, W4) E^m ("encode_feat")
    depth_embedding: torch.Tensor | None = None  # (B, kernel_dim, H4, W4) E^d ("encode_depths")
    # Pixel-wise depth variant (Table 3, A): (B, 1, H4, W4) metres; None otherwise.
    pixel_depth: torch.Tensor | None = None
    # Intermediate features by name (res2..res5, p2..p7, semantic), filled when asked for.
    features: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Segment:
    """One segment of a panoptic result."""

    id: int  # panoptic id = category * 1000 + instance
    category: int  # train id
    instance: int  # 0 for stuff, 1.. for things (acceptance order)
    is_thing: bool
    score: float
    area: int
    # Things: position in the image's score-sorted instance list (stable when the merge is re-run
    # with other instances, `ThingCandidates`); -1 for stuff.
    rank: int = -1


@dataclass
class PanopticDepthResult:
    """Final prediction for one image, at the original image size (H x W)."""

    panoptic: torch.Tensor  # (H, W) int64: category * 1000 + instance (instance 0 for stuff)
    semantic: torch.Tensor  # (H, W) int64 train id (255 where nothing was assigned)
    depth: torch.Tensor | None  # (H, W) float32 metres (0 = no depth), None without a depth branch
    segments: list[Segment] = field(default_factory=list)
    # Extras mirroring the original's outputs, for evaluation and conformance checks.
    segment_ids: torch.Tensor | None = None  # (H, W) original segment ids (stuff c+1, things 21..)
    sem_seg_probs: torch.Tensor | None = None  # (num_classes, H, W)
    instance_classes: torch.Tensor | None = None  # (N,) thing index 0..7, in score order
    instance_scores: torch.Tensor | None = None  # (N,)
    instance_masks: torch.Tensor | None = None  # (N, H, W) bool
    # (len(segments), C) projected mask kernel of each segment, row i = segments[i] (tracking cue).
    segment_kernels: torch.Tensor | None = None
    # Low-score things a tracker may admit (`postprocess.ThingCandidates`); None unless asked for.
    candidates: Any = None
