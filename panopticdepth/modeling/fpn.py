"""FPN on res2..res5 with P6/P7 computed from the FPN output P5 (docs/original_implementation.md#fpn-p6-p7).

Written out rather than torchvision's `FeaturePyramidNetwork`, whose `LastLevelP6P7` applies the
ReLU before p6's conv instead of between p6 and p7 and whose module names are less readable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .deform_conv import c2_xavier_fill


class FPN(nn.Module):
    """Lateral 1x1 + output 3x3 convs (bias, no norm), nearest x2 top-down.

    p6 = conv(p5), p7 = conv(relu(p6)), both stride-2 3x3 convs with bias. `extra_levels` (2, 1 or
    0) says how many of p6, p7 exist: heads that stop at p5 or p6 leave no unused convs behind.
    """

    def __init__(self, in_channels: dict[str, int], out_channels: int = 256, extra_levels: int = 2) -> None:
        super().__init__()
        self.lateral = nn.ModuleDict()
        self.output = nn.ModuleDict()
        for s in (2, 3, 4, 5):
            self.lateral[f"p{s}"] = nn.Conv2d(in_channels[f"res{s}"], out_channels, 1)
            self.output[f"p{s}"] = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.p6 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1) if extra_levels >= 1 else None
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1) if extra_levels >= 2 else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                c2_xavier_fill(m)
        self.out_channels = out_channels

    def forward(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        prev = self.lateral["p5"](feats["res5"])
        outs = {"p5": self.output["p5"](prev)}
        for s in (4, 3, 2):
            # scale_factor=2 nearest as the original; sizes agree because inputs are padded to 32.
            prev = self.lateral[f"p{s}"](feats[f"res{s}"]) + F.interpolate(
                prev, scale_factor=2.0, mode="nearest"
            )
            outs[f"p{s}"] = self.output[f"p{s}"](prev)
        if self.p6 is not None:
            outs["p6"] = self.p6(outs["p5"])
        if self.p7 is not None:
            outs["p7"] = self.p7(F.relu(outs["p6"]))
        return dict(sorted(outs.items()))
