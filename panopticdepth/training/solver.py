"""Optimiser, learning-rate schedule, gradient clipping and autocast of the original recipe
(docs/training_recipe.md).

* Adam with *coupled* L2 weight decay per parameter group (docs/original_implementation.md#adam-l2): 1e-4
  everywhere, 0 for norm-layer weights, and the bias override (1e-4) applied after the norm override, so norm
  biases
  decay too. Frozen parameters are not optimised.
* For Swin backbones (configs/cityscapes/*swin*.yaml) the usual transformer recipe: AdamW
  (decoupled decay), no decay on any norm parameter (`weight_decay_norm_bias`) nor on the relative
  position bias tables (`weight_decay_embed`), optionally a lower backbone learning rate
  (`backbone_lr_multiplier`). With the defaults these add nothing: the groups are the original's.
* WarmupPolyLR stepped every iteration (docs/original_implementation.md#warmup-poly):
  `lr(t) = base_lr * f(t) * (1 - t / max_iter) ** power`, `f(t) = wf * (1 - t/W) + t/W` for t < W.
* Gradient clipping by value, per element (docs/original_implementation.md#clip-by-value), not by norm.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch import nn

from ..config import ConfigError
from ..config.training import SolverConfig

log = logging.getLogger(__name__)

# Norm layers whose weight (gamma) gets `weight_decay_norm` (Detectron2's list).
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


# Parameters that are position encodings, not weights (Swin's relative position bias tables).
EMBED_PARAM_NAMES = ("relative_position_bias_table", "absolute_pos_embed")
OPTIMIZERS = ("adam", "adamw")


def parameter_weight_decay(model: nn.Module, cfg: SolverConfig) -> list[tuple[str, nn.Parameter, float]]:
    """(name, parameter, weight decay) for every trainable parameter, each listed once
    (docs/original_implementation.md#adam-l2)."""
    out: list[tuple[str, nn.Parameter, float]] = []
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            wd = cfg.weight_decay
            is_norm = isinstance(module, NORM_TYPES)
            if is_norm:
                wd = cfg.weight_decay_norm
            if param_name == "bias":
                # Applied after the norm rule: GN/BN beta keep 1e-4 as in the original.
                wd = cfg.weight_decay_bias
                if is_norm and cfg.weight_decay_norm_bias is not None:
                    wd = cfg.weight_decay_norm_bias
            if param_name in EMBED_PARAM_NAMES and cfg.weight_decay_embed is not None:
                wd = cfg.weight_decay_embed
            full = f"{module_name}.{param_name}" if module_name else param_name
            out.append((full, param, wd))
    return out


def _lr_multiplier(name: str, cfg: SolverConfig) -> float:
    return cfg.backbone_lr_multiplier if name.startswith("backbone.") else 1.0


def build_optimizer(model: nn.Module, cfg: SolverConfig) -> torch.optim.Optimizer:
    """Adam (coupled L2, the original's) or AdamW (decoupled), one group per (decay, LR factor).

    Groups are ordered by first appearance, those at the base LR first, so that `param_groups[0]`
    carries the base learning rate (what the engine logs).
    """
    name = cfg.optimizer.lower()
    if name not in OPTIMIZERS:
        raise ConfigError(
            f"solver.optimizer must be 'adam' (the original's optimiser) or 'adamw', got {cfg.optimizer!r}"
        )
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for full, param, wd in parameter_weight_decay(model, cfg):
        groups.setdefault((wd, _lr_multiplier(full, cfg)), []).append(param)
    if not groups:
        raise ConfigError("the model has no trainable parameters (check model.backbone.freeze_at)")
    ordered = sorted(groups.items(), key=lambda item: item[0][1] != 1.0)  # stable: base LR first
    param_groups = [
        {"params": params, "weight_decay": wd, "lr": cfg.base_lr * mult} for (wd, mult), params in ordered
    ]
    # fused: one kernel per group on CPU and CUDA (benchmarks/README.md, training step); foreach
    # stays the default, whose float32 updates the tests pin
    fused = bool(cfg.fused_optimizer)
    kwargs = dict(lr=cfg.base_lr, betas=(0.9, 0.999), eps=1e-8, foreach=not fused, fused=fused)
    if name == "adamw":
        return (FusedAdamW if fused else torch.optim.AdamW)(param_groups, **kwargs)
    return (FusedAdam if fused else torch.optim.Adam)(param_groups, **kwargs)


def nhwc_views(lists: list[list[torch.Tensor]]) -> None:
    """In place: where a parameter (`lists[0][i]`) is a channels_last 4-D tensor and every other
    4-D entry at `i` (gradient, moments) has its shape and strides, put the NHWC permutation of
    each of them instead: the same memory, now contiguous, the same elements in the same order.

    Lists of another length (e.g. the empty `max_exp_avg_sqs`) and non-4-D entries (the step
    counters) are left alone.
    """
    params = lists[0]
    rows = [lst for lst in lists if len(lst) == len(params)]
    for i, p in enumerate(params):
        if p.dim() != 4 or p.is_contiguous() or not p.is_contiguous(memory_format=torch.channels_last):
            continue
        four_d = [lst[i] for lst in rows if lst[i].dim() == 4]
        if all(t.shape == p.shape and t.stride() == p.stride() for t in four_d):
            for lst in rows:
                if lst[i].dim() == 4:
                    lst[i] = lst[i].permute(0, 2, 3, 1)


class _NHWCFused:
    """The fused Adam/AdamW kernel on channels_last weights without copies.

    The CPU kernel makes every non-contiguous parameter, gradient and moment contiguous and copies
    the results back; with `train.channels_last` that is each 3x3 weight (a [512, 512, 3, 3]
    transposed copy takes milliseconds), about 30 ms of a small-config step. The update is
    element-wise, so the kernel gets the NHWC views (`nhwc_views`), which are contiguous; the
    values are the same as with the copies.
    """

    def _init_group(self, group: dict, *lists: list) -> bool:
        has_complex = super()._init_group(group, *lists)  # type: ignore[misc]
        if group["fused"]:
            nhwc_views([lst for lst in lists if isinstance(lst, list)])
        return has_complex


class FusedAdam(_NHWCFused, torch.optim.Adam):
    """`torch.optim.Adam(fused=True)` that updates channels_last weights in place (`_NHWCFused`)."""


class FusedAdamW(_NHWCFused, torch.optim.AdamW):
    """`torch.optim.AdamW(fused=True)` that updates channels_last weights in place (`_NHWCFused`)."""


def warmup_poly_factor(iteration: int, cfg: SolverConfig) -> float:
    """Multiplier of base_lr at iteration t (0-based): linear warmup times poly decay
    (docs/original_implementation.md#warmup-poly)."""
    t = float(iteration)
    warm = 1.0
    if cfg.warmup_iters > 0 and t < cfg.warmup_iters:
        alpha = t / cfg.warmup_iters
        warm = cfg.warmup_factor * (1.0 - alpha) + alpha
    poly = max(0.0, 1.0 - t / max(cfg.max_iter, 1)) ** cfg.poly_power
    return warm * poly


class WarmupPolyLR(torch.optim.lr_scheduler.LRScheduler):
    """Closed-form WarmupPolyLR; `last_epoch` is the iteration whose LR is currently set."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: SolverConfig, last_epoch: int = -1):
        self.solver_cfg = cfg
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        f = warmup_poly_factor(self.last_epoch, self.solver_cfg)
        return [base * f for base in self.base_lrs]

    def state_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "solver_cfg")}


def build_lr_scheduler(optimizer: torch.optim.Optimizer, cfg: SolverConfig) -> WarmupPolyLR:
    return WarmupPolyLR(optimizer, cfg)


def clip_gradients(parameters: Iterator[nn.Parameter] | list[nn.Parameter], clip_value: float) -> None:
    """Clamp every gradient element to [-clip_value, clip_value]
    (docs/original_implementation.md#clip-by-value); 0 disables."""
    if clip_value <= 0:
        return
    with_grad = [p for p in parameters if p.grad is not None]
    if with_grad and with_grad[0].grad.device.type == "cpu":
        # one pass per tensor; torch's CPU fallback clamps each tensor twice (min, then max), which
        # costs a few ms per step of the small config (benchmarks/README.md, training step)
        for p in with_grad:
            p.grad.clamp_(-clip_value, clip_value)
        return
    if with_grad:  # takes the parameters (not their gradients): one foreach clamp per device/dtype
        torch.nn.utils.clip_grad_value_(with_grad, clip_value)


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for `solver.amp` (none | bf16 | fp16); fp16 needs CUDA (GradScaler)."""
    amp = amp.lower()
    if amp in ("none", "", "fp32", "false"):
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        if device.type != "cuda":
            raise ConfigError("solver.amp=fp16 needs a CUDA device; use solver.amp=bf16 on the CPU")
        return torch.float16
    raise ConfigError(f"solver.amp must be none, bf16 or fp16, got {amp!r}")


def autocast_context(amp: str, device: torch.device) -> contextlib.AbstractContextManager:
    """`torch.autocast` for the configured precision, or a no-op context for fp32."""
    dtype = autocast_dtype(amp, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def build_grad_scaler(amp: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16 on CUDA (bf16 needs none), else None."""
    if autocast_dtype(amp, device) == torch.float16:
        return torch.amp.GradScaler("cuda")
    return None
