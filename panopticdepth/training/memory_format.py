"""channels_last for training (`train.channels_last`): the network's 4-D weights and each input batch.

oneDNN runs CPU convolutions in a channels-last (NHWC) layout; with the default NCHW tensors every
convolution, forward and backward, reorders its input, output and weights. Keeping weights and
activations channels_last skips those reorders; under bf16 autocast the reorders are a large part of a
convolution's time (benchmarks/README.md, training step). Convolutions propagate the layout, so
converting the weights and the input batch is enough.
"""

from __future__ import annotations

import torch
from torch import nn


def apply_channels_last(model: nn.Module, enabled: bool) -> nn.Module:
    """`model` with its 4-D parameters and buffers in channels_last (in place) when `enabled`."""
    return model.to(memory_format=torch.channels_last) if enabled else model


def batch_memory_format(batch_bchw: torch.Tensor, enabled: bool) -> torch.Tensor:
    """The input batch in channels_last when `enabled` (values unchanged), else as it is."""
    return batch_bchw.contiguous(memory_format=torch.channels_last) if enabled else batch_bchw
