"""CPU training speed switches: `train.channels_last`, `solver.fused_optimizer`, bf16 autocast.

The switches change memory layouts and kernels, not the model: a channels_last forward must give the
float32 values of the default layout, and a bf16 step must keep losses, gradients, parameters and
Adam's moments in float32 (benchmarks/README.md, training step).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from panopticdepth.config import ConfigError, load_config
from panopticdepth.data.sample import make_sample
from panopticdepth.data.synthetic.writer import generate
from panopticdepth.modeling import build_model
from panopticdepth.modeling.preprocess import preprocess
from panopticdepth.training.engine import LossModule, Trainer, default_criterion
from panopticdepth.training.memory_format import apply_channels_last, batch_memory_format
from panopticdepth.training.solver import build_optimizer, clip_gradients

REPO = Path(__file__).resolve().parents[2]
SMALL = REPO / "configs" / "synthetic" / "small_cpu.yaml"
H, W = 64, 128


def small_cfg(*overrides: str):
    return load_config(SMALL, ["model.backbone.pretrained=", *overrides])


def samples(n: int = 2) -> list[dict]:
    frames = [generate(0, i, H, W) for i in range(n)]
    return [
        make_sample(f.image, f.panoptic.astype("int64"), f.depth, {"image_id": str(i)})
        for i, f in enumerate(frames)
    ]


def tensors(obj) -> list[torch.Tensor]:
    """Every tensor of a (nested) network output, in a fixed order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in tensors(v)]
    if isinstance(obj, dict):
        return [t for k in sorted(obj) for t in tensors(obj[k])]
    if hasattr(obj, "__dataclass_fields__"):
        return [t for name in obj.__dataclass_fields__ for t in tensors(getattr(obj, name))]
    return []


@pytest.mark.parametrize("train_mode", [False, True])
def test_channels_last_forward_matches_default_layout(train_mode):
    cfg = small_cfg()
    torch.manual_seed(0)
    ref = build_model(cfg.model).train(train_mode)
    torch.manual_seed(0)
    fast = apply_channels_last(build_model(cfg.model), True).train(train_mode)
    conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    x, _ = preprocess([s["image"] for s in samples()], cfg.model)
    x_cl = batch_memory_format(x, True)
    assert x_cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(x_cl, x)
    with torch.no_grad():
        a, b = tensors(ref(x)), tensors(fast(x_cl))
    assert len(a) == len(b) > 5
    for ta, tb in zip(a, b):
        assert ta.shape == tb.shape and ta.dtype == tb.dtype
        if ta.is_floating_point():
            scale = ta.abs().max().clamp_min(1e-3)
            assert (ta - tb).abs().max() <= 1e-4 * scale
        else:
            assert torch.equal(ta, tb)


def test_switches_off_leave_the_default_layout_and_optimizer():
    cfg = small_cfg()
    assert cfg.train.channels_last is False and cfg.solver.fused_optimizer is False
    model = build_model(cfg.model)
    assert apply_channels_last(model, False) is model
    assert all(p.is_contiguous() for p in model.parameters())
    x = torch.zeros(1, 3, 8, 8)
    assert batch_memory_format(x, False) is x
    opt = build_optimizer(model, cfg.solver)
    assert opt.defaults["foreach"] is True and not opt.defaults["fused"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.channels_last=maybe", "channels_last"),
        ("solver.fused_optimizer=2", "fused_optimizer"),
    ],
)
def test_new_keys_are_validated(override, message):
    with pytest.raises(ConfigError, match=message):
        small_cfg(override)


def test_new_keys_parse():
    cfg = small_cfg("train.channels_last=true", "solver.fused_optimizer=true", "solver.amp=bf16")
    assert cfg.train.channels_last is True and cfg.solver.fused_optimizer is True
    assert build_optimizer(build_model(cfg.model), cfg.solver).defaults["fused"] is True


@pytest.mark.parametrize("channels_last", [False, True])
def test_bf16_cpu_step_keeps_float32_losses_grads_and_state(channels_last):
    cfg = small_cfg(
        "solver.amp=bf16", f"train.channels_last={str(channels_last).lower()}", "solver.fused_optimizer=true"
    )
    torch.manual_seed(0)
    model = apply_channels_last(build_model(cfg.model), channels_last).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model, cfg.solver)
    step = LossModule(model, default_criterion, cfg, torch.device("cpu"))
    batch = samples()
    x, _ = preprocess([s["image"] for s in batch], cfg.model)
    losses = step(x, batch, (int(x.shape[-2]), int(x.shape[-1])))
    assert len(losses) >= 5
    for name, value in losses.items():
        assert value.dtype == torch.float32, name
        assert torch.isfinite(value).all(), name
    sum(losses.values()).backward()
    clip_gradients(model.parameters(), cfg.solver.clip_value)
    grads = [(n, p.grad) for n, p in model.named_parameters() if p.grad is not None]
    assert len(grads) > 0.9 * len(before)
    for name, g in grads:
        assert g.dtype == torch.float32 and torch.isfinite(g).all(), name
    opt.step()
    moved = 0
    for name, p in model.named_parameters():
        assert p.dtype == torch.float32 and torch.isfinite(p).all(), name
        moved += int(not torch.equal(p.detach(), before[name]))
        state = opt.state.get(p)
        if state:
            assert state["exp_avg"].dtype == torch.float32, name
            assert state["exp_avg_sq"].dtype == torch.float32, name
    assert moved > 0.9 * len(before)


def test_fused_adam_step_matches_foreach():
    cfg = small_cfg()
    models, grads = [], None
    for fused in (False, True):
        cfg.solver.fused_optimizer = fused
        torch.manual_seed(0)
        model = build_model(cfg.model)
        opt = build_optimizer(model, cfg.solver)
        if grads is None:
            g = torch.Generator().manual_seed(1)
            grads = [torch.randn(p.shape, generator=g) for p in model.parameters()]
        for _ in range(3):
            for p, gr in zip(model.parameters(), grads):
                p.grad = gr.clone()
            opt.step()
        models.append(model)
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_trainer_applies_channels_last(tmp_path):
    cfg = small_cfg("train.channels_last=true", "train.device=cpu")
    trainer = Trainer(cfg, tmp_path, train_dataset=[])
    convs = [m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    cfg_off = small_cfg("train.device=cpu")
    trainer_off = Trainer(cfg_off, tmp_path / "off", train_dataset=[])
    assert all(p.is_contiguous() for p in trainer_off.model.parameters())


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_fused_adam_updates_channels_last_weights_through_contiguous_views(monkeypatch, optimizer):
    cfg = small_cfg("solver.fused_optimizer=true", f"solver.optimizer={optimizer}")
    torch.manual_seed(0)
    ref = build_model(cfg.model)
    torch.manual_seed(0)
    fast = apply_channels_last(build_model(cfg.model), True)
    seen: list[torch.Tensor] = []
    kernel = torch._fused_adam_ if optimizer == "adam" else torch._fused_adamw_

    def spy(params, grads, exp_avgs, exp_avg_sqs, *args, **kwargs):
        seen.extend([*params, *grads, *exp_avgs, *exp_avg_sqs])
        return kernel(params, grads, exp_avgs, exp_avg_sqs, *args, **kwargs)

    opts = [build_optimizer(m, cfg.solver) for m in (ref, fast)]
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(p.shape, generator=g) for p in ref.parameters()]
    for _ in range(3):
        for model, opt in zip((ref, fast), opts):
            for p, gr in zip(model.parameters(), grads):
                p.grad = torch.empty_like(p).copy_(gr)  # in the parameter's layout, as autograd does
            if model is fast:
                monkeypatch.setattr(torch, "_fused_adam_" if optimizer == "adam" else "_fused_adamw_", spy)
            opt.step()
            monkeypatch.undo()
    # the kernel saw only contiguous tensors (no internal copies), and the weights stayed channels_last
    assert seen and all(t.is_contiguous() for t in seen)
    convs = [m.weight for m in fast.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert convs and all(
        w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs
    )
    # the same float32 update as on the default layout, bit for bit
    for (name, a), b in zip(ref.named_parameters(), fast.parameters()):
        assert torch.equal(a, b), name
        sa, sb = opts[0].state[a], opts[1].state[b]
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(
            sa["exp_avg_sq"], sb["exp_avg_sq"]
        ), name


def test_bf16_channels_last_outputs_reach_the_losses_as_plain_float32():
    cfg = small_cfg("solver.amp=bf16", "train.channels_last=true")
    torch.manual_seed(0)
    model = apply_channels_last(build_model(cfg.model), True).train()
    seen = {}

    def criterion(samples, outputs, padded_size, projection, cfg):
        seen["outputs"] = outputs
        return {"loss": sum(t.sum() for t in tensors(outputs) if t.is_floating_point())}

    batch = samples()
    x, _ = preprocess([s["image"] for s in batch], cfg.model)
    LossModule(model, criterion, cfg, torch.device("cpu"))(x, batch, (int(x.shape[-2]), int(x.shape[-1])))
    out = tensors(seen["outputs"])
    assert len(out) > 5
    # float32 in the layout the losses flatten without copies (the forward ran channels_last)
    assert all(t.dtype == torch.float32 and t.is_contiguous() for t in out if t.is_floating_point())
