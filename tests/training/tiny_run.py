"""Overrides that shrink the small synthetic config to a few-second real training run for tests."""

from __future__ import annotations

from pathlib import Path

SMALL_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "synthetic" / "small_cpu.yaml"

# 2 images per step, a checkpoint and a periodic evaluation every 2 steps, narrow heads.
TINY_RUN = [
    "solver.ims_per_batch=2",
    "solver.warmup_iters=1",
    "train.log_period=1",
    "train.checkpoint_period=2",
    "train.eval_period=2",
    "train.tensorboard=false",
    "train.device=cpu",
    "data.num_workers=0",
    "data.augmentation.enabled=false",
    "model.fpn.out_channels=16",
    "model.heads.convs_dim=16",
    "model.heads.norm_groups=4",
    "model.heads.num_convs=1",
]
