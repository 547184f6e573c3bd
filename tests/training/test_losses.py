"""Losses against scalar / brute-force references written in the tests."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from panopticdepth.config import Config
from panopticdepth.modeling.depth_generator import depth_maps
from panopticdepth.training.kernel_gather import gather_stuff_kernels, gather_thing_kernels
from panopticdepth.training.losses import (
    compute_losses,
    depth_loss,
    dice_loss,
    focal_loss,
    instance_depth_losses,
)
from panopticdepth.training.targets import build_targets

from .test_kernel_gather import TinyProjections, random_outputs, sample

DEPTH_KEYS = ("loss_depth", "loss_depth_ins")

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


def focal_scalar(x: float, t: float, alpha: float = 0.25, gamma: float = 2.0) -> float:
    p = 1 / (1 + math.exp(-x))
    ce = -(t * math.log(p) + (1 - t) * math.log(1 - p))
    p_t = p * t + (1 - p) * (1 - t)
    a_t = alpha * t + (1 - alpha) * (1 - t)
    return a_t * ce * (1 - p_t) ** gamma


def ltilde_numpy(g: np.ndarray, p: np.ndarray, si: float = 5.0) -> float:
    g = np.maximum(g.astype(np.float64), 1e-6)
    p = np.maximum(p.astype(np.float64), 1e-6)
    d = np.log(g) - np.log(p)
    n = d.size
    return si * (np.mean(d**2) - d.sum() ** 2 / n**2) + math.sqrt(np.mean((1 - p / g) ** 2))


def test_focal_loss_matches_scalar_formula_with_soft_targets():
    x = torch.tensor([-3.0, -0.5, 0.0, 0.7, 4.0, 2.0])
    t = torch.tensor([0.0, 0.3, 1.0, 0.55, 1.0, 0.8])
    got = focal_loss(x, t, 0.25, 2.0)
    for xi, ti, gi in zip(x.tolist(), t.tolist(), got.tolist()):
        assert gi == pytest.approx(focal_scalar(xi, ti), rel=1e-5)


def test_dice_loss_by_hand():
    p = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]])
    t = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    got = dice_loss(p, t)
    assert got[0] == pytest.approx(1 - 2 * 0.5 / (0.5 + 1.0))
    assert got[1] == pytest.approx(1.0)  # empty vs empty: denominator clamped at 1e-8


def test_depth_loss_formula_and_dead_predictions():
    g = torch.tensor([2.0, 5.0, 10.0, 30.0])
    p = torch.tensor([2.5, 4.0, 0.0, 28.0], requires_grad=True)
    got = depth_loss(g, p)
    assert float(got) == pytest.approx(ltilde_numpy(g.numpy(), p.detach().numpy()), rel=1e-5)
    got.backward()
    # clamp at 1e-6 kills the gradient (docs/original_implementation.md#depth-clamp)
    assert torch.isfinite(p.grad).all() and p.grad[2] == 0


def test_depth_loss_empty_and_perfect_are_finite_zero():
    p = torch.zeros(0, requires_grad=True)
    z = depth_loss(torch.zeros(0), p)
    z.backward()
    assert float(z) == 0 and z.requires_grad
    q = torch.tensor([3.0, 4.0], requires_grad=True)
    perfect = depth_loss(torch.tensor([3.0, 4.0]), q)
    perfect.backward()
    assert float(perfect) == pytest.approx(0, abs=1e-6) and torch.isfinite(q.grad).all()


def _run(batch_samples, cfg=None, seed=0):
    cfg = cfg or Config()
    out = random_outputs(len(batch_samples), seed=seed)
    targets = build_targets(batch_samples, out, (64, 128), cfg)
    model = TinyProjections()
    return out, targets, model, compute_losses(out, targets, model, cfg)


def test_position_losses_reference():
    out, targets, _, losses = _run([sample()])
    th = sum(focal_scalar_np(lv.center_logits, t.center).sum() for lv, t in zip(out.levels, targets.levels))
    st = sum(
        focal_scalar_np(lv.region_logits, t.stuff_scores).reshape(1, 19, -1).mean(-1).sum()
        for lv, t in zip(out.levels, targets.levels)
    )
    assert float(losses["loss_pos_th"]) == pytest.approx(th / targets.num_things, rel=1e-4)
    assert float(losses["loss_pos_st"]) == pytest.approx(st / 1, rel=1e-4)


def focal_scalar_np(x: torch.Tensor, t: torch.Tensor, alpha=0.25, gamma=2.0) -> np.ndarray:
    x = x.detach().double().numpy()
    t = t.double().numpy()
    p = 1 / (1 + np.exp(-x))
    ce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    p_t = p * t + (1 - p) * (1 - t)
    return (alpha * t + (1 - alpha) * (1 - t)) * ce * (1 - p_t) ** gamma


def test_segment_losses_brute_force():
    out, targets, model, losses = _run([sample()])
    things = gather_thing_kernels(out, targets, model)
    stuff = gather_stuff_kernels(out, targets, model)
    emb = out.mask_embedding[0].detach().reshape(out.mask_embedding.shape[1], -1)
    total, n_th = 0.0, 0
    for j in range(things.valid.shape[1]):
        if not things.valid[0, j]:
            continue
        n_th += 1
        w = things.weights[0, j].detach()
        w = w / max(float(w.sum()), 1e-8)
        t = things.masks[0, j].flatten()
        for k in range(7):
            p = torch.sigmoid(things.kernels[0, j, k].detach() @ emb)
            dice = 1 - 2 * float((p * t).sum()) / max(float((p * p).sum() + (t * t).sum()), 1e-8)
            total += float(w[k]) * dice
    assert n_th == targets.num_things == 2
    assert float(losses["loss_seg_th"]) == pytest.approx(4.0 * total / n_th, rel=1e-4)
    total, n_st = 0.0, 0
    for j in range(stuff.valid.shape[1]):
        if stuff.valid[0, j]:
            n_st += 1
            p = torch.sigmoid(stuff.kernels[0, j].detach() @ emb)
            t = stuff.labels[0, j].flatten()
            total += 1 - 2 * float((p * t).sum()) / max(float((p * p).sum() + (t * t).sum()), 1e-8)
    assert n_st == targets.num_stuff
    assert float(losses["loss_seg_st"]) == pytest.approx(4.0 * total / n_st, rel=1e-4)


def test_depth_losses_brute_force():
    cfg = Config()
    out, targets, model, losses = _run([sample()], cfg)
    things = gather_thing_kernels(out, targets, model)
    stuff = gather_stuff_kernels(out, targets, model)
    depth = targets.depth[0, 0]
    emb = out.depth_embedding[0].detach()
    gts, preds, ins_g, ins_p = [], [], [], []
    for j in range(things.valid.shape[1]):
        if not things.valid[0, j]:
            continue
        sel = (things.masks[0, j] > 0) & (depth > 0)
        if not sel.any():
            continue
        mean_gt = float(depth[sel].mean())
        for k in range(7):
            dk = things.depth_kernels[0, j, k].detach()
            dmap = depth_maps(dk[None], emb, cfg.model.depth)[0]
            gts.append(depth[sel].numpy())
            preds.append(dmap[sel].numpy())
            ins_g.append(mean_gt)
            ins_p.append(44.0 / (1 + math.exp(-float(dk[0]))))
    for j in range(stuff.valid.shape[1]):
        if (
            stuff.valid[0, j]
            and int(stuff.classes[0, j]) < 11
            and float((stuff.labels[0, j] * (depth > 0)).sum()) > 0
        ):
            sel = (stuff.labels[0, j] > 0.5) & (depth > 0)
            dmap = depth_maps(stuff.depth_kernels[0, j].detach()[None], emb, cfg.model.depth)[0]
            gts.append(depth[sel].numpy())
            preds.append(dmap[sel].numpy())
    expected = 5.0 * ltilde_numpy(np.concatenate(gts), np.concatenate(preds))
    assert float(losses["loss_depth"]) == pytest.approx(expected, rel=1e-4)
    expected_ins = 5.0 * ltilde_numpy(np.array(ins_g), np.array(ins_p))
    assert float(losses["loss_depth_ins"]) == pytest.approx(expected_ins, rel=1e-4)


def test_batch_depth_losses_are_per_image_means():
    a, b = sample(seed=0), sample(seed=1)
    b["depth"][:, :64] = 0
    out2, targets2, model, losses2 = _run([a, b], seed=3)
    per_image = []
    for i, s in enumerate((a, b)):
        out1 = copy.copy(out2)
        out1.levels = [
            type(lv)(
                *(x[i : i + 1] for x in (lv.center_logits, lv.region_logits, lv.kernels, lv.depth_kernels))
            )
            for lv in out2.levels
        ]
        out1.mask_embedding = out2.mask_embedding[i : i + 1]
        out1.depth_embedding = out2.depth_embedding[i : i + 1]
        t1 = build_targets([s], out1, (64, 128), Config())
        per_image.append(compute_losses(out1, t1, model, Config()))
    for key in DEPTH_KEYS:
        expected = (float(per_image[0][key]) + float(per_image[1][key])) / 2
        assert float(losses2[key]) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("normalization", ["T2", "T1", "none"])
def test_compact_and_dense_depth_losses_agree(normalization):
    """The CPU path (only the supervised pixels) and the accelerator path (every pixel, weighted)
    give the same losses and gradients, on a batch with an image that is half without depth."""
    cfg = Config()
    cfg.model.depth.normalization = normalization
    a, b = sample(seed=0), sample(seed=1)
    b["depth"][:, :64] = 0
    results = []
    for compact in (True, False):
        out = random_outputs(2, seed=3)
        targets = build_targets([a, b], out, (64, 128), cfg)
        model = TinyProjections()
        things = gather_thing_kernels(out, targets, model)
        stuff = gather_stuff_kernels(out, targets, model)
        losses = instance_depth_losses(out, targets, things, stuff, cfg, compact=compact)
        sum(losses.values()).backward()
        grads = [out.depth_embedding.grad] + [lv.depth_kernels.grad for lv in out.levels]
        results.append(({k: float(v) for k, v in losses.items()}, grads))
    (compact_losses, compact_grads), (dense_losses, dense_grads) = results
    assert compact_losses.keys() == dense_losses.keys() and compact_losses["loss_depth"] > 0
    for key, value in dense_losses.items():
        assert compact_losses[key] == pytest.approx(value, rel=1e-5)
    assert float(dense_grads[0].abs().sum()) > 0 and sum(float(g.abs().sum()) for g in dense_grads[1:]) > 0
    for g_compact, g_dense in zip(compact_grads, dense_grads):
        torch.testing.assert_close(g_compact, g_dense, rtol=1e-4, atol=1e-6)


def test_empty_image_and_invalid_depth_give_finite_connected_zeros():
    s = sample()
    s["instance_masks"] = s["instance_masks"][:0]
    s["instance_classes"] = s["instance_classes"][:0]
    s["depth"] = torch.zeros_like(s["depth"])
    out, targets, model, losses = _run([s])
    assert set(losses) == {"loss_pos_th", "loss_pos_st", "loss_seg_th", "loss_seg_st", *DEPTH_KEYS}
    for key in ("loss_seg_th", *DEPTH_KEYS):
        assert float(losses[key]) == 0 and losses[key].requires_grad
    sum(losses.values()).backward()
    for lv in out.levels:
        for x in (lv.center_logits, lv.region_logits, lv.kernels):
            assert x.grad is not None and torch.isfinite(x.grad).all()
    assert torch.isfinite(out.depth_embedding.grad).all()


def test_depth_switches():
    cfg = Config()
    cfg.model.depth.enabled = False
    *_, losses = _run([sample()], cfg)
    assert set(losses) == {"loss_pos_th", "loss_pos_st", "loss_seg_th", "loss_seg_st"}
    cfg = Config()
    cfg.train.loss.instance_depth_loss = False
    *_, losses = _run([sample()], cfg)
    assert "loss_depth" in losses and "loss_depth_ins" not in losses
    cfg = Config()
    cfg.model.depth.normalization = "none"
    *_, losses = _run([sample()], cfg)
    assert "loss_depth_ins" not in losses and torch.isfinite(losses["loss_depth"])


def test_t1_supervises_the_minimum_depth():
    cfg = Config()
    cfg.model.depth.normalization = "T1"
    out, targets, model, losses = _run([sample()], cfg)
    things = gather_thing_kernels(out, targets, model)
    g, p = [], []
    depth = targets.depth[0, 0]
    for j in range(things.valid.shape[1]):
        if things.valid[0, j]:
            sel = (things.masks[0, j] > 0) & (depth > 0)
            for k in range(7):
                g.append(float(depth[sel].min()))
                p.append(44.0 / (1 + math.exp(-float(things.depth_kernels[0, j, k, 0]))))
    assert float(losses["loss_depth_ins"]) == pytest.approx(
        5.0 * ltilde_numpy(np.array(g), np.array(p)), rel=1e-4
    )


def test_pixel_depth_variant():
    cfg = Config()
    cfg.model.depth.mode = "pixel"
    out = random_outputs(1)
    out.pixel_depth = (torch.rand(1, 1, 16, 32) * 60).requires_grad_()
    targets = build_targets([sample()], out, (64, 128), cfg)
    losses = compute_losses(out, targets, TinyProjections(), cfg)
    valid = targets.depth > 0
    expected = 5.0 * ltilde_numpy(targets.depth[valid].numpy(), out.pixel_depth.detach()[valid].numpy())
    assert "loss_depth_ins" not in losses
    assert float(losses["loss_depth"]) == pytest.approx(expected, rel=1e-4)
    losses["loss_depth"].backward()
    assert float(out.pixel_depth.grad[~valid].abs().sum()) == 0


def test_focal_targets_are_soft_not_binarised():
    x = torch.zeros(1, 1, 1, 2)
    got = focal_loss(x, torch.tensor([[[[0.6, 1.0]]]]), 0.25, 2.0)
    assert (
        float(got[0, 0, 0, 0]) == pytest.approx(focal_scalar(0.0, 0.6)) and got[0, 0, 0, 0] != got[0, 0, 0, 1]
    )
