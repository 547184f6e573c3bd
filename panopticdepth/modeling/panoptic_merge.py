"""Panoptic merge of thing and stuff probability maps (the original's `combine_thing_and_stuff`,
docs/original_implementation.md#panoptic-merge).

Greedy part (both modes): things in score order claim their binary masks unless more than
`overlap_threshold` of the mask is already taken; stuff classes of the stuff argmax claim the
remaining pixels if at least `stuff_area_limit` are left. Its acceptance depends on what earlier
things took, so it is the one loop over instances; everything else is vectorised.

* PS mode (`with_void=True`): the greedy map is the output, unassigned pixels are VOID.
* DPS mode (`with_void=False`, docs/original_implementation.md#dps-argmax-merge): the greedy pass only decides
  which segments compete; every pixel takes the argmax over the stacked probability maps [accepted things in
  acceptance order,
  accepted stuff in ascending class order] (first maximum wins), so there is no VOID.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

VOID_SEGMENT = -1
VOID_CATEGORY = 255


@dataclass
class MergeResult:
    segment_id_hw: torch.Tensor  # (H, W) int64: stuff c+1, things 21, 22, ...; -1 = VOID
    category_hw: torch.Tensor  # (H, W) int64 train id; 255 = VOID
    # Index of the winning entry of `accepted_*` (things first, then stuff) per pixel; -1 = VOID.
    winner_hw: torch.Tensor
    accepted_things: torch.Tensor  # (A,) indices into the thing inputs, acceptance order
    accepted_stuff: torch.Tensor  # (S',) accepted stuff train ids, ascending


def greedy_things(
    thing_masks_nhw: torch.Tensor, overlap_threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy acceptance of score-sorted binary thing masks (the original's order-dependent loop).

    The overlap ratio uses the untrimmed area; a mask is trimmed to free pixels only if it
    intersects. The masks' flat pixel indices travel to the host once and the loop runs there in
    NumPy, so it costs the masks' areas and no device round trip per instance. Returns the accepted
    indices and the (H*W,) map of the accepted slot that owns each pixel (-1 = free).
    """
    n, h, w = thing_masks_nhw.shape
    device = thing_masks_nhw.device
    mask_pixel_m2 = torch.nonzero(thing_masks_nhw.reshape(n, h * w)).cpu().numpy()  # grouped by mask
    areas = np.bincount(mask_pixel_m2[:, 0], minlength=n)
    pixels = np.split(mask_pixel_m2[:, 1], np.cumsum(areas)[:-1])
    owner_p = np.full(h * w, -1, dtype=np.int64)
    accepted: list[int] = []
    for i, area in enumerate(areas.tolist()):
        if area == 0:
            continue
        idx = pixels[i]
        free = owner_p[idx] < 0
        inter = area - int(free.sum())
        if inter / area > overlap_threshold:
            continue
        owner_p[idx[free]] = len(accepted)
        accepted.append(i)
    return (
        torch.tensor(accepted, dtype=torch.long).to(device),
        torch.from_numpy(owner_p).to(device, non_blocking=True),
    )


def _stuff_argmax(
    stuff_probs_chw: torch.Tensor, stuff_classes: torch.Tensor, hw: tuple[int, int]
) -> torch.Tensor:
    """Argmax class of the (num_classes, H, W) stuff map that is 0 outside `stuff_classes`
    (docs/original_implementation.md#stuff-map).

    Only the C' predicted classes are scanned (ascending, first maximum wins); where all of them are
    0 the full map is all-zero and its argmax is class 0 (docs/original_implementation.md#stuff-map).
    """
    if stuff_classes.numel() == 0:
        return torch.zeros(hw, dtype=torch.long, device=stuff_probs_chw.device)
    best_hw, index_hw = stuff_probs_chw.max(0)
    return torch.where(best_hw > 0, stuff_classes[index_hw], 0)


def _first_argmax(parts: list[torch.Tensor]) -> torch.Tensor:
    """argmax over the concatenation of `parts` along dim 0 (first maximum wins), without the copy."""
    best_hw, winner_hw, offset = None, None, 0
    for maps_khw in parts:
        if maps_khw.shape[0] == 0:
            continue
        value_hw, index_hw = maps_khw.max(0)
        if best_hw is None:
            best_hw, winner_hw = value_hw, index_hw + offset
        else:
            take_hw = value_hw > best_hw  # strict: an earlier part keeps ties
            winner_hw = torch.where(take_hw, index_hw + offset, winner_hw)
            best_hw = torch.where(take_hw, value_hw, best_hw)
        offset += maps_khw.shape[0]
    return winner_hw


def _count(values: torch.Tensor, size: int) -> torch.Tensor:
    """`torch.bincount(values, minlength=size)` for values < size, without a host wait for the max."""
    return torch.zeros(size, dtype=torch.long, device=values.device).index_add_(
        0, values, torch.ones_like(values)
    )


def merge_panoptic(
    thing_probs_nhw: torch.Tensor,
    thing_train_ids: torch.Tensor,
    stuff_probs_chw: torch.Tensor,
    stuff_classes: torch.Tensor,
    *,
    num_classes: int,
    thing_class_ids: set[int] | range,
    mask_threshold: float = 0.5,
    overlap_threshold: float = 0.5,
    stuff_area_limit: int = 2048,
    with_void: bool = False,
) -> MergeResult:
    """Merge score-sorted thing probabilities (already gated by the combine threshold) with stuff.

    `thing_train_ids` (N,) are train ids (11..18 for Cityscapes). `stuff_probs_chw` holds the
    probability maps of the predicted stuff classes `stuff_classes` (C',) (ascending, unique); the
    original's (num_classes, H, W) map is 0 for every other class. `thing_class_ids` are the train
    ids skipped by the stuff pass (docs/original_implementation.md#stuff-map).
    """
    h, w = thing_probs_nhw.shape[-2:]
    s = num_classes
    device = thing_probs_nhw.device
    # counter starts at num_classes + 1, incremented before use: 21
    # (docs/original_implementation.md#segment-ids)
    first_thing_id = s + 2
    if thing_probs_nhw.shape[0]:
        accepted_things, winner_p = greedy_things(thing_probs_nhw > mask_threshold, overlap_threshold)
    else:
        accepted_things = torch.zeros(0, dtype=torch.long, device=device)
        winner_p = torch.full((h * w,), -1, dtype=torch.long, device=device)
    num_accepted = accepted_things.numel()
    winner_hw = winner_p.reshape(h, w)
    # Stuff: classes of the stuff argmax, minus thing ids, each needing `stuff_area_limit` free pixels.
    stuff_argmax_hw = _stuff_argmax(stuff_probs_chw, stuff_classes, (h, w))
    free_hw = winner_hw < 0
    present = _count(stuff_argmax_hw.flatten(), s) > 0
    free_area = _count(torch.where(free_hw, stuff_argmax_hw, s).flatten(), s + 1)[:s]
    is_stuff = torch.ones(s, dtype=torch.bool, device=device)
    thing_ids = [c for c in thing_class_ids if 0 <= c < s]
    if thing_ids:
        is_stuff[torch.tensor(thing_ids, dtype=torch.long, device=device)] = False
    accepted_stuff = torch.nonzero(present & is_stuff & (free_area >= stuff_area_limit)).flatten()
    stuff_slot = torch.full((s,), -1, dtype=torch.long, device=device)
    stuff_slot[accepted_stuff] = torch.arange(accepted_stuff.numel(), device=device) + num_accepted
    stuff_winner_hw = torch.where(free_hw, stuff_slot[stuff_argmax_hw], -1)
    winner_hw = torch.where(stuff_winner_hw >= 0, stuff_winner_hw, winner_hw)

    seg_ids = torch.cat([torch.arange(num_accepted, device=device) + first_thing_id, accepted_stuff + 1])
    cats = torch.cat([thing_train_ids[accepted_things].long(), accepted_stuff])
    # nothing recorded: all VOID (the original would crash, docs/original_implementation.md#empty-merge)
    if seg_ids.numel() == 0:
        segment_hw = torch.full((h, w), VOID_SEGMENT, dtype=torch.long, device=device)
        category_hw = torch.full((h, w), VOID_CATEGORY, dtype=torch.long, device=device)
        return MergeResult(segment_hw, category_hw, winner_hw, accepted_things, accepted_stuff)
    if not with_void:
        # DPS: argmax over the stacked full probability maps (first maximum wins,
        # docs/original_implementation.md#dps-argmax-merge).
        row_of_class = torch.full((s,), -1, dtype=torch.long, device=device)
        row_of_class[stuff_classes] = torch.arange(stuff_classes.numel(), device=device)
        rows = row_of_class[accepted_stuff]
        # A kernel-less accepted class (all-zero pixels) competes with an all-zero map.
        if stuff_probs_chw.shape[0] == 0:
            stuff_maps = torch.zeros((rows.numel(), h, w), dtype=thing_probs_nhw.dtype, device=device)
        else:
            stuff_maps = torch.where(
                (rows >= 0).view(-1, 1, 1), stuff_probs_chw[rows.clamp(min=0)], stuff_probs_chw.new_zeros(())
            ).to(thing_probs_nhw.dtype)
        winner_hw = _first_argmax([thing_probs_nhw[accepted_things], stuff_maps])
    valid_hw = winner_hw >= 0
    safe_hw = winner_hw.clamp(min=0)
    segment_hw = torch.where(valid_hw, seg_ids[safe_hw], VOID_SEGMENT)
    category_hw = torch.where(valid_hw, cats[safe_hw], VOID_CATEGORY)
    return MergeResult(segment_hw, category_hw, winner_hw, accepted_things, accepted_stuff)
