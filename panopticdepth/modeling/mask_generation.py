"""Mask generation (paper Eq. 2): dynamic 1x1 convolution of the mask embedding, as one matmul."""

from __future__ import annotations

import torch


def mask_logits(kernels_nc: torch.Tensor, embedding_chw: torch.Tensor) -> torch.Tensor:
    """(N, C) kernels x (C, H, W) embedding -> (N, H, W) logits `K . E^m` (no bias;
    docs/original_implementation.md#dynamic-conv)."""
    c, h, w = embedding_chw.shape
    n = kernels_nc.shape[0]
    return (kernels_nc @ embedding_chw.reshape(c, h * w)).reshape(n, h, w)
