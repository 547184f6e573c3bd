"""Panoptic merge on handmade probability maps, against a literal loop reference."""

from __future__ import annotations

import torch

from panopticdepth.modeling.panoptic_merge import merge_panoptic


def _reference(thing_probs, thing_ids, sem, thing_classes, overlap, limit, with_void):
    """The original's combine loop, written pixel-literally."""
    s, h, w = sem.shape
    pan = torch.zeros((h, w), dtype=torch.long)
    semantic = torch.full((h, w), 255, dtype=torch.long)
    current = s + 1
    maps, ids, cats = [], [], []
    for i in range(thing_probs.shape[0]):
        mask = thing_probs[i] > 0.5
        area = int(mask.sum())
        inter = int((mask & (pan > 0)).sum())
        if area == 0 or inter / area > overlap:
            continue
        if inter > 0:
            mask = mask & (pan == 0)
        current += 1
        pan[mask] = current
        semantic[mask] = int(thing_ids[i])
        maps.append(thing_probs[i])
        ids.append(current)
        cats.append(int(thing_ids[i]))
    arg = sem.argmax(0)
    for c in torch.unique(arg).tolist():
        if c in thing_classes:
            continue
        mask = (arg == c) & (pan == 0)
        if int(mask.sum()) < limit:
            continue
        pan[mask] = c + 1
        semantic[mask] = c
        maps.append(sem[c])
        ids.append(c + 1)
        cats.append(c)
    if with_void:
        return torch.where(semantic == 255, -1, pan), semantic
    stack = torch.stack(maps)
    best = torch.zeros((h, w), dtype=torch.long)
    for y in range(h):
        for x in range(w):
            vals = stack[:, y, x].tolist()
            best[y, x] = vals.index(max(vals))  # first maximum
    return torch.tensor(ids)[best], torch.tensor(cats)[best]


def _merge(things, thing_ids, sem, thing_classes, limit, with_void):
    """Call with only the non-zero stuff channels, as the post-processing does."""
    classes = torch.nonzero(sem.flatten(1).amax(1) > 0).flatten()
    return merge_panoptic(
        things, thing_ids, sem[classes], classes, num_classes=19, thing_class_ids=thing_classes,
        mask_threshold=0.5, overlap_threshold=0.5, stuff_area_limit=limit, with_void=with_void,
    )  # fmt: skip


def _case():
    h, w = 12, 16
    things = torch.zeros(4, h, w)
    things[0, 2:8, 2:8] = 0.9  # accepted first (id 21)
    things[1, 4:10, 4:10] = 0.8  # overlaps 16/36 <= 0.5: trimmed, accepted (id 22)
    things[2, 3:7, 3:7] = 0.7  # fully covered: rejected, consumes no id
    things[3] = 0.3  # nothing above 0.5: area 0, skipped
    thing_ids = torch.tensor([13, 11, 13, 12])
    sem = torch.zeros(19, h, w)
    sem[0, 8:, :] = 0.6  # road at the bottom
    sem[10, :8, :] = 0.55  # sky at the top
    sem[2, :8, 12:] = 0.95  # building, small free area
    sem[11, 8:, 12:] = 0.99  # a thing class in the stuff argmax: skipped
    return things, thing_ids, sem


def test_merge_matches_reference_both_modes():
    things, thing_ids, sem = _case()
    thing_classes = range(11, 19)
    for with_void in (True, False):
        for limit in (1, 20, 40):
            res = _merge(things, thing_ids, sem, thing_classes, limit, with_void)
            ref_seg, ref_cat = _reference(things, thing_ids, sem, thing_classes, 0.5, limit, with_void)
            assert torch.equal(res.segment_id_hw, ref_seg), (with_void, limit)
            if with_void:
                ref_cat = torch.where(ref_seg < 0, 255, ref_cat)
            assert torch.equal(res.category_hw, ref_cat), (with_void, limit)
    res = _merge(things, thing_ids, sem, thing_classes, 40, True)
    assert res.accepted_things.tolist() == [0, 1]
    # free pixels: road 48 - 12 = 36, building 32 (both < 40), sky 96 - 36 - 8 = 52
    assert res.accepted_stuff.tolist() == [10]
    assert (res.segment_id_hw == 22).sum() == 36 - 16


def test_merge_with_nothing_is_void():
    empty = torch.zeros(0, dtype=torch.long)
    res = merge_panoptic(
        torch.zeros(0, 4, 5), empty, torch.zeros(0, 4, 5), empty,
        num_classes=19, thing_class_ids=range(11, 19), stuff_area_limit=100,
    )  # fmt: skip
    assert (res.segment_id_hw == -1).all() and (res.category_hw == 255).all()


def test_no_stuff_kernel_means_road():
    """All-zero stuff map: argmax class 0 (docs/original_implementation.md#stuff-map) takes the free pixels
    with an all-zero map."""
    things = torch.zeros(1, 4, 5)
    things[0, :2] = 0.9
    empty = torch.zeros(0, dtype=torch.long)
    res = merge_panoptic(
        things, torch.tensor([13]), torch.zeros(0, 4, 5), empty,
        num_classes=19, thing_class_ids=range(11, 19), stuff_area_limit=1,
    )  # fmt: skip
    assert res.accepted_stuff.tolist() == [0]
    # DPS argmax: road competes with an all-zero map, so ties (0 vs 0) go to the thing, listed first.
    assert (res.segment_id_hw == 21).all()
