"""The native deformable-conv kernel: the same bits as torchvision's CPU kernel, and its fallbacks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torchvision.ops import deform_conv2d as tv_deform_conv2d

from panopticdepth.modeling import native_dcn
from panopticdepth.modeling.deform_conv import ModulatedDeformConv2d

needs_native = pytest.mark.skipif(
    not native_dcn.available(),
    reason=f"native deformable-conv kernel unavailable: {native_dcn.unavailable_reason()}",
)


def _case(b, c, o, h, w, k=3, stride=1, pad=1, dil=1, dtype=torch.float32, seed=0, offset_scale=3.0):
    g = torch.Generator().manual_seed(seed)
    out_h = (h + 2 * pad - (dil * (k - 1) + 1)) // stride + 1
    out_w = (w + 2 * pad - (dil * (k - 1) + 1)) // stride + 1
    x = torch.randn(b, c, h, w, generator=g, dtype=dtype)
    offset = torch.randn(b, 2 * k * k, out_h, out_w, generator=g, dtype=dtype) * offset_scale
    # Integer offsets on every third row: sampling points exactly on pixels and on the borders.
    offset[..., ::3, :] = offset[..., ::3, :].round()
    mask = torch.rand(b, k * k, out_h, out_w, generator=g, dtype=dtype)
    weight = torch.randn(o, c, k, k, generator=g, dtype=dtype) * 0.1
    bias = torch.randn(o, generator=g, dtype=dtype)
    return x, offset, mask, weight, bias


CASES = {
    # The model's stride-4 layer at a 128x256 input: 256 -> 256 channels, 32x64.
    "encoder_layer": dict(b=1, c=256, o=256, h=32, w=64),
    "coord_channels": dict(b=1, c=258, o=27, h=9, w=13),
    "batch2": dict(b=2, c=8, o=5, h=7, w=9),
    "batch3_one_gemm": dict(b=3, c=6, o=4, h=5, w=6),
    "batch6": dict(b=6, c=4, o=3, h=5, w=5),
    "stride2": dict(b=4, c=16, o=8, h=10, w=6, stride=2),
    "k5_dilated_f64": dict(b=3, c=6, o=4, h=9, w=11, k=5, pad=2, dil=2, dtype=torch.float64),
    "k1_no_pad": dict(b=2, c=4, o=3, h=5, w=5, k=1, pad=0),
    "one_pixel": dict(b=1, c=3, o=2, h=1, w=1),
    "far_offsets": dict(b=1, c=4, o=2, h=6, w=7, offset_scale=20.0),
}


@needs_native
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("with_mask", [True, False])
@pytest.mark.parametrize("with_bias", [True, False])
def test_bitwise_equal_to_torchvision(name, with_mask, with_bias):
    x, offset, mask, weight, bias = _case(**CASES[name])
    kw = CASES[name]
    args = dict(
        stride=kw.get("stride", 1), padding=kw.get("pad", 1), dilation=kw.get("dil", 1),
        mask=mask if with_mask else None,
    )  # fmt: skip
    b = bias if with_bias else None
    with torch.no_grad():
        want = tv_deform_conv2d(x, offset, weight, b, **args)
        got = native_dcn.deform_conv2d(x, offset, weight, b, **args)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert torch.equal(got, want), f"max abs diff {(got - want).abs().max().item()}"


@needs_native
def test_thread_count_does_not_change_bits():
    x, offset, mask, weight, bias = _case(1, 32, 16, 12, 20)
    before = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with torch.no_grad():
                outs.append(native_dcn.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(outs[0], outs[1])


def test_parallel_images_follows_torchvision_grouping():
    # Measured against torchvision 0.29 (see the batch cases above for the bits).
    assert [native_dcn.parallel_images(b) for b in (1, 2, 3, 4, 8, 32, 33, 34, 64)] == [
        1, 2, 3, 4, 8, 32, 11, 17, 32,
    ]  # fmt: skip


@needs_native
def test_bad_arguments_are_named():
    x, offset, mask, weight, bias = _case(1, 4, 3, 5, 5)
    with pytest.raises(ValueError, match="offset must be"):
        native_dcn.deform_conv2d(x, offset[:, :10], weight, bias, padding=1)
    with pytest.raises(ValueError, match="mask must be"):
        native_dcn.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask[:, :4])
    with pytest.raises(ValueError, match="input channels"):
        native_dcn.deform_conv2d(x[:, :3], offset, weight, bias, padding=1)
    with pytest.raises(ValueError, match="float32/float64"):
        native_dcn.deform_conv2d(x.half(), offset, weight, bias, padding=1)
    with pytest.raises(RuntimeError, match="no backward"):
        native_dcn.deform_conv2d(
            x.requires_grad_(), offset, weight, bias, padding=1, gemm_dtype=torch.bfloat16
        )


@needs_native
def test_module_auto_uses_native_in_inference_and_for_autograd(monkeypatch):
    torch.manual_seed(0)
    module = ModulatedDeformConv2d(8, 6, impl="auto")
    reference = ModulatedDeformConv2d(8, 6, impl="torchvision")
    reference.load_state_dict(module.state_dict())
    x = torch.randn(2, 8, 9, 10)
    calls = []
    real = native_dcn.deform_conv2d

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(native_dcn, "deform_conv2d", counting)
    with torch.inference_mode():
        assert torch.equal(module(x), reference(x))
    assert len(calls) == 1
    # With autograd the module takes the native kernel and its backward: same values, gradients flow.
    out = module(x.requires_grad_())
    assert len(calls) == 2
    out.sum().backward()
    assert module.weight.grad is not None and x.grad is not None
    assert torch.equal(out.detach(), reference(x).detach())


def test_native_requested_but_unavailable_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(native_dcn, "_library", None)
    monkeypatch.setattr(native_dcn, "_failure", "no C compiler found (test)")
    module = ModulatedDeformConv2d(4, 4, impl="native")
    with torch.no_grad(), pytest.raises(RuntimeError, match="no C compiler found"):
        module(torch.randn(1, 4, 5, 5))
    # "auto" falls back to torchvision's kernel instead.
    module.impl = "auto"
    with torch.no_grad():
        assert module(torch.randn(1, 4, 5, 5)).shape == (1, 4, 5, 5)


def test_without_a_compiler_available_is_false_and_names_the_cause(tmp_path):
    code = (
        "from panopticdepth.modeling import native_dcn as n\n"
        "print(n.available())\n"
        "print(n.unavailable_reason())\n"
    )
    env = dict(os.environ, CC=str(tmp_path / "no-such-cc"), PANOPTICDEPTH_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "False"
    assert "no-such-cc" in proc.stdout and "failed" in proc.stdout


@needs_native
def test_compiles_into_the_cache_dir_once(tmp_path):
    code = (
        "from panopticdepth.modeling import native_dcn as n\n"
        "assert n.available(), n.unavailable_reason()\n"
        "print(sorted(p.name for p in n.cache_dir().iterdir()))\n"
    )
    env = dict(os.environ, PANOPTICDEPTH_CACHE_DIR=str(tmp_path))
    runs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        for _ in range(2)
    ]
    for proc in runs:
        assert proc.returncode == 0, proc.stderr
    assert runs[0].stdout == runs[1].stdout
    names = eval(runs[0].stdout)  # a printed list of file names
    assert len(names) == 1 and names[0].startswith("deform_im2col-") and names[0].endswith(".so")


@needs_native
def test_layouts_and_empty_batch():
    x, offset, mask, weight, bias = _case(2, 8, 4, 6, 7)
    with torch.no_grad():
        want = tv_deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
        # channels-last input, offset and mask as slices of one larger tensor (as the module makes them)
        om = torch.cat((offset, mask), 1)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        got = native_dcn.deform_conv2d(x_cl, om[:, :18], weight, bias, padding=1, mask=om[:, 18:])
        assert torch.equal(got, want)
        empty = native_dcn.deform_conv2d(x[:0], offset[:0], weight, bias, padding=1, mask=mask[:0])
    assert empty.shape == (0, 4, 6, 7)
    with pytest.raises(ValueError, match="too small"):
        native_dcn.deform_conv2d(x[..., :1, :1], offset[..., :1, :1], torch.randn(4, 8, 5, 5), bias)


@needs_native
def test_bf16_gemm_variant_rounds_columns_once():
    """float32 sampling (torchvision's columns), one rounding to bfloat16, a bfloat16 GEMM."""
    x, offset, mask, weight, bias = _case(2, 16, 12, 7, 9)
    c = x.shape[1]
    with torch.no_grad():
        identity = torch.eye(c * 9).view(c * 9, c, 3, 3)
        cols = tv_deform_conv2d(x, offset, identity, None, padding=1, mask=mask)  # (B, C*9, H, W)
        w_bf16 = weight.view(12, -1).bfloat16()
        gemms = [torch.mm(w_bf16, cols[n].reshape(c * 9, -1).bfloat16()) for n in range(2)]
        want = torch.stack(gemms).view(2, 12, 7, 9) + bias.bfloat16().view(1, -1, 1, 1)
        bf16 = torch.bfloat16
        got = native_dcn.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask, gemm_dtype=bf16)
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match="gemm_dtype"):
        x64, off64, w64 = x.double(), offset.double(), weight.double()
        native_dcn.deform_conv2d(x64, off64, w64, None, padding=1, gemm_dtype=bf16)


@needs_native
def test_module_under_bf16_autocast_uses_the_bf16_variant(monkeypatch):
    torch.manual_seed(0)
    module = ModulatedDeformConv2d(8, 6, impl="auto")
    x = torch.randn(1, 8, 9, 10)
    seen = []
    real = native_dcn.deform_conv2d

    def spy(*args, **kwargs):
        seen.append(kwargs.get("gemm_dtype"))
        return real(*args, **kwargs)

    monkeypatch.setattr(native_dcn, "deform_conv2d", spy)
    with torch.inference_mode():
        exact = module(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = module(x)
    assert seen == [None, torch.bfloat16]
    assert low.dtype == torch.bfloat16
    assert torch.allclose(low.float(), exact, rtol=0.05, atol=0.05 * exact.abs().max().item())


@needs_native
def test_workspaces_survive_switching_inference_mode_and_no_grad():
    x, offset, mask, weight, bias = _case(1, 8, 4, 6, 7)
    want = tv_deform_conv2d(x, offset, weight, bias, padding=1, mask=mask).detach()
    native_dcn.release_buffers()
    with torch.inference_mode():
        first = native_dcn.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
    with torch.no_grad():
        second = native_dcn.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
    assert torch.equal(first, want) and torch.equal(second, want)
