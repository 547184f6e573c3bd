"""Solver of the original recipe: weight-decay groups, coupled-L2 Adam, WarmupPolyLR, value clipping."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from panopticdepth.config import ConfigError
from panopticdepth.config.training import SolverConfig
from panopticdepth.training.solver import (
    autocast_context,
    build_grad_scaler,
    build_lr_scheduler,
    build_optimizer,
    clip_gradients,
    parameter_weight_decay,
)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.gn = nn.GroupNorm(2, 4)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)
        self.frozen = nn.Linear(2, 2)
        for p in self.frozen.parameters():
            p.requires_grad_(False)
        self.shared = self.head  # the same parameters reached twice

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.gn(self.conv(x))).mean(dim=(2, 3))
        return self.head(y)


def test_weight_decay_groups_follow_the_original():
    cfg = SolverConfig(weight_decay=1e-4, weight_decay_norm=0.0, weight_decay_bias=1e-4)
    table = {name: wd for name, _, wd in parameter_weight_decay(_Net(), cfg)}
    # Written out by hand from docs/original_implementation.md#adam-l2.
    expected = {
        "conv.weight": 1e-4,
        "gn.weight": 0.0,
        "gn.bias": 1e-4,  # bias rule applied after the norm rule
        "bn.weight": 0.0,
        "bn.bias": 1e-4,
        "head.weight": 1e-4,
        "head.bias": 1e-4,
    }
    assert table == expected  # frozen params absent, shared params listed once


def test_adam_uses_coupled_l2_not_adamw():
    torch.manual_seed(0)
    lin = nn.Linear(3, 1, bias=False)
    p0 = lin.weight.detach().clone()
    cfg = SolverConfig(base_lr=0.1, weight_decay=0.5)
    opt = build_optimizer(lin, cfg)
    grad = torch.tensor([[0.3, -0.2, 0.1]])
    lin.weight.grad = grad.clone()
    opt.step()
    # First Adam step by hand with g = grad + wd * p (L2 inside the gradient).
    g = grad + 0.5 * p0
    m = (1 - 0.9) * g / (1 - 0.9)
    v = (1 - 0.999) * g * g / (1 - 0.999)
    ref = p0 - 0.1 * m / (v.sqrt() + 1e-8)
    torch.testing.assert_close(lin.weight.detach(), ref, rtol=1e-6, atol=1e-7)
    # AdamW would give p0*(1 - lr*wd) - lr*sign(grad): clearly different here.
    adamw = p0 * (1 - 0.1 * 0.5) - 0.1 * grad.sign()
    assert not torch.allclose(lin.weight.detach(), adamw, atol=1e-3)


def _lr_formula(t: int, base: float, max_iter: int, warm: int, wf: float, power: float) -> float:
    f = wf * (1 - t / warm) + t / warm if t < warm else 1.0
    return base * f * (1 - t / max_iter) ** power


def test_warmup_poly_schedule_per_iteration():
    cfg = SolverConfig(base_lr=1e-4, max_iter=10000, warmup_iters=2000, warmup_factor=0.001, poly_power=0.9)
    opt = build_optimizer(nn.Linear(2, 2), cfg)
    sched = build_lr_scheduler(opt, cfg)
    seen = {}
    for t in range(6001):
        seen[t] = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
    for t in (0, 1, 999, 1999, 2000, 2001, 5000, 6000):
        assert math.isclose(seen[t], _lr_formula(t, 1e-4, 10000, 2000, 0.001, 0.9), rel_tol=1e-9), t
    assert math.isclose(seen[0], 1e-7, rel_tol=1e-9)
    # every group follows the same schedule
    assert len({g["lr"] for g in opt.param_groups}) == 1


def test_scheduler_state_round_trip():
    cfg = SolverConfig(base_lr=1e-3, max_iter=100, warmup_iters=10)
    opt = build_optimizer(nn.Linear(2, 2), cfg)
    sched = build_lr_scheduler(opt, cfg)
    for _ in range(7):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = build_optimizer(nn.Linear(2, 2), cfg)
    opt2.load_state_dict(opt.state_dict())
    sched2 = build_lr_scheduler(opt2, cfg)
    sched2.load_state_dict(state)
    for _ in range(5):
        opt.step()
        sched.step()
        opt2.step()
        sched2.step()
        assert opt.param_groups[0]["lr"] == opt2.param_groups[0]["lr"]


def test_clip_by_value_per_element():
    a = nn.Parameter(torch.zeros(4))
    b = nn.Parameter(torch.zeros(2))
    a.grad = torch.tensor([100.0, -50.0, 3.0, -35.0])
    b.grad = torch.tensor([1.0, 2.0])
    clip_gradients([a, b], 35.0)
    assert a.grad.tolist() == [35.0, -35.0, 3.0, -35.0]  # not rescaled as norm clipping would
    assert b.grad.tolist() == [1.0, 2.0]


def test_autocast_options():
    cpu = torch.device("cpu")
    with pytest.raises(ConfigError, match="fp16"):
        autocast_context("fp16", cpu)
    with pytest.raises(ConfigError, match="amp"):
        autocast_context("int8", cpu)
    x = torch.randn(4, 4)
    with autocast_context("bf16", cpu):
        assert (x @ x).dtype == torch.bfloat16
    with autocast_context("none", cpu):
        assert (x @ x).dtype == torch.float32
    assert build_grad_scaler("bf16", cpu) is None


class _WithBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
        self.backbone[0].relative_position_bias_table = nn.Parameter(torch.zeros(3))
        self.head = nn.Sequential(nn.Linear(2, 2), nn.GroupNorm(1, 2))


def test_swin_recipe_groups_and_backbone_lr():
    cfg = SolverConfig(
        optimizer="adamw",
        base_lr=1e-3,
        weight_decay=0.05,
        weight_decay_bias=0.05,
        weight_decay_norm=0.0,
        weight_decay_norm_bias=0.0,
        weight_decay_embed=0.0,
        backbone_lr_multiplier=0.1,
        warmup_iters=0,
    )
    model = _WithBackbone()
    table = {name: wd for name, _, wd in parameter_weight_decay(model, cfg)}
    assert table == {
        "backbone.0.weight": 0.05,
        "backbone.0.bias": 0.05,
        "backbone.0.relative_position_bias_table": 0.0,  # a weight-like module, excluded by name
        "backbone.1.weight": 0.0,
        "backbone.1.bias": 0.0,  # norm bias: weight_decay_norm_bias, not weight_decay_bias
        "head.0.weight": 0.05,
        "head.0.bias": 0.05,
        "head.1.weight": 0.0,
        "head.1.bias": 0.0,
    }
    opt = build_optimizer(model, cfg)
    assert isinstance(opt, torch.optim.AdamW)
    # base-LR groups first (the engine logs param_groups[0]), then the backbone's at 0.1x
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4])
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    for g in opt.param_groups:
        assert all((id(p) in backbone_ids) == (g["lr"] < 1e-3) for p in g["params"])
    sched = build_lr_scheduler(opt, cfg)
    for _ in range(cfg.max_iter // 2):
        opt.step()
        sched.step()
    ratios = {round(g["lr"] / opt.param_groups[0]["lr"], 6) for g in opt.param_groups}
    assert ratios == {1.0, 0.1}  # the schedule scales every group alike


def test_adamw_decay_is_decoupled():
    lin = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    cfg = SolverConfig(optimizer="adamw", base_lr=0.1, weight_decay=0.5)
    opt = build_optimizer(lin, cfg)
    lin.weight.grad = torch.zeros_like(lin.weight)
    opt.step()
    # zero gradient: Adam's step is 0, only the decoupled decay acts: w * (1 - lr * wd)
    assert torch.allclose(lin.weight.detach(), torch.full((1, 3), 1.0 - 0.1 * 0.5))


def test_default_groups_unchanged_for_the_original_recipe():
    cfg = SolverConfig()
    opt = build_optimizer(_Net(), cfg)
    assert type(opt) is torch.optim.Adam
    assert [(g["weight_decay"], g["lr"], len(g["params"])) for g in opt.param_groups] == [
        (1e-4, 1e-4, 5),
        (0.0, 1e-4, 2),
    ]
    with pytest.raises(ConfigError, match="'adam'.*'adamw'.*sgd"):
        build_optimizer(_Net(), SolverConfig(optimizer="sgd"))


def test_clip_by_value_off_the_cpu_path_hands_torch_the_parameters():
    """Off the CPU, clipping goes through torch's foreach `clip_grad_value_`, which takes the
    parameters: handed their gradients it found no `.grad` and failed on CUDA (an empty list).
    Meta tensors take that path here."""
    p = torch.nn.Parameter(torch.zeros(3, device="meta"))
    p.grad = torch.zeros(3, device="meta")
    clip_gradients([p], 1.0)  # raised RuntimeError (empty tensor list) before the fix
    clip_gradients([torch.nn.Parameter(torch.zeros(2, device="meta"))], 1.0)  # no gradients at all
