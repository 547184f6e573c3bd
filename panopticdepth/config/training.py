"""Training configuration: solver, loss weights, engine settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from .checks import above, ascending, at_least, at_most, between, each, length, rules


@dataclass
class SolverConfig:
    # adam: Adam with coupled L2 decay (the original's); adamw: decoupled decay (the Swin recipe)
    optimizer: str = "adam"
    base_lr: float = field(default=1e-4, metadata=rules(above(0), at_most(10)))
    weight_decay: float = field(default=1e-4, metadata=rules(at_least(0)))
    weight_decay_norm: float = field(default=0.0, metadata=rules(at_least(0)))
    weight_decay_bias: float = field(default=1e-4, metadata=rules(at_least(0)))
    # Norm-layer biases: None = weight_decay_bias (the original's rule order); a number = that value
    # (0 for the Swin recipe, which excludes every norm parameter from decay).
    weight_decay_norm_bias: float | None = None
    # Swin's relative position bias tables (and absolute position embeddings): None = weight_decay.
    weight_decay_embed: float | None = None
    # Learning rate of the backbone's parameters = base_lr * this (1 = one LR for the whole network).
    backbone_lr_multiplier: float = field(default=1.0, metadata=rules(above(0)))
    max_iter: int = field(default=10000, metadata=rules(at_least(1)))
    warmup_iters: int = field(default=2000, metadata=rules(at_least(0)))
    warmup_factor: float = field(default=0.001, metadata=rules(between(0, 1)))
    poly_power: float = field(default=0.9, metadata=rules(at_least(0)))
    # clamp every gradient element to [-clip_value, clip_value]; 0 = off
    clip_value: float = field(default=35.0, metadata=rules(at_least(0)))
    # effective batch of one optimizer step, over all processes and accumulation steps
    ims_per_batch: int = field(default=8, metadata=rules(at_least(1)))
    # micro-batches per optimizer step on each process: per-process micro-batch =
    # ims_per_batch / (world_size * accumulation_steps); keeps the paper's batch on fewer GPUs
    accumulation_steps: int = field(default=1, metadata=rules(at_least(1)))
    # none | bf16 | fp16 (autocast)
    amp: str = "none"
    # Adam/AdamW as one fused kernel per parameter group instead of the foreach ops: fewer passes
    # over the parameters (faster on the CPU); the updates differ from the default in the last bits
    fused_optimizer: bool = False


@dataclass
class LossConfig:
    position_thing: float = field(default=1.0, metadata=rules(at_least(0)))
    position_stuff: float = field(default=1.0, metadata=rules(at_least(0)))
    segment: float = field(default=4.0, metadata=rules(at_least(0)))
    focal_alpha: float = field(default=0.25, metadata=rules(between(0, 1)))
    focal_gamma: float = field(default=2.0, metadata=rules(at_least(0)))
    # FACTOR: weight of both depth losses (docs/original_implementation.md#depth-losses)
    depth: float = field(default=5.0, metadata=rules(at_least(0)))
    # FACTOR_INS: extra weight of the instance-level depth loss
    depth_instance: float = field(default=1.0, metadata=rules(at_least(0)))
    # factor on the scale-invariant log term inside L~ = si * SI + REL (Eq. 6 has 1;
    # docs/original_implementation.md#depth-si-factor)
    depth_si_factor: float = field(default=5.0, metadata=rules(at_least(0)))
    # instance-level depth loss (variants E/F of Table 3); with T1 it supervises the min depth
    instance_depth_loss: bool = True
    # Sparse labels (SemKITTI's LiDAR-projected labels): the region and dice losses see labelled
    # pixels only, instead of counting unlabelled ones as negatives (docs/label_spaces.md#sparse-labels).
    labeled_pixels_only: bool = False


@dataclass
class TargetConfig:
    """Ground-truth generation (docs/original_implementation.md#target-sizes)."""

    # [min, max] object size per head level (p3..p7)
    instance_scales: list[list[int]] = field(
        default_factory=lambda: [[1, 128], [64, 256], [128, 512], [256, 1024], [512, 2048]],
        metadata=rules(each(length(2), ascending, each(at_least(0)))),
    )
    tensor_dim: int = field(default=150, metadata=rules(at_least(1)))
    pos_num: int = field(default=7, metadata=rules(at_least(1)))
    min_overlap: float = field(default=0.7, metadata=rules(between(0, 1)))
    gaussian_sigma: float = field(default=3.0, metadata=rules(above(0)))
    ignore_value: int = 255
    # stride of the mask/depth embedding (SEMANTIC_FPN.COMMON_STRIDE)
    common_stride: int = field(default=4, metadata=rules(at_least(1)))
    # guidance positions: downsampled GT mask > this (docs/original_implementation.md#guidance-weights)
    guidance_threshold: float = field(default=0.1, metadata=rules(between(0, 1)))
    # stuff score maps: values below are zeroed (docs/original_implementation.md#soft-stuff-targets)
    stuff_score_threshold: float = field(default=0.5, metadata=rules(between(0, 1)))
    # stuff pixel depth loss: sem_labels > this (things use > 0, docs/original_implementation.md#depth-losses)
    stuff_depth_threshold: float = field(default=0.5, metadata=rules(between(0, 1)))


@dataclass
class TrainConfig:
    seed: int = field(default=0, metadata=rules(at_least(0)))
    log_period: int = field(default=20, metadata=rules(at_least(0)))
    # 0 = only the final checkpoint
    checkpoint_period: int = field(default=3000, metadata=rules(at_least(0)))
    # 0 = keep all
    keep_checkpoints: int = field(default=3, metadata=rules(at_least(0)))
    eval_period: int = field(default=0, metadata=rules(at_least(0)))
    # stop after this many minutes (0 = no limit); used by the demo
    max_minutes: float = field(default=0.0, metadata=rules(at_least(0)))
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
    dist_timeout_minutes: float = field(default=30.0, metadata=rules(above(0)))
    # write TensorBoard scalars under <output>/tensorboard
    tensorboard: bool = True
    # periodic evaluation on at most this many val images (0 = all)
    eval_max_images: int = field(default=0, metadata=rules(at_least(0)))
    # channels_last memory format for the network's weights and input batch: oneDNN convolutions
    # then skip their layout reorders (faster CPU training, above all with solver.amp=bf16); off
    # keeps the default layout, whose float32 results the oracle tests pin (benchmarks/README.md)
    channels_last: bool = False
    loss: LossConfig = field(default_factory=LossConfig)
    targets: TargetConfig = field(default_factory=TargetConfig)
