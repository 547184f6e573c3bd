"""Per-level heads (position, kernel, depth kernel; shared over p3..p7) and the stride-4 encoders.

All of them are a "SingleHead" tower (docs/original_implementation.md#single-head): optional CoordConv input,
`num_convs` x [3x3 conv (DCNv2 where the original has it) -> GroupNorm or nothing -> ReLU], then an output
conv.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .deform_conv import ModulatedDeformConv2d, normal_fill
from .layout import is_channels_last
from .semantic_fpn import make_norm


def _tracing() -> bool:
    """True while a tracer or compiler (TorchScript trace, torch.compile, torch.export / ONNX) runs."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()


def _ramp(n: int, like: torch.Tensor) -> torch.Tensor:
    """`linspace(-1, 1, n)` in `like`'s dtype and device.

    Eagerly this is `torch.linspace` itself (the bits the oracle was made with). Under a tracer it
    is `arange(n) * (2 / (n - 1)) - 1`: `linspace` with a symbolic length is frozen to the example
    size by the exporter, `arange` keeps the size symbolic. The two agree to 1 ulp in float32
    (not bit for bit: `linspace` fills its two halves from opposite ends).
    """
    if not _tracing():
        return torch.linspace(-1.0, 1.0, n, dtype=like.dtype, device=like.device)
    return torch.arange(n, dtype=like.dtype, device=like.device) * (2.0 / max(n - 1, 1)) - 1.0


def append_coords(x_bchw: torch.Tensor) -> torch.Tensor:
    """CoordConv input: [features, row coordinate, column coordinate]
    (docs/original_implementation.md#coordconv).

    The first appended channel varies along the height (`linspace(-1, 1, H)` per row), the second
    along the width, both endpoints inclusive. Exportable with a dynamic image size (see `_ramp`).
    """
    b, _, h, w = x_bchw.shape
    rows = _ramp(h, x_bchw)
    cols = _ramp(w, x_bchw)
    if is_channels_last(x_bchw):
        # The same values as below, as one (B, 2, H, W) channels_last tensor: `cat` keeps the
        # layout only when all its inputs share it, and a plain (NCHW) result would cost the
        # following convolution a layout conversion, forward and backward (train.channels_last).
        grid = torch.stack([rows.view(1, h, 1).expand(b, h, w), cols.view(1, 1, w).expand(b, h, w)], -1)
        return torch.cat([x_bchw, grid.permute(0, 3, 1, 2)], dim=1)
    grid_r = rows.view(1, 1, h, 1).expand(b, 1, h, w)
    grid_c = cols.view(1, 1, 1, w).expand(b, 1, h, w)
    return torch.cat([x_bchw, grid_r, grid_c], dim=1)


class TowerLayer(nn.Module):
    """One tower conv: `conv` (plain nn.Conv2d or ModulatedDeformConv2d) -> `norm` -> ReLU."""

    def __init__(
        self, in_channels: int, out_channels: int, *, deform: bool, norm: str, groups: int, deform_impl: str
    ) -> None:
        super().__init__()
        bias = not norm
        if deform:
            self.conv: nn.Module = ModulatedDeformConv2d(
                in_channels, out_channels, bias=bias, impl=deform_impl
            )
        else:
            # Plain tower convs keep PyTorch's default init (docs/original_implementation.md#head-init).
            self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)
        self.norm = make_norm(norm, out_channels, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class Tower(nn.Module):
    """The original's SingleHead: coords appended once at the input, then `num_convs` layers."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        *,
        num_convs: int,
        deform: bool,
        coord: bool,
        norm: str,
        groups: int = 32,
        deform_impl: str = "auto",
    ) -> None:
        super().__init__()
        self.coord = coord
        self.channels = channels
        first = in_channels + (2 if coord else 0)
        self.layers = nn.ModuleList(
            TowerLayer(
                first if k == 0 else channels,
                channels,
                deform=deform,
                norm=norm,
                groups=groups,
                deform_impl=deform_impl,
            )
            for k in range(num_convs)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.coord:
            x = append_coords(x)
        for layer in self.layers:
            x = layer(x)
        return x


class PositionHead(nn.Module):
    """Thing-centre logits (num_thing_classes) and stuff-region logits (num_classes) per level
    (docs/original_implementation.md#heads-per-level), on top of `tower`."""

    def __init__(self, tower: Tower, *, num_thing_classes: int, num_classes: int, bias_value: float = -2.19):
        super().__init__()
        self.tower = tower
        self.center_out = nn.Conv2d(tower.channels, num_thing_classes, 3, padding=1)
        self.region_out = nn.Conv2d(tower.channels, num_classes, 3, padding=1)
        # Both biases start at the prior -2.19, not only the centre one
        # (docs/original_implementation.md#prior-bias).
        normal_fill(self.center_out, 0.01, bias_value)
        normal_fill(self.region_out, 0.01, bias_value)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.tower(x)
        return self.center_out(t), self.region_out(t)


class KernelHead(nn.Module):
    """`tower` + 3x3 output conv: the per-position kernel map G_l or depth kernels
    (docs/original_implementation.md#heads-per-level)."""

    def __init__(self, tower: Tower, out_channels: int) -> None:
        super().__init__()
        self.tower = tower
        self.out = nn.Conv2d(tower.channels, out_channels, 3, padding=1)
        normal_fill(self.out, 0.01, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.tower(x))


class FeatureEncoder(nn.Module):
    """Mask embedding E^m (docs/original_implementation.md#single-head): the tower alone, ReLU after
    the last conv kept (non-negative)."""

    def __init__(self, tower: Tower) -> None:
        super().__init__()
        self.tower = tower

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tower(x)


class DepthEncoder(nn.Module):
    """Depth embedding E^d (docs/original_implementation.md#single-head): `tower` + 1x1 projection
    to `out_channels` (`kernel_dim`), no activation.

    For Table 3's variant A the projection gives one channel instead, read as
    `sigmoid(.) * max_depth` metres by the network.
    """

    def __init__(self, tower: Tower, out_channels: int) -> None:
        super().__init__()
        self.tower = tower
        self.embed = nn.Conv2d(tower.channels, out_channels, 1)
        normal_fill(self.embed, 0.01, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.tower(x))
