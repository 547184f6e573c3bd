"""The native deformable-conv backward: gradcheck in float64, torchvision's gradients in float32."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import deform_conv2d as tv_deform_conv2d

from panopticdepth.modeling import native_dcn
from panopticdepth.modeling.deform_conv import ModulatedDeformConv2d

pytestmark = pytest.mark.skipif(
    not native_dcn.available(),
    reason=f"native deformable-conv kernel unavailable: {native_dcn.unavailable_reason()}",
)


def _inputs(b, c, o, h, w, k=3, stride=1, pad=1, dil=1, dtype=torch.float64, seed=0, offset_scale=2.0):
    g = torch.Generator().manual_seed(seed)
    out_h = (h + 2 * pad - (dil * (k - 1) + 1)) // stride + 1
    out_w = (w + 2 * pad - (dil * (k - 1) + 1)) // stride + 1
    x = torch.randn(b, c, h, w, generator=g, dtype=dtype)
    offset = torch.randn(b, 2 * k * k, out_h, out_w, generator=g, dtype=dtype) * offset_scale
    mask = torch.rand(b, k * k, out_h, out_w, generator=g, dtype=dtype)
    weight = torch.randn(o, c, k, k, generator=g, dtype=dtype) * 0.5
    bias = torch.randn(o, generator=g, dtype=dtype)
    geometry = dict(stride=stride, padding=pad, dilation=dil)
    return x, offset, mask, weight, bias, geometry


# Tiny shapes: 5 and 6 channels run both the four-channel and the one-channel inner loops, and with
# two threads each thread gets a different mix.
GRADCHECK_CASES = {
    "basic": dict(b=1, c=5, o=3, h=5, w=6),
    "batch3": dict(b=3, c=6, o=2, h=4, w=5),
    "stride2": dict(b=2, c=5, o=3, h=7, w=6, stride=2),
    "dilated_k5": dict(b=1, c=4, o=2, h=7, w=8, k=5, pad=2, dil=2),
    "k1_no_pad": dict(b=2, c=3, o=2, h=4, w=4, k=1, pad=0),
    # Offsets of ~6 pixels on a 5x6 image: many samples land outside, some across the border.
    "far_offsets": dict(b=2, c=5, o=2, h=5, w=6, offset_scale=6.0),
}


@pytest.mark.parametrize("name", list(GRADCHECK_CASES))
@pytest.mark.parametrize("with_mask", [True, False])
@pytest.mark.parametrize("with_bias", [True, False])
def test_gradcheck_float64(name, with_mask, with_bias):
    x, offset, mask, weight, bias, geometry = _inputs(**GRADCHECK_CASES[name])
    tensors = [x, offset, weight]
    if with_mask:
        tensors.append(mask)
    if with_bias:
        tensors.append(bias)
    for t in tensors:
        t.requires_grad_()

    def fn(*args):
        xx, oo, ww = args[:3]
        rest = list(args[3:])
        mm = rest.pop(0) if with_mask else None
        bb = rest.pop(0) if with_bias else None
        return native_dcn.deform_conv2d(xx, oo, ww, bb, mask=mm, **geometry)

    assert fn(*tensors).grad_fn.name() == "DeformConv2dFunctionBackward"
    assert torch.autograd.gradcheck(fn, tuple(tensors), eps=1e-6, atol=1e-6, rtol=1e-5)


def _grads(fn, x, offset, mask, weight, bias, geometry, grad_out):
    leaves = [t.detach().clone().requires_grad_() for t in (x, offset, mask, weight, bias)]
    out = fn(leaves[0], leaves[1], leaves[3], leaves[4], mask=leaves[2], **geometry)
    out.backward(grad_out)
    return out.detach(), [t.grad for t in leaves]


def _close(got, want, name, rel=2e-5):
    scale = want.abs().max().item()
    err = (got - want).abs().max().item()
    assert err <= rel * scale + 1e-6, f"{name}: max abs diff {err} (scale {scale})"


@pytest.mark.parametrize("stride", [1, 2])
def test_float32_gradients_equal_torchvision(stride):
    """A realistic layer (32 -> 32 channels, 32x64) with offsets of a few pixels; every third row of
    offsets rounded to integers, so that samples fall exactly on pixels and on the border lines
    (y = -1 or x = -1 exactly, where torchvision's offset gradient is one-sided)."""
    x, offset, mask, weight, bias, geometry = _inputs(2, 32, 32, 32, 64, stride=stride, dtype=torch.float32)
    offset[..., ::3, :] = offset[..., ::3, :].round()
    weight = weight * 0.1
    grad_out = torch.randn(2, 32, *offset.shape[-2:], generator=torch.Generator().manual_seed(5))
    out_n, grads_n = _grads(native_dcn.deform_conv2d, x, offset, mask, weight, bias, geometry, grad_out)
    out_t, grads_t = _grads(tv_deform_conv2d, x, offset, mask, weight, bias, geometry, grad_out)
    assert torch.equal(out_n, out_t)
    for name, got, want in zip(("input", "offset", "mask", "weight", "bias"), grads_n, grads_t):
        _close(got, want, name)


def test_border_samples_follow_torchvision_offset_gradient():
    """Samples exactly on y = -1 / x = -1 (value 0, nonzero one-sided offset gradient) and just
    outside (all zero), in float64 where the two kernels agree to ~1e-15."""
    x, offset, mask, weight, bias, geometry = _inputs(1, 6, 3, 5, 6)
    offset.zero_()
    offset[:, 0::2, 0, :] = 0.0  # tap row 0 at output row 0 samples y = -1 exactly
    offset[:, 1::2, :, 0] = -1e-9  # tap column 0 at output column 0: x just below -1
    offset[:, 1::2, :, 1] = -1.0  # output column 1, tap column 0: x = -1 exactly
    grad_out = torch.randn(1, 3, 5, 6, dtype=torch.float64)
    _, grads_n = _grads(native_dcn.deform_conv2d, x, offset, mask, weight, bias, geometry, grad_out)
    _, grads_t = _grads(tv_deform_conv2d, x, offset, mask, weight, bias, geometry, grad_out)
    assert grads_t[1].abs().sum() > 0
    for name, got, want in zip(("input", "offset", "mask", "weight", "bias"), grads_n, grads_t):
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-12), name


def test_only_some_inputs_need_gradients():
    x, offset, mask, weight, bias, geometry = _inputs(2, 6, 4, 6, 7)
    grad_out = torch.randn(2, 4, 6, 7, dtype=torch.float64)
    _, full = _grads(native_dcn.deform_conv2d, x, offset, mask, weight, bias, geometry, grad_out)
    for index in range(5):
        leaves = [t.detach().clone() for t in (x, offset, mask, weight, bias)]
        leaves[index].requires_grad_()
        out = native_dcn.deform_conv2d(leaves[0], leaves[1], leaves[3], leaves[4], mask=leaves[2], **geometry)
        (grad,) = torch.autograd.grad(out, leaves[index], grad_out)
        assert torch.allclose(grad, full[index], rtol=1e-12, atol=1e-12), index


def test_layouts_casts_and_empty_batch():
    x, offset, mask, weight, bias, geometry = _inputs(2, 8, 4, 6, 7, dtype=torch.float32)
    grad_out = torch.randn(2, 4, 6, 7)
    _, want = _grads(tv_deform_conv2d, x, offset, mask, weight, bias, geometry, grad_out)
    # channels-last input, offset and mask as slices of one tensor (as the module makes them),
    # a float64 weight cast to the input's dtype inside the graph, and an expanded grad_out.
    xl = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    om = torch.cat((offset, mask), 1).requires_grad_()
    w64 = weight.double().requires_grad_()
    out = native_dcn.deform_conv2d(xl, om[:, :18], w64, bias, padding=1, mask=om[:, 18:])
    (out * grad_out).sum().backward()
    _close(xl.grad, want[0], "input")
    _close(om.grad[:, :18], want[1], "offset")
    _close(om.grad[:, 18:], want[2], "mask")
    assert w64.grad.dtype == torch.float64
    _close(w64.grad.float(), want[3], "weight")
    empty = x[:0].clone().requires_grad_()
    out = native_dcn.deform_conv2d(empty, offset[:0], weight.requires_grad_(), bias, padding=1, mask=mask[:0])
    out.sum().backward()
    assert empty.grad.shape == empty.shape and torch.count_nonzero(weight.grad) == 0


def test_thread_counts_agree():
    x, offset, mask, weight, bias, geometry = _inputs(1, 13, 5, 9, 11, dtype=torch.float32)
    grad_out = torch.randn(1, 5, 9, 11)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(
                _grads(native_dcn.deform_conv2d, x, offset, mask, weight, bias, geometry, grad_out)[1]
            )
    finally:
        torch.set_num_threads(before)
    for name, a, b in zip(("input", "offset", "mask", "weight", "bias"), *results):
        _close(a, b, name, rel=1e-6)


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_module_picks_native_under_autograd_on_cpu():
    torch.manual_seed(0)
    module = ModulatedDeformConv2d(8, 6, impl="auto")
    reference = ModulatedDeformConv2d(8, 6, impl="torchvision")
    reference.load_state_dict(module.state_dict())
    x = torch.randn(2, 8, 9, 10)
    out = module(x)
    assert out.grad_fn.name() == "DeformConv2dFunctionBackward"
    want = reference(x)
    assert torch.equal(out.detach(), want.detach())
    out.square().sum().backward()
    want.square().sum().backward()
    for (name, got), want_p in zip(module.named_parameters(), reference.parameters()):
        _close(got.grad, want_p.grad, name)
    # Under bf16 autocast with autograd: the float32 native kernel and backward.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = module(x.bfloat16().requires_grad_())
    assert low.grad_fn.name() == "DeformConv2dFunctionBackward" and low.dtype == torch.float32
    # "torchvision" is still torchvision's kernel, and so is tracing under "auto".
    assert "DeformConv2dFunction" not in reference(x).grad_fn.name()
    traced = torch.jit.trace(module, (x,), check_trace=False)
    assert "pd_dcn" not in str(traced.graph) and "deform_conv2d" in str(traced.graph)
