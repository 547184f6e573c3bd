"""Deformable convolution under bf16 autocast: coordinates and sampling weights stay float32.

Reference: the same layer in float32 with torchvision's kernel. Rounding the sampling positions to
bfloat16 (spacing 1-2 pixels at x = 128..255) gave about 20 % layer error before; rounding only the
input values and the GEMM operands stays well under 1 %.
"""

from __future__ import annotations

import pytest
import torch

from panopticdepth.modeling.deform_conv import ModulatedDeformConv2d


def _layer(impl: str) -> ModulatedDeformConv2d:
    torch.manual_seed(0)
    layer = ModulatedDeformConv2d(32, 32, impl=impl)
    with torch.no_grad():  # offsets of a few pixels, as a trained layer produces
        layer.offset_conv.weight.mul_(20.0)
    return layer


def _relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.detach().float() - ref).norm() / ref.norm())


def _features() -> torch.Tensor:
    """A smooth 32-channel map like an FPN output (white noise would make every sub-pixel shift big)."""
    torch.manual_seed(1)
    coarse = torch.randn(1, 32, 16, 32)
    return torch.nn.functional.interpolate(coarse, size=(128, 256), mode="bilinear", align_corners=False)


@pytest.mark.parametrize("impl", ["auto", "torchvision", "sample"])
@pytest.mark.parametrize("grad", [False, True])
def test_bf16_autocast_layer_error_is_small(impl, grad):
    layer = _layer(impl)
    x = _features()
    with torch.no_grad():
        reference = _layer("torchvision")(x)
    x_low = x.bfloat16().requires_grad_(grad)  # what the previous autocast layer hands over
    with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x_low)
    assert _relative_error(out, reference) < 0.01
    if grad:
        out.float().sum().backward()
        assert layer.offset_conv.weight.grad is not None and torch.isfinite(x_low.grad).all()


def test_half_precision_coordinates_would_fail_the_bound():
    """The bound above can fail: the same layer with bfloat16 tap coordinates is far off."""
    from panopticdepth.modeling.deform_conv import deform_conv3x3_sample

    layer = _layer("sample")
    x = _features()
    with torch.no_grad():
        reference = layer(x)
        om = layer.offset_conv(x)
        low = deform_conv3x3_sample(
            x.bfloat16(), om[:, :18].bfloat16(), om[:, 18:].sigmoid().bfloat16(),
            layer.weight.bfloat16(), layer.bias.bfloat16(),
        )  # fmt: skip
    assert _relative_error(low, reference) > 0.05
