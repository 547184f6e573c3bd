"""Memory-layout helpers for `train.channels_last` (NHWC activations, benchmarks/README.md, training step).

The layout changes how a tensor is stored, never its values; these helpers pick, per operation, the
layout in which the CPU kernels are fast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Below this many positions per map, GroupNorm runs in the plain layout (`GroupNorm`).
GROUP_NORM_NHWC_MIN_POSITIONS = 1024
# In bf16/fp16 training, groups of fewer channels than this run in the plain layout at any map size.
GROUP_NORM_NHWC_MIN_GROUP_CHANNELS = 8


def is_channels_last(x: torch.Tensor) -> bool:
    """True for a 4-D tensor laid out channels_last (NHWC) and not also plain contiguous."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


class GroupNorm(nn.GroupNorm):
    """`nn.GroupNorm` (same parameters, same state-dict keys) that normalises a channels_last map in
    the plain NCHW layout, where that is faster on the CPU, and hands the result back channels_last.

    Measured with 2 threads, forward + backward, the layout conversions included
    (benchmarks/README.md, training step): small maps are faster in the plain layout in any
    precision (bf16 (4, 64, 16, 32): 0.89 -> 0.23 ms); in bf16 training, groups of 4 channels (the
    small configs' 64 channels in 16 groups) are at every map size (32x64: 2.20 -> 0.94 ms, 64x128:
    7.96 -> 3.51 ms), while groups of 8 (the paper's 256 in 32) keep the channels_last kernel on
    large maps (64x128: 9.2 ms against 39 ms), as does inference. An NCHW input (the default
    layout) and any input on an accelerator take `nn.GroupNorm`'s path unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and is_channels_last(x) and self._plain_layout_is_faster(x):
            y = F.group_norm(x.contiguous(), self.num_groups, self.weight, self.bias, self.eps)
            return y.contiguous(memory_format=torch.channels_last)
        return super().forward(x)

    def _plain_layout_is_faster(self, x: torch.Tensor) -> bool:
        if x.shape[-2] * x.shape[-1] < GROUP_NORM_NHWC_MIN_POSITIONS:
            return True
        reduced = x.dtype in (torch.bfloat16, torch.float16)
        backward = torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
        few_channels = self.num_channels // self.num_groups < GROUP_NORM_NHWC_MIN_GROUP_CHANNELS
        return reduced and backward and few_channels
