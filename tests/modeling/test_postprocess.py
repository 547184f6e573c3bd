"""Post-processing on a handmade head output whose result is known analytically."""

from __future__ import annotations

import math

import pytest
import torch

from panopticdepth.config.model import ModelConfig
from panopticdepth.ids import VOID_ID
from panopticdepth.modeling.kernel_projection import KernelProjection
from panopticdepth.modeling.outputs import HeadOutputs, LevelOutputs
from panopticdepth.modeling.postprocess import postprocess

C = 4
PADDED = (32, 64)
BOX = (slice(2, 6), slice(3, 9))  # thing region at 1/4 resolution
SHIFT_THING, SHIFT_STUFF = 2.0, -1.0


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _identity() -> torch.nn.Linear:
    lin = torch.nn.Linear(C, C)
    lin.weight.data = torch.eye(C)
    lin.bias.data.zero_()
    return lin


def _outputs(void_right: bool = False) -> HeadOutputs:
    """One car (thing class 2) at p3 (1, 2); road everywhere (and a thing class on the right)."""
    levels = []
    for stride in (8, 16, 32, 64, 128):
        h, w = max(PADDED[0] // stride, 1), max(PADDED[1] // stride, 1)
        center = torch.full((1, 8, h, w), -20.0)
        region = torch.full((1, 19, h, w), -20.0)
        region[:, 0] = 5.0
        if void_right:
            region[:, 11, :, w // 2 :] = 8.0
        kernels = torch.zeros(1, C, h, w)
        kernels[:, 1] = 1.0
        depth_k = torch.zeros(1, 18, h, w)
        depth_k[:, 0] = SHIFT_STUFF
        if stride == 8:
            center[0, 2, 1, 2] = 5.0
            kernels[0, :, 1, 2] = torch.tensor([1.0, 0.0, 0.0, 0.0])
            depth_k[0, 0, 1, 2] = SHIFT_THING
        levels.append(LevelOutputs(center, region, kernels, depth_k))
    emb = torch.zeros(1, C, PADDED[0] // 4, PADDED[1] // 4)
    emb[:, 0] = -8.0
    emb[0, 0, BOX[0], BOX[1]] = 8.0
    emb[:, 1] = 4.0
    depth_emb = torch.zeros(1, 16, PADDED[0] // 4, PADDED[1] // 4)  # D' = 0.5: depth = shift
    return HeadOutputs(levels, emb, depth_emb, pixel_depth=torch.full((1, 1, 8, 16), 5.0))


def _cfg(**depth) -> ModelConfig:
    cfg = ModelConfig()
    cfg.inference.stuff_area_limit = 10
    for k, v in depth.items():
        setattr(cfg.depth, k, v)
    return cfg


MODEL = KernelProjection(_identity(), _identity())


@pytest.mark.parametrize("image_size,output_size", [((30, 60), None), ((30, 60), (45, 90)), ((32, 64), None)])
def test_dps_result_conventions(image_size, output_size):
    cfg = _cfg()
    out_sizes = None if output_size is None else [output_size]
    (res,) = postprocess(_outputs(), MODEL, cfg, [image_size], out_sizes)
    h, w = output_size or image_size
    assert res.panoptic.shape == res.semantic.shape == res.depth.shape == (h, w)
    assert res.sem_seg_probs.shape == (19, h, w)
    # Box centre (1/4 res (3.5, 5.5) -> x4 -> scaled to the output) is the car, a corner is road.
    sy, sx = h / image_size[0], w / image_size[1]
    cy, cx = int(15 * sy), int(23 * sx)
    assert res.panoptic[cy, cx] == 13 * 1000 + 1 and res.segment_ids[cy, cx] == 21
    assert res.panoptic[h - 1, w - 1] == 0 and res.segment_ids[h - 1, w - 1] == 1
    assert res.depth[cy, cx].item() == pytest.approx(44 * _sig(SHIFT_THING), abs=1e-4)
    # Road's depth vector: the region average at p3 (31 road positions + the car's, Eq. 1) and
    # plain SHIFT_STUFF on p4..p7, then the mean over the 5 levels
    # (docs/original_implementation.md#stuff-fusion).
    road_shift = ((31 * SHIFT_STUFF + SHIFT_THING) / 32 + 4 * SHIFT_STUFF) / 5
    assert res.depth[h - 1, w - 1].item() == pytest.approx(44 * _sig(road_shift), abs=1e-4)
    assert set(res.panoptic.unique().tolist()) == {0, 13001}
    areas = {s.id: s.area for s in res.segments}
    assert areas == {13001: int((res.panoptic == 13001).sum()), 0: int((res.panoptic == 0).sum())}
    car = next(s for s in res.segments if s.is_thing)
    assert car.category == 13 and car.instance == 1 and 0 < car.score < 1
    assert res.instance_classes.tolist() == [2] and res.instance_masks.shape == (1, h, w)


def test_depth_clamp_and_pixel_variant():
    (res,) = postprocess(_outputs(), MODEL, _cfg(clamp_max=30.0), [(32, 64)])
    assert res.depth.max().item() == pytest.approx(30.0)  # 44 s(2) = 38.7 clamped
    (res,) = postprocess(_outputs(), MODEL, _cfg(mode="pixel"), [(30, 60)])
    assert torch.allclose(res.depth, torch.full((30, 60), 5.0))


def test_ps_mode_void():
    (res,) = postprocess(_outputs(void_right=True), MODEL, _cfg(enabled=False), [(32, 64)])
    assert res.depth is None
    right = res.segment_ids[:, 40:]
    assert (right == -1).all() and (res.panoptic[:, 40:] == VOID_ID).all()
    assert (res.semantic[:, 40:] == 255).all()
    assert res.panoptic[15, 23] == 13001


def test_nothing_predicted_falls_back_to_road():
    """No centre and no region above threshold: the all-zero stuff map argmaxes to class 0
    (docs/original_implementation.md#stuff-map)."""
    outputs = _outputs()
    for lv in outputs.levels:
        lv.center_logits.fill_(-20.0)
        lv.region_logits.fill_(-20.0)
    for depth_on in (True, False):
        (res,) = postprocess(outputs, MODEL, _cfg(enabled=depth_on), [(30, 60)])
        assert (res.panoptic == 0).all() and (res.segment_ids == 1).all()
        assert [(s.id, s.area) for s in res.segments] == [(0, 30 * 60)]
        assert res.instance_classes.numel() == 0 and res.instance_masks.shape == (0, 30, 60)
        if depth_on:
            assert (res.depth == 0).all()  # road has no depth kernel: 0 = no depth


def test_segment_kernels_follow_the_segment_list():
    """Row i of `segment_kernels` is the projected mask kernel of `segments[i]` (tracking cue)."""
    from panopticdepth.modeling.mask_generation import mask_logits
    from panopticdepth.modeling.postprocess import postprocess_image

    res, details = postprocess_image(_outputs(), 0, MODEL, _cfg(), (32, 64))
    assert res.segment_kernels.shape == (len(res.segments), C)
    rows = {s.id: k for s, k in zip(res.segments, res.segment_kernels)}
    car_kernel = details.instances.kernels[details.merge.accepted_things[0]]
    assert torch.equal(rows[13001], car_kernel)
    road_row = details.kernels.stuff.classes.tolist().index(0)
    assert torch.equal(rows[0], details.kernels.stuff.kernels[road_row])
    # The car's kernel applied to the mask embedding (Eq. 2) is positive on its box only.
    logits = mask_logits(rows[13001][None], _outputs().mask_embedding[0])[0]
    assert bool((logits[BOX] > 0).all()) and float((logits > 0).float().sum()) == logits[BOX].numel()


def test_candidates_merge_low_score_things_like_a_lower_threshold():
    """The car scores below a raised combine threshold: the standard result has no thing, the
    candidates' expanded merge equals the merge with the threshold lowered below its score, and
    admitting no candidate gives the standard result back."""
    from panopticdepth.modeling.postprocess import postprocess_image

    low = _cfg()
    (reference,) = postprocess(_outputs(), MODEL, low, [(30, 60)])
    car_score = next(s for s in reference.segments if s.is_thing).score
    high = _cfg()
    high.inference.combine_instance_threshold = car_score + 1e-3
    (standard,) = postprocess(_outputs(), MODEL, high, [(30, 60)], candidate_score=car_score - 1e-3)
    assert not any(s.is_thing for s in standard.segments)
    cands = standard.candidates
    assert (cands.num_selected, cands.num_candidates) == (0, 1)
    expanded = cands.expanded()
    assert torch.equal(expanded.panoptic, reference.panoptic) and torch.equal(expanded.depth, reference.depth)
    assert [s.rank for s in expanded.segments if s.is_thing] == [0]
    assert all(s.rank == -1 for s in expanded.segments if not s.is_thing)
    assert torch.equal(cands.admit([]).panoptic, standard.panoptic)
    # Cut above the car's score: nothing to offer.
    (none,) = postprocess(_outputs(), MODEL, high, [(30, 60)], candidate_score=car_score + 1e-2)
    assert none.candidates.num_candidates == 0
    with pytest.raises(ValueError, match="ascending unique"):
        postprocess_image(_outputs(), 0, MODEL, high, (30, 60), selection=torch.tensor([3]))
