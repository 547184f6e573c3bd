"""Kernel producer at inference: candidate selection per level, adaptive kernel fusion (Eq. 1),
level merging and the class-specific cosine fusion of thing kernels
(docs/original_implementation.md#thing-candidates to docs/original_implementation.md#stuff-fusion).

All functions work on ONE image (the original is batch-size-1 only,
docs/original_implementation.md#batch-size-one); the caller slices the batch. Shapes: C = kernel channels
(256), E = depth-kernel channels (kernel_dim + 2),
K = thing classes (8), S = region classes (19).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config.model import InferenceConfig
from .kernel_projection import KernelProjection
from .outputs import LevelOutputs


@dataclass
class KernelSet:
    """Kernels of one kind (things or stuff) for one image, row i = one candidate/segment."""

    kernels: torch.Tensor  # (N, C) mask kernels (raw before projection, projected after)
    classes: torch.Tensor  # (N,) int64: thing index 0..K-1, or region class 0..S-1 for stuff
    scores: torch.Tensor  # (N,)
    depth_kernels: torch.Tensor | None = None  # (N, E)

    def __len__(self) -> int:
        return int(self.classes.numel())

    def select(self, index: torch.Tensor) -> KernelSet:
        dk = None if self.depth_kernels is None else self.depth_kernels[index]
        return KernelSet(self.kernels[index], self.classes[index], self.scores[index], dk)


def _empty(c: int, e: int | None, device: torch.device, dtype: torch.dtype) -> KernelSet:
    dk = None if e is None else torch.zeros((0, e), device=device, dtype=dtype)
    return KernelSet(
        torch.zeros((0, c), device=device, dtype=dtype),
        torch.zeros(0, dtype=torch.long, device=device),
        torch.zeros(0, device=device, dtype=dtype),
        dk,
    )


def topk_candidates(score_khw: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Joint class/position top-k as the original: per-class top-k, then top-k of the k*K
    (docs/original_implementation.md#thing-candidates).

    Returns (scores (k,), classes (k,), flat positions y*w + x (k,)), in descending score order.
    """
    num_classes = score_khw.shape[0]
    per_class_scores, per_class_pos = torch.topk(score_khw.reshape(num_classes, -1), k)
    scores, flat = torch.topk(per_class_scores.reshape(-1), k)
    classes = torch.div(flat, k, rounding_mode="floor")
    positions = per_class_pos.reshape(-1)[flat]
    return scores, classes, positions


def thing_candidates(
    level: LevelOutputs, b: int, pool_size: int, cfg: InferenceConfig
) -> tuple[KernelSet, torch.Tensor]:
    """Thing centre candidates of one level (docs/original_implementation.md#thing-candidates).

    sigmoid -> (S + avgpool_k(S)) / 2 with zero padding counted -> 3x3 max-pool peak test (plateaus
    all survive) -> joint top-min(h*w, top_num // 2) -> strict `> thing_threshold`. Returns the raw
    (un-projected) kernels at the peaks and the flat positions.
    """
    score_khw = torch.sigmoid(level.center_logits[b].float())
    pooled = F.avg_pool2d(
        score_khw[None], pool_size, stride=1, padding=(pool_size - 1) // 2, count_include_pad=True
    )
    score_khw = (score_khw + pooled[0]) / 2
    peaks = F.max_pool2d(score_khw[None], 3, stride=1, padding=1)[0] == score_khw
    score_khw = score_khw * peaks
    h, w = score_khw.shape[-2:]
    k = min(h * w, cfg.top_num // 2)
    scores, classes, positions = topk_candidates(score_khw, k)
    keep = torch.nonzero(scores > cfg.thing_threshold).flatten()  # one compaction for the three
    scores, classes, positions = scores[keep], classes[keep], positions[keep]
    kernels_nc = level.kernels[b].float().flatten(1)[:, positions].t()
    dk = None
    if level.depth_kernels is not None:
        dk = level.depth_kernels[b].float().flatten(1)[:, positions].t()
    return KernelSet(kernels_nc, classes, scores, dk), positions


def stuff_candidates(level: LevelOutputs, b: int, cfg: InferenceConfig) -> KernelSet:
    """Stuff class candidates of one level with the adaptive kernel fusion of Eq. 1
    (docs/original_implementation.md#stuff-akf).

    Region `M_c = [argmax == c] & [prob_c >= region_threshold]`. The class score and the mask
    kernel divide by the argmax count n_c; the depth-kernel vector divides by max(|M_c|, 1) — the
    original's inconsistent denominators, reproduced. Classes ascending; keep score > threshold.
    """
    prob_sp = torch.sigmoid(level.region_logits[b].float()).flatten(1)
    s = prob_sp.shape[0]
    best_p, argmax_p = prob_sp.max(0)  # first maximum, as argmax
    # Counts and region sums by scatter-adds of 0/1 weights over all positions: the same sums as
    # over the selected positions (adding exact zeros), with no data-dependent sizes to wait for.
    count_s = _class_sum(argmax_p, torch.ones_like(best_p)[:, None], s)[:, 0]
    # The region of each position's argmax class: keep positions whose probability >= threshold.
    in_region_p = (best_p >= cfg.stuff_region_threshold).to(best_p.dtype)
    region_count_s = _class_sum(argmax_p, in_region_p[:, None], s)[:, 0]
    score_s = _class_sum(argmax_p, (best_p * in_region_p)[:, None], s)[:, 0]

    def region_sum(maps_bchw: torch.Tensor) -> torch.Tensor:
        values_pc = maps_bchw[b].float().flatten(1).t() * in_region_p[:, None]
        return _class_sum(argmax_p, values_pc, s)

    # One compaction: present classes (argmax somewhere) whose score passes the threshold.
    keep = torch.nonzero((count_s > 0) & (score_s / count_s.clamp(min=1) > cfg.stuff_threshold)).flatten()
    count_k = count_s[keep]
    kernels_kc = region_sum(level.kernels)[keep] / count_k[:, None]
    dk = None
    if level.depth_kernels is not None:
        dk = region_sum(level.depth_kernels)[keep] / region_count_s[keep, None].clamp(min=1)
    return KernelSet(kernels_kc, keep, score_s[keep] / count_k, dk)


def _class_sum(class_p: torch.Tensor, values_pc: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, C) sums of the rows of `values_pc` by their class (a bincount of known size)."""
    out = torch.zeros((num_classes, values_pc.shape[1]), dtype=values_pc.dtype, device=values_pc.device)
    return out.index_add_(0, class_p, values_pc)


def _cat(sets: Sequence[KernelSet]) -> KernelSet:
    dk = None
    if sets[0].depth_kernels is not None:
        dk = torch.cat([s.depth_kernels for s in sets])
    return KernelSet(
        torch.cat([s.kernels for s in sets]),
        torch.cat([s.classes for s in sets]),
        torch.cat([s.scores for s in sets]),
        dk,
    )


def fuse_thing_kernels(things: KernelSet, threshold: float, class_specific: bool = True) -> KernelSet:
    """Class-specific cosine-similarity fusion in the original's matrix form
    (docs/original_implementation.md#thing-fusion).

    `things` must be sorted by score. L = triu(cos) >= thr (& same class); C = cumsum(L, rows) < 2;
    row i is kept iff C[i, i]; its group {j : L[i, j] & C[i, j]} is averaged (mask kernels and raw
    depth-kernel vectors alike). A kernel first claimed by a dropped row disappears, as in the code.
    """
    if len(things) == 0:
        return things
    unit_nc = things.kernels / things.kernels.norm(dim=1, keepdim=True).clamp(min=1e-8)
    label_nn = (unit_nc @ unit_nc.t()).triu(diagonal=0) >= threshold
    if class_specific:
        label_nn &= things.classes[:, None] == things.classes[None, :]
    claim_nn = label_nn.float().cumsum(0) < 2
    keep = torch.nonzero(claim_nn.diagonal()).flatten()  # one compaction for every use below
    group_mn = (label_nn[keep] & claim_nn[keep]).to(things.kernels.dtype)
    norm_m1 = group_mn.sum(1, keepdim=True)
    dk = None
    if things.depth_kernels is not None:
        dk = _group_mean(group_mn, norm_m1, things.depth_kernels)
    return KernelSet(group_mn @ things.kernels / norm_m1, things.classes[keep], things.scores[keep], dk)


def _group_mean(group_mn: torch.Tensor, norm_m1: torch.Tensor, values_nd: torch.Tensor) -> torch.Tensor:
    """Mean of the rows of `values_nd` selected by each row of the 0/1 matrix `group_mn`."""
    return group_mn.to(values_nd.dtype) @ values_nd / norm_m1.to(values_nd.dtype)


def fuse_stuff_kernels(stuff: KernelSet) -> KernelSet:
    """Mean per class over all levels of kernels, scores and depth vectors; classes ascending
    (docs/original_implementation.md#stuff-fusion)."""
    if len(stuff) == 0:
        return stuff
    classes, inverse = torch.unique(stuff.classes, sorted=True, return_inverse=True)
    group_mn = F.one_hot(inverse, classes.numel()).t().to(stuff.kernels.dtype)
    norm_m1 = group_mn.sum(1, keepdim=True)
    dk = None if stuff.depth_kernels is None else _group_mean(group_mn, norm_m1, stuff.depth_kernels)
    scores = _group_mean(group_mn, norm_m1, stuff.scores[:, None])[:, 0]
    return KernelSet(group_mn @ stuff.kernels / norm_m1, classes, scores, dk)


@dataclass
class ProducedKernels:
    """Per-image kernels before and after fusion (the pre-fusion sets serve conformance checks)."""

    things_prefusion: KernelSet
    stuff_prefusion: KernelSet
    things: KernelSet  # fused, projected, score order
    stuff: KernelSet  # fused, projected, ascending class


def produce_kernels(
    levels: Sequence[LevelOutputs],
    b: int,
    projection: KernelProjection,
    cfg: InferenceConfig,
) -> ProducedKernels:
    """All inference kernels of image `b`: candidates, level merge, thing and stuff fusion.

    `projection` is the network's `kernel_projection` (the original's 1x1 `embed_extractor` convs,
    i.e. affine maps on each C-vector), the same one the losses call.
    """
    if len(cfg.pool_sizes) < len(levels):
        raise ValueError(f"inference.pool_sizes has {len(cfg.pool_sizes)} entries for {len(levels)} levels")
    ref = levels[0].kernels
    c = ref.shape[1]
    e = None if levels[0].depth_kernels is None else levels[0].depth_kernels.shape[1]
    thing_sets = [thing_candidates(lv, b, cfg.pool_sizes[i], cfg)[0] for i, lv in enumerate(levels)]
    stuff_sets = [stuff_candidates(lv, b, cfg) for lv in levels]
    things = _cat(thing_sets) if thing_sets else _empty(c, e, ref.device, torch.float32)
    stuff = _cat(stuff_sets) if stuff_sets else _empty(c, e, ref.device, torch.float32)
    # Sort all thing candidates by score (argsort, as the original:
    # docs/original_implementation.md#level-merge).
    order = torch.argsort(things.scores, descending=True)
    things = things.select(order)
    things = KernelSet(
        projection.project_things(things.kernels), things.classes, things.scores, things.depth_kernels
    )
    stuff = KernelSet(
        projection.project_stuff(stuff.kernels), stuff.classes, stuff.scores, stuff.depth_kernels
    )
    fused_things = fuse_thing_kernels(things, cfg.similarity_threshold, cfg.class_specific)
    return ProducedKernels(things, stuff, fused_things, fuse_stuff_kernels(stuff))
