"""Heads: CoordConv order, DCNv2 offset/mask chunking and kernels, tower variants, init rules."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import deform_conv2d

from panopticdepth.modeling.deform_conv import ModulatedDeformConv2d, deform_conv3x3_sample
from panopticdepth.modeling.heads import PositionHead, Tower, append_coords
from panopticdepth.modeling.semantic_fpn import SemanticFPN


def _bilinear(img_hw, y, x):
    """Zero outside the image; corners outside read 0 (DCN's rule)."""
    h, w = img_hw.shape
    if y <= -1 or y >= h or x <= -1 or x >= w:
        return 0.0
    y0, x0 = math.floor(y), math.floor(x)
    total = 0.0
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                total += wy * wx * float(img_hw[yy, xx])
    return total


def _brute_force_dcn(x, offset, mask, weight, bias):
    b, c, h, w = x.shape
    out = torch.zeros(b, weight.shape[0], h, w, dtype=torch.float64)
    for n in range(b):
        for o in range(weight.shape[0]):
            for i in range(h):
                for j in range(w):
                    acc = float(bias[o])
                    for k in range(9):
                        ki, kj = divmod(k, 3)
                        py = i + ki - 1 + float(offset[n, 2 * k, i, j])
                        px = j + kj - 1 + float(offset[n, 2 * k + 1, i, j])
                        m = float(mask[n, k, i, j])
                        for ci in range(c):
                            acc += float(weight[o, ci, ki, kj]) * m * _bilinear(x[n, ci], py, px)
                    out[n, o, i, j] = acc
    return out


def test_dcn_kernels_match_brute_force_and_each_other():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 4, 5, generator=g, dtype=torch.float64)
    off = 2.5 * torch.randn(1, 18, 4, 5, generator=g, dtype=torch.float64)
    mask = torch.rand(1, 9, 4, 5, generator=g, dtype=torch.float64)
    wt = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(3, generator=g, dtype=torch.float64)
    ref = _brute_force_dcn(x, off, mask, wt, bias)
    tv = deform_conv2d(x, off, wt, bias, padding=1, mask=mask)
    fast = deform_conv3x3_sample(x, off, mask, wt, bias)
    assert torch.allclose(tv, ref, atol=1e-10)
    assert torch.allclose(fast, ref, atol=1e-10)


def test_dcn_sample_gradients_match_torchvision():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    off = (2 * torch.randn(2, 18, 6, 7, generator=g, dtype=torch.float64)).requires_grad_()
    mask = torch.rand(2, 9, 6, 7, generator=g, dtype=torch.float64).requires_grad_()
    wt = torch.randn(5, 4, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    grads = []
    for fn in (lambda: deform_conv2d(x, off, wt, None, padding=1, mask=mask),
               lambda: deform_conv3x3_sample(x, off, mask, wt, None)):  # fmt: skip
        y = fn()
        gs = torch.autograd.grad((y**2).sum(), (x, off, mask, wt))
        grads.append(gs)
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-8)


@pytest.mark.parametrize("impl", ["sample", "torchvision"])
def test_offset_mask_chunking(impl):
    torch.manual_seed(0)
    m = ModulatedDeformConv2d(6, 4, bias=True, impl=impl).double()
    x = torch.randn(1, 6, 5, 6, dtype=torch.float64)
    om = m.offset_conv(x)
    o1, o2, logits = torch.chunk(om, 3, dim=1)  # the original's split
    want = deform_conv2d(x, torch.cat((o1, o2), 1), m.weight, m.bias, padding=1, mask=logits.sigmoid())
    assert torch.allclose(m(x), want, atol=1e-10)
    assert m.offset_conv.out_channels == 27


def test_coord_channels_order():
    x = torch.zeros(2, 3, 4, 5)
    y = append_coords(x)
    assert y.shape == (2, 5, 4, 5)
    rows = torch.linspace(-1, 1, 4)
    cols = torch.linspace(-1, 1, 5)
    for i in range(4):
        for j in range(5):
            assert float(y[1, 3, i, j]) == pytest.approx(float(rows[i]))  # varies along height
            assert float(y[1, 4, i, j]) == pytest.approx(float(cols[j]))  # varies along width


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_coords_keep_a_channels_last_input_channels_last(dtype):
    x = torch.randn(2, 6, 5, 7).to(dtype)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    y, y_cl = append_coords(x), append_coords(x_cl)
    assert y.is_contiguous()
    # the same values, in the input's layout (the next conv then needs no layout conversion)
    assert y_cl.is_contiguous(memory_format=torch.channels_last) and not y_cl.is_contiguous()
    assert y_cl.dtype == dtype and torch.equal(y_cl, y)


def test_coords_are_linspace_eagerly_and_dynamic_under_export():
    # Eager: torch.linspace's own bits (what the oracle was made with).
    x = torch.zeros(1, 1, 7, 13)
    y = append_coords(x)
    assert torch.equal(y[0, 1, :, 0], torch.linspace(-1.0, 1.0, 7))
    assert torch.equal(y[0, 2, 0], torch.linspace(-1.0, 1.0, 13))

    # Exported with a dynamic size, the ramp follows the input size (not frozen to the example)
    # and stays within 1 ulp of linspace.
    class Coords(torch.nn.Module):
        def forward(self, x):
            return append_coords(x)

    from torch.export import Dim, export

    h, w = Dim("h", min=2, max=64), Dim("w", min=2, max=64)
    program = export(Coords(), (torch.zeros(1, 1, 8, 16),), dynamic_shapes=({2: h, 3: w},))
    got = program.module()(torch.zeros(1, 1, 7, 13))
    assert got.shape == (1, 3, 7, 13)
    torch.testing.assert_close(got[0, 1, :, 0], torch.linspace(-1.0, 1.0, 7), rtol=0, atol=1.2e-7)
    torch.testing.assert_close(got[0, 2, 0], torch.linspace(-1.0, 1.0, 13), rtol=0, atol=1.2e-7)


def test_tower_variants_share_names_minus_offset_conv():
    deform = Tower(16, 32, num_convs=3, deform=True, coord=True, norm="GN", groups=8)
    plain = Tower(16, 32, num_convs=3, deform=False, coord=True, norm="GN", groups=8)
    dk = {k for k in deform.state_dict() if "offset_conv" not in k}
    assert dk == set(plain.state_dict())
    assert deform.layers[0].conv.weight.shape == (32, 18, 3, 3)  # coords: +2 input channels
    assert deform.layers[0].conv.bias is None  # GN -> no conv bias
    nobn = Tower(16, 32, num_convs=3, deform=True, coord=True, norm="", groups=8)
    assert nobn.layers[2].conv.bias is not None


def test_encoder_tower_keeps_last_relu():
    t = Tower(8, 8, num_convs=3, deform=True, coord=True, norm="", groups=8)
    with torch.no_grad():
        y = t(torch.randn(1, 8, 6, 6))
    assert float(y.min()) >= 0.0


def test_position_head_prior_bias_both_outputs():
    tower = Tower(16, 32, num_convs=1, deform=False, coord=False, norm="GN", groups=8, deform_impl="sample")
    h = PositionHead(tower, num_thing_classes=8, num_classes=19, bias_value=-2.19)
    assert h.center_out.in_channels == h.region_out.in_channels == 32
    assert torch.allclose(h.center_out.bias, torch.full((8,), -2.19))
    assert torch.allclose(h.region_out.bias, torch.full((19,), -2.19))
    assert float(h.center_out.weight.detach().std()) < 0.02


def test_semantic_fpn_structure_and_sum():
    torch.manual_seed(0)
    s = SemanticFPN(8, 8, "GN", 4).eval()
    convs = sorted(k for k in s.state_dict() if k.endswith("conv.weight"))
    assert convs == [
        "branches.p2.0.conv.weight", "branches.p3.0.conv.weight", "branches.p4.0.conv.weight",
        "branches.p4.2.conv.weight", "branches.p5.0.conv.weight", "branches.p5.2.conv.weight",
        "branches.p5.4.conv.weight",
    ]  # fmt: skip
    feats = {f"p{k}": torch.randn(1, 8, 32 // 2**k, 64 // 2**k) for k in (2, 3, 4, 5)}
    with torch.no_grad():
        out = s(feats)
        want = sum(s.branches[p](feats[p]) for p in ("p2", "p3", "p4", "p5"))
    assert out.shape == (1, 8, 8, 16)
    assert torch.allclose(out, want)


def test_dcn_sample_row_chunks_and_batch(monkeypatch):
    import panopticdepth.modeling.deform_conv as dc

    monkeypatch.setattr(dc, "_CHUNK_POSITIONS", 14)  # 2 rows of 7 per chunk, last chunk shorter
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, 5, 7, generator=g, dtype=torch.float64)
    off = 3 * torch.randn(3, 18, 5, 7, generator=g, dtype=torch.float64)
    mask = torch.rand(3, 9, 5, 7, generator=g, dtype=torch.float64)
    wt = torch.randn(6, 4, 3, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(6, generator=g, dtype=torch.float64)
    with torch.no_grad():
        got = dc.deform_conv3x3_sample(x, off, mask, wt, bias)
    assert torch.allclose(got, deform_conv2d(x, off, wt, bias, padding=1, mask=mask), atol=1e-10)


def test_set_deform_impl_switches_deformable_convs_only():
    from panopticdepth.modeling.deform_conv import ModulatedDeformConv2d, set_deform_impl

    torch.manual_seed(0)
    t = Tower(8, 8, num_convs=2, deform=True, coord=True, norm="", groups=8, deform_impl="sample")
    other = torch.nn.Linear(2, 2)
    other.impl = "keep"  # an unrelated attribute of the same name is not touched
    model = torch.nn.Sequential(t, torch.nn.Module())
    model[1].add_module("other", other)
    x = torch.randn(1, 8, 6, 7)
    with torch.no_grad():
        before = t(x)
        assert set_deform_impl(model, "torchvision") == 2
        after = t(x)
    assert all(m.impl == "torchvision" for m in t.modules() if isinstance(m, ModulatedDeformConv2d))
    assert other.impl == "keep"
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)  # same function, another kernel
    with pytest.raises(ValueError, match="unknown deformable conv"):
        set_deform_impl(model, "cuda-magic")


@pytest.mark.parametrize(
    "size, dtype, groups, plain_kernel",
    [
        ((8, 16), torch.float32, 4, True),  # small map
        ((32, 64), torch.float32, 4, False),
        ((32, 64), torch.bfloat16, 4, True),  # bf16 training, 4 channels per group
        ((32, 64), torch.bfloat16, 2, False),  # bf16 training, 8 channels per group
    ],
)
def test_group_norm_gives_the_plain_layout_values_in_the_input_layout(
    monkeypatch, size, dtype, groups, plain_kernel
):
    import torch.nn.functional as F

    from panopticdepth.modeling.layout import GroupNorm
    from panopticdepth.modeling.semantic_fpn import make_norm

    kernel_inputs: list[torch.Tensor] = []
    group_norm = F.group_norm

    def spy(x, *args, **kwargs):
        kernel_inputs.append(x)
        return group_norm(x, *args, **kwargs)

    monkeypatch.setattr(F, "group_norm", spy)
    assert isinstance(make_norm("GN", 16, 4), GroupNorm)  # the heads' and semantic FPN's norm
    torch.manual_seed(0)
    gn = GroupNorm(groups, 16)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 1.5)
        gn.bias.uniform_(-0.5, 0.5)
    ref = torch.nn.GroupNorm(groups, 16)
    ref.load_state_dict(gn.state_dict())
    x = torch.randn(2, 16, *size).to(dtype)
    x_cl = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    x = x.requires_grad_(True)
    y, y_cl = ref(x), gn(x_cl)
    # the channels_last map goes through the plain kernel or keeps its layout (module docstring)
    assert kernel_inputs[-1].is_contiguous() is plain_kernel
    with torch.no_grad():  # inference keeps the channels_last kernel on a large map
        gn(x_cl)
    assert kernel_inputs[-1].is_contiguous() is (size[0] * size[1] < 1024)
    assert torch.equal(gn(x.detach()), ref(x.detach()))  # NCHW: nn.GroupNorm's own path
    assert y_cl.is_contiguous(memory_format=torch.channels_last) and not y_cl.is_contiguous()
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(y_cl, y, **tol)
    g = torch.randn_like(y)
    y.backward(g)
    y_cl.backward(g.contiguous(memory_format=torch.channels_last))
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 5e-2, "atol": 5e-2}
    torch.testing.assert_close(x_cl.grad, x.grad, **tol)
