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


def is_channels_last(x: torch.Tensor) -> bool:
    """True for a 4-D tensor laid out channels_last (NHWC) and not also plain contiguous."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


class GroupNorm(nn.GroupNorm):
    """`nn.GroupNorm` (same parameters, same state-dict keys) that normalises a small channels_last
    map in the plain NCHW layout and hands the result back channels_last.

    On the CPU the channels_last GroupNorm is slow on small maps with few channels per group (the
    heads' 64 channels in 16 groups): one thread, bf16, forward + backward of a (4, 64, 16, 32) map
    take 2.2 ms channels_last and 0.66 ms with the two layout conversions (0.1 ms each) around the
    plain kernel; on the 32x64 maps the channels_last kernel is the faster one. An NCHW input (the
    default layout) and any input on an accelerator take `nn.GroupNorm`'s path unchanged.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        small = x.shape[-2] * x.shape[-1] < GROUP_NORM_NHWC_MIN_POSITIONS
        if x.device.type == "cpu" and small and is_channels_last(x):
            y = F.group_norm(x.contiguous(), self.num_groups, self.weight, self.bias, self.eps)
            return y.contiguous(memory_format=torch.channels_last)
        return super().forward(x)
