"""bf16 weight copies for CPU autocast training (`solver.amp_weight_copies`, training/weight_copies.py).

The copies replace autocast's per-op weight casts; the step must give the same bits: losses,
float32 gradients and updated parameters equal to autocast's own casts, step after step.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from panopticdepth.config import load_config
from panopticdepth.data.sample import make_sample
from panopticdepth.data.synthetic.writer import generate
from panopticdepth.modeling import build_model
from panopticdepth.modeling.preprocess import preprocess
from panopticdepth.training.engine import LossModule, default_criterion
from panopticdepth.training.memory_format import apply_channels_last
from panopticdepth.training.solver import build_optimizer, clip_gradients
from panopticdepth.training.weight_copies import WeightCopies, autocast_cast_parameters

SMALL = Path(__file__).resolve().parents[2] / "configs" / "synthetic" / "small_cpu.yaml"


def _samples(n: int, seed: int) -> list[dict]:
    frames = [generate(seed, i, 64, 128) for i in range(n)]
    return [
        make_sample(f.image, f.panoptic.astype("int64"), f.depth, {"image_id": str(i)})
        for i, f in enumerate(frames)
    ]


def _run(copies: bool, channels_last: bool, micro_batches: int, fused: bool, steps: int = 3):
    cfg = load_config(
        SMALL,
        [
            "model.backbone.pretrained=",
            "solver.amp=bf16",
            f"solver.amp_weight_copies={str(copies).lower()}",
            f"train.channels_last={str(channels_last).lower()}",
            f"solver.fused_optimizer={str(fused).lower()}",
        ],
    )
    torch.manual_seed(0)
    model = apply_channels_last(build_model(cfg.model), channels_last).train()
    opt = build_optimizer(model, cfg.solver)
    step_module = LossModule(model, default_criterion, cfg, torch.device("cpu"))
    record = []
    for step in range(steps):
        losses_seen = []
        for j in range(micro_batches):
            batch = _samples(2, seed=10 * step + j)
            x, _ = preprocess([s["image"] for s in batch], cfg.model)
            losses = step_module(x, batch, (int(x.shape[-2]), int(x.shape[-1])))
            sum(losses.values()).backward()
            losses_seen.append({k: v.detach().clone() for k, v in losses.items()})
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        clip_gradients(model.parameters(), cfg.solver.clip_value)
        opt.step()
        opt.zero_grad(set_to_none=True)
        record.append((losses_seen, grads))
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    return record, params, step_module


# The fused Adam kernel updates the weights without bumping their version counters: the copies must
# follow it all the same (the demo's set-up: channels_last, fused, one micro-batch).
@pytest.mark.parametrize("channels_last, micro_batches, fused", [(True, 1, True), (False, 2, False)])
def test_weight_copies_give_autocasts_bits(channels_last, micro_batches, fused):
    ref, ref_params, _ = _run(False, channels_last, micro_batches, fused)
    new, new_params, module = _run(True, channels_last, micro_batches, fused)
    copies = module.weight_copies
    assert copies is not None and len(copies.names) > 20  # in use from the second step on
    for (ref_losses, ref_grads), (new_losses, new_grads) in zip(ref, new):
        for a, b in zip(ref_losses, new_losses):
            assert a.keys() == b.keys()
            for k in a:
                assert torch.equal(a[k], b[k]), k
        assert ref_grads.keys() == new_grads.keys()
        for name, g in ref_grads.items():
            assert new_grads[name].dtype == torch.float32
            assert torch.equal(g, new_grads[name]), name
    for name, p in ref_params.items():
        assert torch.equal(p, new_params[name]), name
    assert all(c.grad is None for c in copies.copies)  # each gradient moved to its parameter


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.GroupNorm(2, 4)
        self.head = nn.Linear(4, 2)  # used inside autocast and again outside
        self.outside = nn.Linear(4, 2)  # used only outside autocast, in float32

    def forward(self, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            f = self.norm(self.conv(x)).mean((2, 3))
            a = self.head(f)
        return a.float().sum() + self.head(f.float()).sum() + self.outside(f.float()).sum()


def test_only_parameters_used_solely_through_one_cast_are_copied():
    torch.manual_seed(0)
    toy = _Toy()
    loss = toy(torch.randn(2, 3, 8, 8))
    names = autocast_cast_parameters(toy, [loss], torch.bfloat16)
    assert names == ["conv.weight", "conv.bias"]
    assert autocast_cast_parameters(toy, [loss], torch.float16) == []


def test_copies_follow_the_optimizer_and_move_gradients():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3)
    copies = WeightCopies(conv, ["weight"], torch.bfloat16)
    x = torch.randn(1, 3, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = copies.call(conv, x)
        ref = nn.functional.conv2d(x, conv.weight, conv.bias)
    assert torch.equal(out, ref)
    out.float().sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.dtype == torch.float32
    assert copies.copies[0].grad is None
    with torch.no_grad():
        conv.weight.add_(1.0)  # as an optimizer step would
    with torch.autocast("cpu", dtype=torch.bfloat16):
        again = copies.call(conv, x)
        ref = nn.functional.conv2d(x, conv.weight, conv.bias)
    assert torch.equal(again, ref)


@pytest.mark.parametrize(
    "overrides, distributed",
    [
        (["solver.amp=none"], False),
        (["solver.amp=bf16"], True),
        (["solver.amp=bf16", "solver.amp_weight_copies=false"], False),
    ],
)
def test_copies_stay_off_where_they_do_not_apply(overrides, distributed):
    cfg = load_config(SMALL, ["model.backbone.pretrained=", *overrides])
    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    module = LossModule(model, default_criterion, cfg, torch.device("cpu"), distributed=distributed)
    batch = _samples(1, seed=0)
    x, _ = preprocess([s["image"] for s in batch], cfg.model)
    module(x, batch, (int(x.shape[-2]), int(x.shape[-1])))
    assert module.weight_copies is None
