"""Deformable convolution forward + backward on the CPU: torchvision's kernel against the native one.

The layer of the paper model's heads: 256 -> 256 channels, 3x3, padding 1, with offsets and a
modulation mask, on a 64x128 map (batch 1). Gradients are taken for everything (input, offset,
mask, weight, bias), as in fine-tuning. The two kernels alternate within each repetition, so both
see the same machine load; the table gives medians.

    python benchmarks/dcn_backward.py [--runs 5] [--threads 2] [--size 64x128] [--channels 256]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torchvision.ops import deform_conv2d as tv_deform_conv2d

from panopticdepth.modeling import native_dcn


def _inputs(channels: int, h: int, w: int, batch: int):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, h, w, generator=g)
    offset = torch.randn(batch, 18, h, w, generator=g) * 2.0
    mask = torch.rand(batch, 9, h, w, generator=g)
    weight = torch.randn(channels, channels, 3, 3, generator=g) * (2.0 / (9 * channels)) ** 0.5
    bias = torch.zeros(channels)
    grad_out = torch.randn(batch, channels, h, w, generator=g)
    return (x, offset, mask, weight, bias), grad_out


def _step(fn, tensors, grad_out):
    """One forward + backward; returns (forward s, backward s, gradients)."""
    x, offset, mask, weight, bias = (t.detach().clone().requires_grad_() for t in tensors)
    t0 = time.perf_counter()
    out = fn(x, offset, weight, bias, padding=1, mask=mask)
    t1 = time.perf_counter()
    out.backward(grad_out)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, [t.grad for t in (x, offset, mask, weight, bias)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", default="64x128")
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    if not native_dcn.available():
        raise SystemExit(f"native kernel unavailable: {native_dcn.unavailable_reason()}")
    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.split("x"))
    tensors, grad_out = _inputs(args.channels, h, w, args.batch)
    kernels = {"torchvision": tv_deform_conv2d, "native": native_dcn.deform_conv2d}
    times = {name: ([], []) for name in kernels}
    grads = {}
    for name, fn in kernels.items():  # warm-up (compiles the native kernel, allocates workspaces)
        grads[name] = _step(fn, tensors, grad_out)[2]
    for _ in range(args.runs):
        for name, fn in kernels.items():
            fwd, bwd, _ = _step(fn, tensors, grad_out)
            times[name][0].append(fwd)
            times[name][1].append(bwd)

    print(
        f"deform_conv2d forward + backward, {args.channels} -> {args.channels} channels, 3x3, "
        f"{h}x{w}, batch {args.batch}, {args.threads} threads, median of {args.runs}"
    )
    print()
    print("| kernel | forward ms | backward ms | forward + backward ms | speed-up |")
    print("|---|---|---|---|---|")
    totals = {name: statistics.median(f + b for f, b in zip(*times[name])) for name in kernels}
    for name in kernels:
        fwd, bwd = (statistics.median(v) * 1e3 for v in times[name])
        speed_up = totals["torchvision"] / totals[name]
        print(f"| {name} | {fwd:.0f} | {bwd:.0f} | {totals[name] * 1e3:.0f} | {speed_up:.2f}x |")
    print()
    for label, got, want in zip(
        ("input", "offset", "mask", "weight", "bias"), grads["native"], grads["torchvision"]
    ):
        err = (got - want).abs().max().item() / want.abs().max().item()
        print(f"grad {label}: max abs difference / max abs value = {err:.1e}")


if __name__ == "__main__":
    main()
