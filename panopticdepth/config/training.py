"""Training configuration: solver, loss weights, engine settings."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SolverConfig:
    # adam: Adam with coupled L2 decay (the original's); adamw: decoupled decay (the Swin recipe)
    optimizer: str = "adam"
    base_lr: float = 1e-4
    weight_decay: float = 1e-4
    weight_decay_norm: float = 0.0
    weight_decay_bias: float = 1e-4
    # Norm-layer biases: None = weight_decay_bias (the original's rule order); a number = that value
    # (0 for the Swin recipe, which excludes every norm parameter from decay).
    weight_decay_norm_bias: float | None = None
    # Swin's relative position bias tables (and absolute position embeddings): None = weight_decay.
    weight_decay_embed: float | None = None
    # Learning rate of the backbone's parameters = base_lr * this (1 = one LR for the whole network).
    backbone_lr_multiplier: float = 1.0
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
    # FACTOR: weight of both depth losses (spec 6.4)
    depth: float = 5.0
    # FACTOR_INS: extra weight of the instance-level depth loss
    depth_instance: float = 1.0
    # factor on the scale-invariant log term inside L~ = si * SI + REL (trap 18; Eq. 6 has 1)
    depth_si_factor: float = 5.0
    # instance-level depth loss (variants E/F of Table 3); with T1 it supervises the min depth
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
    # stride of the mask/depth embedding (SEMANTIC_FPN.COMMON_STRIDE)
    common_stride: int = 4
    # guidance positions: downsampled GT mask > this (spec 2.5)
    guidance_threshold: float = 0.1
    # stuff score maps: values below are zeroed (spec 5.1)
    stuff_score_threshold: float = 0.5
    # stuff pixel depth loss: sem_labels > this (things use > 0, trap 19)
    stuff_depth_threshold: float = 0.5


@dataclass
class TrainConfig:
    seed: int = 0
    log_period: int = 20
    checkpoint_period: int = 3000
    keep_checkpoints: int = 3
    eval_period: int = 0
    # stop after this many minutes (0 = no limit); used by the demo
    max_minutes: float = 0.0
    # auto (CUDA when available, else CPU) | cpu | cuda
    device: str = "auto"
    # DDP: tolerate parameters that get no gradient in an iteration (e.g. no thing in the batch)
    find_unused_parameters: bool = True
    # write TensorBoard scalars under <output>/tensorboard
    tensorboard: bool = True
    # periodic evaluation on at most this many val images (0 = all)
    eval_max_images: int = 0
    loss: LossConfig = field(default_factory=LossConfig)
    targets: TargetConfig = field(default_factory=TargetConfig)
