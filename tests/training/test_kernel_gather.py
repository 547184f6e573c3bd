"""Training-time kernel extraction: guidance top-7, region averages, projections."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from panopticdepth.config import Config
from panopticdepth.modeling.kernel_projection import KernelProjection
from panopticdepth.modeling.outputs import HeadOutputs, LevelOutputs
from panopticdepth.training.kernel_gather import gather_stuff_kernels, gather_thing_kernels, guidance_topk
from panopticdepth.training.losses import compute_losses
from panopticdepth.training.targets import build_targets

C = 8
STRIDES = (8, 16, 32, 64, 128)


def TinyProjections(c: int = C) -> KernelProjection:  # noqa: N802 (reads as the class it was)
    torch.manual_seed(0)
    return KernelProjection(nn.Linear(c, c), nn.Linear(c, c))


def random_outputs(batch: int, padded=(64, 128), seed: int = 0) -> HeadOutputs:
    g = torch.Generator().manual_seed(seed)
    hp, wp = padded
    levels = []
    for s in STRIDES:
        h, w = math.ceil(hp / s), math.ceil(wp / s)
        levels.append(
            LevelOutputs(
                torch.randn(batch, 8, h, w, generator=g).requires_grad_(),
                torch.randn(batch, 19, h, w, generator=g).requires_grad_(),
                torch.randn(batch, C, h, w, generator=g).requires_grad_(),
                torch.randn(batch, 18, h, w, generator=g).requires_grad_(),
            )
        )
    return HeadOutputs(
        levels=levels,
        mask_embedding=torch.rand(batch, C, hp // 4, wp // 4, generator=g).requires_grad_(),
        depth_embedding=torch.randn(batch, 16, hp // 4, wp // 4, generator=g).requires_grad_(),
    )


def sample(h=64, w=128, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    semantic = torch.full((h, w), 0, dtype=torch.int64)
    semantic[: h // 3] = 10
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    masks[0, 6:40, 4:30] = True
    masks[1, 10:60, 50:90] = True
    semantic[masks[0]] = 13
    semantic[masks[1]] = 11
    depth = torch.rand(h, w, generator=g) * 40 + 2
    depth[:4] = 0
    return {
        "image": torch.zeros(3, h, w, dtype=torch.uint8), "semantic": semantic, "instance_masks": masks,
        "instance_classes": torch.tensor([2, 0]), "depth": depth, "meta": {},
    }  # fmt: skip


@pytest.fixture()
def setup():
    out = random_outputs(1)
    targets = build_targets([sample()], out, (64, 128), Config())
    return out, targets, TinyProjections()


def test_guidance_topk_brute_force(setup):
    out, targets, _ = setup
    level, tgt = out.levels[0], targets.levels[0]
    values, index = guidance_topk(level, tgt, 7, 0.1)
    h, w = level.center_logits.shape[-2:]
    for t in range(int(tgt.num_things[0])):
        small = F.interpolate(
            tgt.thing_masks[:, t : t + 1], size=(h, w), mode="bilinear", align_corners=False
        )[0, 0]
        cls = int(tgt.thing_classes[0, t])
        cand = sorted(
            (
                float(torch.sigmoid(level.center_logits.detach()[0, cls, y, x]))
                for y in range(h)
                for x in range(w)
                if 0.1 < small[y, x] < 255
            ),
            reverse=True,
        )
        assert len(cand) >= 7
        torch.testing.assert_close(values[0, t], torch.tensor(cand[:7]))
        for k in range(7):
            y, x = divmod(int(index[0, t, k]), w)
            assert 0.1 < small[y, x] < 255


def test_small_levels_pad_with_zero_weight(setup):
    out, targets, _ = setup
    values, index = guidance_topk(out.levels[4], targets.levels[4], 7, 0.1)  # p7 is 1x1
    assert values.shape[-1] == 7 and bool((values[..., 1:] == 0).all()) and bool((index[..., 1:] == 0).all())


def test_thing_kernels_are_projected_gathers(setup):
    out, targets, model = setup
    things = gather_thing_kernels(out, targets, model)
    _, index = guidance_topk(out.levels[0], targets.levels[0], 7, 0.1)
    w = out.levels[0].kernels.shape[-1]
    y, x = divmod(int(index[0, 1, 3]), w)
    raw = out.levels[0].kernels[0, :, y, x]
    expected = model.thing.weight @ raw + model.thing.bias
    torch.testing.assert_close(things.kernels[0, 1, 3], expected)
    torch.testing.assert_close(things.depth_kernels[0, 1, 3], out.levels[0].depth_kernels[0, :, y, x])
    n_slots = sum(lv.thing_masks.shape[1] for lv in targets.levels)
    assert things.kernels.shape == (1, n_slots, 7, C) and int(things.valid.sum()) == targets.num_things


def test_stuff_kernels_region_average_brute_force(setup):
    out, targets, model = setup
    stuff = gather_stuff_kernels(out, targets, model)
    offset = 0
    for level, tgt in zip(out.levels, targets.levels):
        for s in range(tgt.stuff_masks.shape[1]):
            m = tgt.stuff_masks[0, s]
            acc = torch.zeros(C)
            dacc = torch.zeros(18)
            for y, x in zip(*torch.nonzero(m, as_tuple=True)):
                acc += level.kernels[0, :, y, x].detach()
                dacc += level.depth_kernels[0, :, y, x].detach()
            count = max(float(m.sum()), 1.0)
            expected = model.project_stuff(acc / count)
            torch.testing.assert_close(stuff.kernels[0, offset + s], expected, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(stuff.depth_kernels[0, offset + s], dacc / count, rtol=1e-5, atol=1e-6)
        offset += tgt.stuff_masks.shape[1]


def test_gradient_flows_into_guidance(setup):
    out, targets, model = setup
    losses = compute_losses(out, targets, model, Config())
    losses["loss_seg_th"].backward()
    grad = out.levels[0].center_logits.grad
    assert grad is not None and float(grad[0, 2].abs().sum()) > 0 and float(grad[0, 0].abs().sum()) > 0
    # classes without instances get no gradient from the dice
    assert float(grad[0, 5].abs().sum()) == 0
