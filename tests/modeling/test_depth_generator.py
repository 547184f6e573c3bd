"""Depth map generator (Eq. 3-5) against scalar computations."""

from __future__ import annotations

import math

import pytest
import torch

from panopticdepth.config.model import DepthConfig
from panopticdepth.modeling.depth_generator import depth_maps, gathered_depth


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _scalar_depth(v: list[float], e: list[float], norm: str, d_max: float) -> float:
    dot = sum(a * b for a, b in zip(v[2:], e))
    if norm == "none":  # variant B: the pixel-wise head's mapping, d_max s(k.E)
        return d_max * _sig(dot)
    if norm == "T2":  # the original code: ReLU(88 s(v_r) (2 s(k.E) - 1) + 44 s(v_s)) for d_max 88
        return max(d_max * _sig(v[1]) * (2 * _sig(dot) - 1) + d_max / 2 * _sig(v[0]), 0.0)
    return d_max / 2 * _sig(v[0]) + d_max * _sig(v[1]) * _sig(dot)  # T1: d_min + d_r D'


@pytest.mark.parametrize("norm", ["T2", "T1", "none"])
@pytest.mark.parametrize("d_max", [88.0, 10.0])
def test_depth_maps_match_scalar_formula(norm, d_max):
    gen = torch.Generator().manual_seed(0)
    kernels = torch.randn(3, 6, generator=gen, dtype=torch.float64) * 2
    emb = torch.randn(4, 5, 7, generator=gen, dtype=torch.float64)
    cfg = DepthConfig(normalization=norm, max_depth=d_max, kernel_dim=4)
    maps = depth_maps(kernels, emb, cfg)
    assert maps.shape == (3, 5, 7)
    for n in range(3):
        for y in range(5):
            for x in range(7):
                ref = _scalar_depth(kernels[n].tolist(), emb[:, y, x].tolist(), norm, d_max)
                assert maps[n, y, x].item() == pytest.approx(ref, abs=1e-9)
    assert (maps >= 0).all()


def test_t2_extremes_are_the_code_scales():
    """Shift saturates at d_max/2 = 44, range at d_max = 88 either side
    (docs/original_implementation.md#depth-t2)."""
    cfg = DepthConfig()
    emb = torch.ones(16, 1, 1)
    big = torch.zeros(1, 18)
    big[0, 0] = big[0, 1] = 50.0  # shift, range -> 44, 88
    big[0, 2:] = 50.0  # D' -> 1
    assert depth_maps(big, emb, cfg).item() == pytest.approx(44 + 88)
    big[0, 2:] = -50.0  # D' -> 0: 44 - 88 < 0, ReLU
    assert depth_maps(big, emb, cfg).item() == 0.0


def test_unnormalised_depth_keeps_a_gradient_where_the_response_is_negative():
    """Variant B must not die: with every response negative (a ReLU would output 0 with no
    gradient), the depth still moves with the kernel."""
    cfg = DepthConfig(normalization="none")
    emb = torch.ones(16, 2, 3)
    kernels = torch.full((1, 18), -1.0, requires_grad=True)  # k . E = -16 everywhere
    depth = depth_maps(kernels, emb, cfg)
    assert (depth > 0).all() and (depth < cfg.max_depth).all()
    depth.sum().backward()
    assert (kernels.grad[0, 2:] > 0).all()


def test_gathered_depth_equals_map_gather():
    gen = torch.Generator().manual_seed(1)
    kernels = torch.randn(5, 18, generator=gen)
    emb = torch.randn(16, 9, 11, generator=gen)
    index = torch.randint(0, 5, (9, 11), generator=gen)
    cfg = DepthConfig()
    full = depth_maps(kernels, emb, cfg)
    expected = full.gather(0, index[None])[0]
    torch.testing.assert_close(gathered_depth(kernels, index, emb, cfg), expected, atol=1e-4, rtol=1e-5)
