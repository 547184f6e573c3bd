"""Post-processing: head outputs -> `PanopticDepthResult` per image.

Per image: kernels (kernel_producer) -> mask logits (Eq. 2) -> thing rescoring / filtering and the
upsampling chain (docs/original_implementation.md#mask-upsampling) -> panoptic merge
(docs/original_implementation.md#panoptic-merge) -> depth of the winning segment (Eq. 3,
docs/original_implementation.md#stuff-depth) clamped to [0, clamp_max].

Resolution paths (docs/original_implementation.md#depth-resize,
docs/original_implementation.md#mask-upsampling): mask *probabilities* go sigma at 1/4 -> bilinear x4 -> crop
to the un-padded input -> resize to the output size; the depth *embedding* is resized directly from
1/4 to the output size (`inference.depth_direct_resize`, the original's behaviour, which stretches
the padding into the image for padded inputs) and the kernels are applied at full resolution.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from ..config.model import ModelConfig
from ..ids import LABEL_DIVISOR, VOID_ID
from .depth_generator import gathered_depth
from .kernel_producer import KernelSet, ProducedKernels, produce_kernels
from .kernel_projection import kernel_projection_of
from .mask_generation import mask_logits
from .outputs import HeadOutputs, PanopticDepthResult, Segment
from .panoptic_merge import MergeResult, merge_panoptic

# Instances upsampled to full resolution at a time (bounds memory at 1024x2048).
_CHUNK = 16


def upsample_probs(
    probs_nhw: torch.Tensor, image_size: tuple[int, int], output_size: tuple[int, int]
) -> torch.Tensor:
    """sigma-maps at 1/4 res -> bilinear x4 -> crop [:h, :w] -> bilinear resize to output
    (docs/original_implementation.md#mask-upsampling)."""
    h, w = image_size
    if probs_nhw.shape[0] == 0:
        return probs_nhw.new_zeros((0, *output_size))
    up = F.interpolate(probs_nhw[None], scale_factor=4, mode="bilinear", align_corners=False)[0, :, :h, :w]
    if (h, w) != tuple(output_size):
        up = F.interpolate(up[None], size=tuple(output_size), mode="bilinear", align_corners=False)[0]
    return up


def upsample_embedding(
    embedding_chw: torch.Tensor, image_size: tuple[int, int], output_size: tuple[int, int], direct: bool
) -> torch.Tensor:
    """Depth-path resize of a 1/4-res map: direct to the output size
    (docs/original_implementation.md#depth-resize) or x4 -> crop -> resize."""
    if direct:
        return F.interpolate(
            embedding_chw[None], size=tuple(output_size), mode="bilinear", align_corners=False
        )[0]
    return upsample_probs(embedding_chw, image_size, output_size)


@dataclass
class ThingInstances:
    """Things after rescoring and filtering (the original's `process_inst`), score order."""

    classes: torch.Tensor  # (M,) thing index
    scores: torch.Tensor  # (M,) rescored
    depth_kernels: torch.Tensor | None  # (M, E)
    probs_lowres: torch.Tensor  # (M, H4, W4) sigmoid mask probabilities at 1/4 resolution
    kernels: torch.Tensor | None = None  # (M, C) projected mask kernels (identity cue for tracking)


def rescore_things(
    things: KernelSet, logits_nhw: torch.Tensor, mask_threshold: float, min_score: float, top_num: int
):
    """Mask rescoring, sort, `score >= min_score`, top `top_num`
    (docs/original_implementation.md#thing-thresholds)."""
    probs = torch.sigmoid(logits_nhw)
    binary = (probs > mask_threshold).to(probs.dtype)
    seg_score = (probs * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
    scores = things.scores * seg_score
    order = torch.argsort(scores, descending=True)
    order = order[scores[order] >= min_score]
    order = order[torch.argsort(scores[order], descending=True)][:top_num]
    dk = None if things.depth_kernels is None else things.depth_kernels[order]
    return ThingInstances(things.classes[order], scores[order], dk, probs[order], things.kernels[order])


@dataclass
class ThingCandidates:
    """Things of one image scored below the combine threshold, kept aside for a tracker.

    An object whose score dips under `inference.combine_instance_threshold` for a frame vanishes
    from that frame and breaks its track. A tracker may instead admit such a low-score instance
    when it continues a track (hysteresis on the score); the merge is then re-run as if the
    admitted instances had passed the threshold. Ranks are positions in the image's score-sorted
    instance list (`Segment.rank`): `0 .. num_selected - 1` are the standard selection,
    `num_selected .. num_selected + num_candidates - 1` the candidates (score >= `min_score`).
    """

    min_score: float
    num_selected: int
    num_candidates: int
    rerun: Callable[[torch.Tensor], PanopticDepthResult]  # instance ranks -> result

    def expanded(self) -> PanopticDepthResult:
        """The image merged with every candidate (their segments have ranks >= num_selected)."""
        return self.admit(range(self.num_selected, self.num_selected + self.num_candidates))

    def admit(self, ranks: Sequence[int]) -> PanopticDepthResult:
        """The image merged with the standard selection plus the candidates of `ranks`."""
        end = self.num_selected + self.num_candidates
        extra = sorted({int(r) for r in ranks if self.num_selected <= int(r) < end})
        selection = torch.tensor([*range(self.num_selected), *extra], dtype=torch.long)
        return self.rerun(selection)


@dataclass
class ImageDetails:
    """Intermediates of one image, for conformance tests and debugging."""

    kernels: ProducedKernels
    thing_mask_logits: torch.Tensor
    stuff_mask_logits: torch.Tensor
    instances: ThingInstances
    merge: MergeResult
    combine_kept: int
    extras: dict[str, Any] = field(default_factory=dict)


def postprocess_image(
    outputs: HeadOutputs,
    b: int,
    model: Any,
    cfg: ModelConfig,
    image_size: tuple[int, int],
    output_size: tuple[int, int] | None = None,
    with_instance_masks: bool = True,
    with_sem_seg: bool = True,
    *,
    selection: torch.Tensor | None = None,
    candidate_score: float | None = None,
) -> tuple[PanopticDepthResult, ImageDetails]:
    """Post-process image `b` of a batch; `model` is the network (or its `kernel_projection`).

    The steps in the paper's order: kernel producer -> mask logits and thing rescoring ->
    upsampling -> panoptic merge -> depth -> result. `with_instance_masks` / `with_sem_seg` fill
    the full-resolution extras of the result (all instance masks, the 19-class stuff
    probabilities); the CLI skips them for speed. `selection` (ascending ranks in the score-sorted
    instance list) replaces the instances that enter the merge, by default those scored at least
    `inference.combine_instance_threshold`; `candidate_score` attaches the lower-scored instances
    down to that score as `result.candidates` (`ThingCandidates`, for tracking).
    """
    out_size = output_size if output_size is not None else image_size
    kernels = _image_kernels(outputs, b, kernel_projection_of(model), cfg)
    embed_chw = outputs.mask_embedding[b].float()
    thing_logits, inst, standard = _thing_instances(kernels.things, embed_chw, cfg)
    selected = standard if selection is None else _checked_selection(selection, inst)
    combine_probs, instance_masks = _upsampled_things(
        inst, selected, image_size, out_size, cfg.inference.mask_threshold, with_instance_masks
    )
    stuff_logits, stuff_probs, sem_shw = _stuff_maps(
        kernels.stuff, embed_chw, image_size, out_size, cfg.num_classes, with_sem_seg
    )
    merge = _merge(combine_probs, inst, selected, stuff_probs, kernels.stuff, cfg)
    depth_hw = None
    if cfg.depth.enabled:  # depth of the merged segments, clamped to [0, clamp_max]
        depth_hw = _merged_depth(outputs, b, cfg, image_size, out_size, inst, kernels.stuff, merge)
        depth_hw = depth_hw.clamp(0.0, cfg.depth.clamp_max)
    result = _build_result(merge, sem_shw, depth_hw, inst, kernels.stuff, instance_masks, cfg)
    if candidate_score is not None:
        num_low = int((inst.scores[standard.numel() :] >= candidate_score).sum())
        rerun = partial(
            _rerun, outputs, b, model, cfg, (image_size, out_size), (with_instance_masks, with_sem_seg)
        )
        result.candidates = ThingCandidates(float(candidate_score), standard.numel(), num_low, rerun)
    details = ImageDetails(kernels, thing_logits, stuff_logits, inst, merge, int(selected.numel()))
    return result, details


def _rerun(
    outputs: HeadOutputs,
    b: int,
    model: Any,
    cfg: ModelConfig,
    sizes: tuple[tuple[int, int], tuple[int, int]],
    extras: tuple[bool, bool],
    selection: torch.Tensor,
) -> PanopticDepthResult:
    """`postprocess_image` again with another instance selection (`ThingCandidates.rerun`)."""
    device = outputs.mask_embedding.device
    with torch.inference_mode(), torch.autocast(device_type=device.type, enabled=False):
        result, _ = postprocess_image(outputs, b, model, cfg, *sizes, *extras, selection=selection.to(device))
    return result


def _checked_selection(selection: torch.Tensor, inst: ThingInstances) -> torch.Tensor:
    sel = selection.to(device=inst.scores.device, dtype=torch.long).flatten()
    m = int(inst.scores.numel())
    if sel.numel() and (int(sel.min()) < 0 or int(sel.max()) >= m or bool((sel[1:] <= sel[:-1]).any())):
        raise ValueError(f"instance selection must be ascending unique ranks below {m}, got {sel.tolist()}")
    return sel


def _image_kernels(outputs: HeadOutputs, b: int, projection: Any, cfg: ModelConfig) -> ProducedKernels:
    """Kernel producer: the projected, fused thing and stuff kernels of image `b`."""
    levels = outputs.levels
    if not (cfg.depth.enabled and cfg.depth.mode == "instance"):
        # Depth kernels unused: do not carry them around.
        levels = [type(lv)(lv.center_logits, lv.region_logits, lv.kernels, None) for lv in levels]
    return produce_kernels(levels, b, projection, cfg.inference)


def _thing_instances(
    things: KernelSet, embed_chw: torch.Tensor, cfg: ModelConfig
) -> tuple[torch.Tensor, ThingInstances, torch.Tensor]:
    """Thing mask logits (Eq. 2), rescoring and filtering; also the ranks of the instances that
    enter the merge (a prefix: the scores are sorted)."""
    inf = cfg.inference
    thing_logits = mask_logits(things.kernels, embed_chw)
    inst = rescore_things(things, thing_logits, inf.mask_threshold, inf.rescore_min, inf.top_num)
    kept = int((inst.scores >= inf.combine_instance_threshold).sum())
    return thing_logits, inst, torch.arange(kept, device=inst.scores.device)


def _upsampled_things(
    inst: ThingInstances,
    selected: torch.Tensor,
    image_size: tuple[int, int],
    output_size: tuple[int, int],
    mask_threshold: float,
    with_instance_masks: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Full-resolution probabilities of the `selected` instances (for the merge) and, when asked
    for, the binary masks of all instances; `_CHUNK` instances at a time."""
    out_h, out_w = output_size
    device = inst.probs_lowres.device
    chosen = selected.tolist()
    rows = list(range(int(inst.classes.numel()))) if with_instance_masks else chosen
    wanted = set(chosen)
    combine_chunks: list[torch.Tensor] = []
    mask_chunks: list[torch.Tensor] = []
    for start in range(0, len(rows), _CHUNK):
        idx = rows[start : start + _CHUNK]
        up = upsample_probs(inst.probs_lowres[idx], image_size, output_size)
        keep = [k for k, i in enumerate(idx) if i in wanted]
        if keep:
            combine_chunks.append(up if len(keep) == len(idx) else up[keep])
        if with_instance_masks:
            mask_chunks.append(up > mask_threshold)
    combine_probs = (
        torch.cat(combine_chunks) if combine_chunks else torch.zeros((0, out_h, out_w), device=device)
    )
    instance_masks = None
    if with_instance_masks:
        empty = torch.zeros((0, out_h, out_w), dtype=torch.bool, device=device)
        instance_masks = torch.cat(mask_chunks) if mask_chunks else empty
    return combine_probs, instance_masks


def _stuff_maps(
    stuff: KernelSet,
    embed_chw: torch.Tensor,
    image_size: tuple[int, int],
    output_size: tuple[int, int],
    num_classes: int,
    with_sem_seg: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Stuff mask logits and full-resolution probabilities of the predicted classes
    (docs/original_implementation.md#stuff-map); the (num_classes, H, W) `sem_seg` of the original
    (0 for the other classes) is built only when asked for."""
    stuff_logits = mask_logits(stuff.kernels, embed_chw)
    stuff_probs = upsample_probs(torch.sigmoid(stuff_logits), image_size, output_size)
    sem_shw = None
    if with_sem_seg:
        sem_shw = torch.zeros((num_classes, *output_size), device=embed_chw.device)
        sem_shw[stuff.classes] = stuff_probs
    return stuff_logits, stuff_probs, sem_shw


def _merge(
    combine_probs: torch.Tensor,
    inst: ThingInstances,
    selected: torch.Tensor,
    stuff_probs: torch.Tensor,
    stuff: KernelSet,
    cfg: ModelConfig,
) -> MergeResult:
    """Panoptic merge: PS mode keeps VOID, DPS mode takes the probability argmax. The result's
    `accepted_things` are ranks in `inst` (indices into its score-sorted instances)."""
    inf = cfg.inference
    merge = merge_panoptic(
        combine_probs,
        inst.classes[selected] + cfg.first_thing_id,
        stuff_probs,
        stuff.classes,
        num_classes=cfg.num_classes,
        thing_class_ids=range(cfg.first_thing_id, cfg.num_classes),
        mask_threshold=inf.mask_threshold,
        overlap_threshold=inf.combine_overlap_threshold,
        stuff_area_limit=inf.stuff_area_limit,
        with_void=not cfg.depth.enabled,
    )
    merge.accepted_things = selected[merge.accepted_things]
    return merge


def _merged_depth(
    outputs: HeadOutputs,
    b: int,
    cfg: ModelConfig,
    image_size: tuple[int, int],
    output_size: tuple[int, int],
    inst: ThingInstances,
    stuff: KernelSet,
    merge: MergeResult,
) -> torch.Tensor:
    """Per-pixel depth of the winning segment (docs/original_implementation.md#stuff-depth) or the resized
    pixel-wise map (variant A)."""
    direct = cfg.inference.depth_direct_resize
    if cfg.depth.mode == "pixel":
        if outputs.pixel_depth is None:
            raise ValueError("depth.mode=pixel needs HeadOutputs.pixel_depth")
        return upsample_embedding(outputs.pixel_depth[b].float(), image_size, output_size, direct)[0]
    if outputs.depth_embedding is None or inst.depth_kernels is None or stuff.depth_kernels is None:
        raise ValueError("instance-wise depth needs the depth embedding and depth kernels")
    embed_ehw = upsample_embedding(outputs.depth_embedding[b].float(), image_size, output_size, direct)
    e = stuff.depth_kernels.shape[1]
    # Depth kernels of the stacked segments: accepted things, then accepted stuff classes.
    stuff_rows = torch.full((cfg.num_classes,), -1, dtype=torch.long, device=embed_ehw.device)
    stuff_rows[stuff.classes] = torch.arange(len(stuff), device=embed_ehw.device)
    rows = stuff_rows[merge.accepted_stuff]
    if len(stuff):  # accepted classes without a kernel of their own get zeros
        stuff_dk = torch.where((rows >= 0)[:, None], stuff.depth_kernels[rows.clamp(min=0)], 0.0)
    else:
        stuff_dk = torch.zeros((rows.numel(), e), device=embed_ehw.device)
    kernels_ke = torch.cat([inst.depth_kernels[merge.accepted_things], stuff_dk])
    if kernels_ke.shape[0] == 0:
        return torch.zeros(output_size, device=embed_ehw.device)
    winner_hw = merge.winner_hw
    depth_hw = gathered_depth(kernels_ke, winner_hw.clamp(min=0), embed_ehw, cfg.depth)
    # VOID pixels and stuff classes that won the argmax without a kernel of their own get 0.
    has_kernel = torch.cat(
        [torch.ones(merge.accepted_things.numel(), dtype=torch.bool, device=rows.device), rows >= 0]
    )
    valid_hw = (winner_hw >= 0) & has_kernel[winner_hw.clamp(min=0)]
    return torch.where(valid_hw, depth_hw, torch.zeros_like(depth_hw))


def _build_result(
    merge: MergeResult,
    sem_shw: torch.Tensor | None,
    depth_hw: torch.Tensor | None,
    inst: ThingInstances,
    stuff: KernelSet,
    instance_masks: torch.Tensor | None,
    cfg: ModelConfig,
) -> PanopticDepthResult:
    """panoptic = category * 1000 + instance (stuff 0, things segment id - (num_classes + 1))."""
    num_classes = cfg.num_classes
    seg_hw, cat_hw = merge.segment_id_hw, merge.category_hw
    is_thing_hw = seg_hw > num_classes + 1
    instance_hw = torch.where(is_thing_hw, seg_hw - (num_classes + 1), torch.zeros_like(seg_hw))
    void_hw = seg_hw < 0
    panoptic_hw = torch.where(void_hw, VOID_ID, cat_hw * LABEL_DIVISOR + instance_hw)
    # Segments actually present, with areas from one count over the stacked slots; every per-segment
    # number travels to the host in one copy.
    num_things = merge.accepted_things.numel()
    num_stuff = merge.accepted_stuff.numel()
    slots = num_things + num_stuff
    areas = torch.zeros(slots + 1, dtype=torch.float64, device=seg_hw.device).index_add_(
        0,
        (merge.winner_hw + 1).flatten(),
        torch.ones(seg_hw.numel(), dtype=torch.float64, device=seg_hw.device),
    )[1:]
    stuff_score_of_class = torch.zeros(num_classes, dtype=torch.float64, device=seg_hw.device)
    stuff_score_of_class[stuff.classes] = stuff.scores.double()
    host = torch.cat(
        [
            areas,
            inst.scores[merge.accepted_things].double(),
            (inst.classes[merge.accepted_things] + cfg.first_thing_id).double(),
            merge.accepted_things.double(),
            merge.accepted_stuff.double(),
            stuff_score_of_class[merge.accepted_stuff],
        ]
    ).tolist()
    areas_k = host[:slots]
    thing_scores = host[slots : slots + num_things]
    thing_cats = host[slots + num_things : slots + 2 * num_things]
    thing_ranks = host[slots + 2 * num_things : slots + 3 * num_things]
    stuff_cats = host[slots + 3 * num_things : slots + 3 * num_things + num_stuff]
    stuff_scores = host[slots + 3 * num_things + num_stuff :]
    segments: list[Segment] = []
    slot_rows: list[int] = []
    for k in range(slots):
        if areas_k[k] == 0:
            continue
        slot_rows.append(k)
        rank = -1
        if k < num_things:
            cat, instance, score = int(thing_cats[k]), k + 1, float(thing_scores[k])
            rank = int(thing_ranks[k])
        else:
            cat, instance, score = int(stuff_cats[k - num_things]), 0, float(stuff_scores[k - num_things])
        segments.append(
            Segment(cat * LABEL_DIVISOR + instance, cat, instance, instance > 0, score, int(areas_k[k]), rank)
        )
    return PanopticDepthResult(
        panoptic=panoptic_hw,
        semantic=cat_hw,
        depth=depth_hw,
        segments=segments,
        segment_ids=seg_hw,
        sem_seg_probs=sem_shw,
        segment_kernels=_segment_kernels(merge, inst, stuff, slot_rows, cfg.num_classes),
        instance_classes=inst.classes,
        instance_scores=inst.scores,
        instance_masks=instance_masks,
    )


def _segment_kernels(
    merge: MergeResult, inst: ThingInstances, stuff: KernelSet, slot_rows: list[int], num_classes: int
) -> torch.Tensor | None:
    """(len(segments), C) mask kernel of each kept segment: what a tracker compares across frames.

    Stuff classes that won pixels without a kernel of their own get a zero row.
    """
    if inst.kernels is None:
        return None
    c = stuff.kernels.shape[1]
    device = stuff.kernels.device
    stuff_rows = torch.full((num_classes,), -1, dtype=torch.long, device=device)
    stuff_rows[stuff.classes] = torch.arange(len(stuff), device=device)
    rows = stuff_rows[merge.accepted_stuff]
    stuff_k = torch.zeros((rows.numel(), c), dtype=stuff.kernels.dtype, device=device)
    stuff_k[rows >= 0] = stuff.kernels[rows[rows >= 0]]
    slots_k = torch.cat([inst.kernels[merge.accepted_things].to(stuff_k.dtype), stuff_k])
    return slots_k[torch.tensor(slot_rows, dtype=torch.long, device=device)]


def postprocess(
    outputs: HeadOutputs,
    model: Any,
    cfg: ModelConfig,
    image_sizes: Sequence[tuple[int, int]],
    output_sizes: Sequence[tuple[int, int]] | None = None,
    with_instance_masks: bool = True,
    with_sem_seg: bool = True,
    candidate_score: float | None = None,
) -> list[PanopticDepthResult]:
    """One `PanopticDepthResult` per image of the batch, at `output_sizes` (default: the input sizes).

    `image_sizes` are the un-padded input sizes (H, W); `model` is the network (or its
    `kernel_projection`), which supplies the thing/stuff kernel projections. Runs in float32
    whatever precision the network used. `candidate_score`: attach `ThingCandidates` (tracking).
    """
    results = []
    with torch.autocast(device_type=outputs.mask_embedding.device.type, enabled=False):
        for b, size in enumerate(image_sizes):
            out_size = output_sizes[b] if output_sizes is not None else size
            result, _ = postprocess_image(
                outputs,
                b,
                model,
                cfg,
                tuple(size),
                tuple(out_size),
                with_instance_masks,
                with_sem_seg,
                candidate_score=candidate_score,
            )
            results.append(result)
    return results
