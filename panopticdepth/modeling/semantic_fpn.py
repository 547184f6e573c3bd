"""Semantic FPN: fuse p2..p5 into one stride-4 map (docs/original_implementation.md#semantic-fpn), input of
both embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn

from .deform_conv import c2_msra_fill
from .layout import GroupNorm


class ConvNormReLU(nn.Module):
    """3x3 conv -> optional GroupNorm -> ReLU; conv has a bias only without norm."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "GN", groups: int = 32) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not norm)
        self.norm = make_norm(norm, out_channels, groups)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


def make_norm(norm: str, channels: int, groups: int) -> nn.Module:
    """The heads' normalisation layer by config name: "GN" (`nn.GroupNorm`, channels_last-aware:
    `layout.GroupNorm`), or "" / "none" for identity."""
    if norm == "GN":
        return GroupNorm(groups, channels)
    if norm in ("", "none", None):
        return nn.Identity()
    raise ValueError(f"head norm must be 'GN' or '', got {norm!r}")


class SemanticFPN(nn.Module):
    """Per level max(1, log2(stride) - 2) units of [conv-GN-ReLU, bilinear x2 if stride > 4]; sum.

    Sequential indices are kept as the original (convs at 0, 2, 4; upsampling at the odd indices).
    """

    def __init__(
        self, in_channels: int = 256, channels: int = 256, norm: str = "GN", groups: int = 32
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleDict()
        for level, stride in (("p2", 4), ("p3", 8), ("p4", 16), ("p5", 32)):
            n_units = max(1, int(math.log2(stride)) - 2)
            layers: list[nn.Module] = []
            for k in range(n_units):
                layers.append(ConvNormReLU(in_channels if k == 0 else channels, channels, norm, groups))
                if stride != 4:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.branches[level] = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                c2_msra_fill(m)
        self.out_channels = channels

    def forward(self, fpn: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.branches["p2"](fpn["p2"])
        for level in ("p3", "p4", "p5"):
            out = out + self.branches[level](fpn[level])
        return out
