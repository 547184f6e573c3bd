"""Numerics switches of the training device: reproducibility (`train.deterministic`) or speed.

What "bit-exact resume" means on each device is written in docs/distributed_training.md.
"""

from __future__ import annotations

import logging
import os

import torch

from ..config.training import TrainConfig

log = logging.getLogger(__name__)

# Operations of this model that CUDA runs with atomic adds even in deterministic mode: their
# gradients can differ in the last bits from run to run (torch warns about the ones it knows).
NONDETERMINISTIC_ON_CUDA = (
    "torchvision.ops.deform_conv2d backward (offset, mask and input gradients use atomicAdd)",
    "F.grid_sample backward (deformable convs with model.heads.deform_impl=sample)",
    "F.interpolate bilinear backward (mask and depth upsampling in the losses' targets path)",
    "scatter_reduce / index_put with accumulation (heat-map drawing and kernel gathering)",
)


def configure_backends(tcfg: TrainConfig, device: torch.device) -> None:
    """`deterministic`: TF32 off, deterministic cuDNN/cuBLAS algorithms where they exist (a
    warning names each op that has none); otherwise cuDNN may pick the fastest algorithms."""
    if tcfg.deterministic:
        # cuBLAS reads this when it creates its first handle: set it before any CUDA matmul.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.use_deterministic_algorithms(True, warn_only=True)
        if device.type == "cuda":
            log.info(
                "train.deterministic: TF32 off, deterministic algorithms on; still non-deterministic: %s",
                "; ".join(NONDETERMINISTIC_ON_CUDA),
            )
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(tcfg.cudnn_benchmark)
