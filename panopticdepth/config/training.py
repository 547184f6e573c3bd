"""Training configuration: solver, loss weights, engine settings."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SolverConfig:
    optimizer: str = "adam"
    base_lr: float = 1e-4
    weight_decay: float = 1e-4
    weight_decay_norm: float = 0.0
    weight_decay_bias: float = 1e-4
    max_iter: int = 10000
    warmup_iters: int = 2000
    warmup_factor: float = 0.001
    poly_power: float = 0.9
    clip_value: float = 35.0
    ims_per_batch: int = 8
    # none | bf16 | fp16 (autocast)
    amp: str = "none"


@dataclass
class LossConfig:
    position_thing: float = 1.0
    position_stuff: float = 1.0
    segment: float = 4.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    depth: float = 5.0
    depth_instance: float = 1.0
    # instance-level depth loss (variants E/F of Table 3)
    instance_depth_loss: bool = True


@dataclass
class TargetConfig:
    """Ground-truth generation (spec section 5)."""

    instance_scales: list[list[int]] = field(
        default_factory=lambda: [[1, 128], [64, 256], [128, 512], [256, 1024], [512, 2048]]
    )
    tensor_dim: int = 150
    pos_num: int = 7
    min_overlap: float = 0.7
    gaussian_sigma: float = 3.0
    ignore_value: int = 255


@dataclass
class TrainConfig:
    seed: int = 0
    log_period: int = 20
    checkpoint_period: int = 3000
    keep_checkpoints: int = 3
    eval_period: int = 0
    # stop after this many minutes (0 = no limit); used by the demo
    max_minutes: float = 0.0
    loss: LossConfig = field(default_factory=LossConfig)
    targets: TargetConfig = field(default_factory=TargetConfig)
