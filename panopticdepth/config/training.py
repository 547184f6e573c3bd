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
    # effective batch of one optimizer step, over all processes and accumulation steps
    ims_per_batch: int = 8
    # micro-batches per optimizer step on each process: per-process micro-batch =
    # ims_per_batch / (world_size * accumulation_steps); keeps the paper's batch on fewer GPUs
    accumulation_steps: int = 1
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
    # auto (CUDA when available, else CPU) | cpu | cuda | cuda:N
    device: str = "auto"
    # DDP: tolerate parameters that get no gradient. The losses keep every head in the graph
    # (an empty term is a graph-connected zero), so this costs a graph walk per step for nothing;
    # turn it on only for a custom criterion that leaves parameters out.
    find_unused_parameters: bool = False
    # reproducible CUDA numerics: TF32 off, deterministic algorithms (training/backends.py)
    deterministic: bool = False
    # let cuDNN time its algorithms on the first batches (fixed crop sizes make this pay)
    cudnn_benchmark: bool = True
    # how long a collective waits for a missing process before the job fails
    dist_timeout_minutes: float = 30.0
    # write TensorBoard scalars under <output>/tensorboard
    tensorboard: bool = True
    # periodic evaluation on at most this many val images (0 = all)
    eval_max_images: int = 0
    loss: LossConfig = field(default_factory=LossConfig)
    targets: TargetConfig = field(default_factory=TargetConfig)
