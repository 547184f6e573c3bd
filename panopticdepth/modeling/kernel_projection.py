"""The thing/stuff kernel projections: the one owner that inference and training both call.

The original's 1x1 `embed_extractor` convs of the thing and stuff generators
(docs/original_implementation.md#kernel-projections), as two `nn.Linear` layers over the kernel
channels. Post-processing (`modeling/kernel_producer.py`) projects the selected and fused
kernels; the losses (`training/kernel_gather.py`) project the gathered training kernels, both
through `project_things` / `project_stuff`.

The network owns one `KernelProjection` as `kernel_projection`; its saved keys stay
`thing_projection.*` / `stuff_projection.*` (`PanopticDepthNet` renames them on save and load), so
model folders and converted original checkpoints load unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class KernelProjection(nn.Module):
    """(…, C) kernels -> (…, C) projected kernels, one linear layer for things, one for stuff."""

    def __init__(self, thing: nn.Linear, stuff: nn.Linear) -> None:
        super().__init__()
        self.thing = thing
        self.stuff = stuff

    def project_things(self, kernels: torch.Tensor) -> torch.Tensor:
        return self.thing(kernels)

    def project_stuff(self, kernels: torch.Tensor) -> torch.Tensor:
        return self.stuff(kernels)


def kernel_projection_of(owner: Any) -> Any:
    """The projection to call: `owner` itself when it projects (a `KernelProjection`), else the
    `kernel_projection` of a network (unwrapping DistributedDataParallel's `.module`)."""
    if hasattr(owner, "project_things"):
        return owner
    return getattr(owner, "module", owner).kernel_projection
