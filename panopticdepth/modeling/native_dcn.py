"""A faster CPU `torchvision.ops.deform_conv2d`: bit-identical forward, native backward.

torchvision's CPU kernel builds the im2col columns in one single-threaded loop that redoes the
bilinear coordinate work for every channel; on this model that loop, not the GEMM, is most of the
cost. `csrc/deform_im2col.c` does the same floating-point operations in the same order, with the
coordinate work done once per (tap, position) and the channels split over OpenMP threads; the
columns then go through the same `weight @ columns` GEMM that torchvision issues, so the output
has the same bits (tests compare with `torch.equal`).

Under autograd the call goes through `DeformConv2dFunction`, whose backward is native too: the
column gradient `weight^T @ grad_out` and the weight gradient `grad_out @ columns^T` are PyTorch
GEMMs, and one C pass per image turns the column gradient into the input gradient (column to image,
each thread owning whole channel planes) and the offset and mask gradients (per-thread sums over
its channels, added up at the end). Gradients equal torchvision's to float32 rounding; measured
4x faster forward + backward than torchvision's CPU kernel on the model's 256-channel layer
(benchmarks/dcn_backward.py).

The C file is compiled on first use with the system C compiler (`$CC`, else `cc`) into a cache
directory (`$PANOPTICDEPTH_CACHE_DIR`, else `$XDG_CACHE_HOME/panopticdepth`, else
`~/.cache/panopticdepth`) and loaded with ctypes. Built with `-fopenmp`, it links `libgomp.so.1`,
which resolves to the copy PyTorch has already loaded, so PyTorch, MKL and this kernel share one
thread pool (`torch.get_num_threads()` threads). No compiler means `available()` is False and
callers fall back to torchvision's kernel.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "deform_im2col.c"
# -ffp-contract=off: no fused multiply-add, whose single rounding would change the bits.
_FLAGS = ["-O3", "-std=c99", "-fPIC", "-shared", "-ffp-contract=off", "-fno-math-errno"]
# OpenMP (binding to PyTorch's own libgomp) when the compiler has it. No -march=native: vector
# gathers were slower than the baseline x86-64 code on the machine this was tuned on, and a
# portable build can sit in a shared cache.
_OPTIONAL_FLAGS = (["-fopenmp"], [])
# torchvision groups at most this many images into one GEMM (its kMaxParallelImgs).
_MAX_PARALLEL_IMGS = 32

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_failure: str | None = None
_buffers = threading.local()


def cache_dir() -> Path:
    if os.environ.get("PANOPTICDEPTH_CACHE_DIR"):
        return Path(os.environ["PANOPTICDEPTH_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "panopticdepth"


def _compile(compiler: str, out: Path) -> str | None:
    """Build the shared library at `out` (atomically); returns an error text or None."""
    out.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for extra in _OPTIONAL_FLAGS:
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
        cmd = [compiler, *_FLAGS, *extra, str(SOURCE), "-o", tmp]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            errors.append(f"{' '.join(cmd)}: {exc}")
            Path(tmp).unlink(missing_ok=True)
            continue
        if proc.returncode == 0:
            os.replace(tmp, out)
            return None
        Path(tmp).unlink(missing_ok=True)
        errors.append(f"{' '.join(cmd)}:\n{proc.stderr.strip()}")
    return "\n".join(errors)


def _load() -> ctypes.CDLL | None:
    global _library, _failure
    with _lock:
        if _library is not None or _failure is not None:
            return _library
        compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if not compiler:
            _failure = "no C compiler found (set $CC or install gcc)"
            return None
        key = hashlib.sha256()
        key.update(SOURCE.read_bytes())
        key.update(" ".join([compiler, *_FLAGS, *_OPTIONAL_FLAGS[0], platform.machine()]).encode())
        path = cache_dir() / f"deform_im2col-{key.hexdigest()[:16]}.so"
        if not path.is_file():
            logger.info("compiling the native deformable-conv kernel into %s", path)
            try:
                error = _compile(compiler, path)
            except OSError as exc:
                error = f"cannot write {path.parent}: {exc}"
            if error:
                _failure = f"compiling {SOURCE.name} failed:\n{error}"
                return None
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as exc:
            _failure = f"cannot load {path}: {exc}"
            return None
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        for suffix in ("f32", "f64"):
            prepare = getattr(lib, f"pd_dcn_prepare_{suffix}")
            prepare.argtypes = [ptr, *[i64] * 13, ptr, ptr, ptr]
            prepare.restype = None
            backward = getattr(lib, f"pd_dcn_backward_{suffix}")
            backward.argtypes = [ptr, i64, i64, ptr, ptr, ptr, ptr, ptr, *[i64] * 4, ptr, ptr, ptr, ptr]
            backward.restype = None
            columns = getattr(lib, f"pd_dcn_columns_{suffix}")
            columns.argtypes = [ptr, i64, i64, ptr, ptr, ptr, *[i64] * 4, ptr, i64, i64]
            columns.restype = None
        lib.pd_dcn_columns_f32_bf16.argtypes = lib.pd_dcn_columns_f32.argtypes
        lib.pd_dcn_columns_f32_bf16.restype = None
        _library = lib
        return lib


def available() -> bool:
    """True when the kernel is compiled (or compiles now) and loads."""
    return _load() is not None


def unavailable_reason() -> str | None:
    _load()
    return _failure


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _scratch(name: str, numel: int, dtype: torch.dtype) -> torch.Tensor:
    """This thread's workspace `name`, kept between calls: fresh pages for the ~100 MB column
    matrix on every call cost a quarter of the kernel's time (glibc unmaps freed large blocks)."""
    store = getattr(_buffers, "store", None)
    if store is None:
        store = _buffers.store = {}
    buf = store.get(name)
    if buf is None or buf.dtype != dtype or buf.numel() < numel:
        store.pop(name, None)  # let the old one go before the larger one is allocated
        # A normal tensor even when first used under inference_mode, so that later calls outside
        # it (no_grad) may still write into it.
        with torch.inference_mode(False):
            buf = store[name] = torch.empty(numel, dtype=dtype)
    return buf[:numel]


def release_buffers() -> None:
    """Free this thread's workspaces (the column matrix is as large as the largest layer's,
    ~1.2 GB for a stride-4 layer of a 1024x2048 image)."""
    _buffers.store = {}


def parallel_images(batch: int) -> int:
    """How many images torchvision's kernel puts into one GEMM: the greatest divisor of the batch
    that is at most 32 (measured on torchvision 0.29: a batch of 3 is one GEMM, 33 is three of 11).
    The column count of a GEMM changes MKL's blocking, so the grouping is part of the bits."""
    for k in range(min(batch, _MAX_PARALLEL_IMGS), 1, -1):
        if batch % k == 0:
            return k
    return 1


def deform_conv2d(
    input_bchw: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: torch.Tensor | None = None,
    gemm_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """`torchvision.ops.deform_conv2d` (one offset group, one weight group), CPU.

    The GEMM is issued exactly as torchvision issues it (the whole column matrix of a group of
    images, accumulated into zeros): splitting it into tiles of columns was measured to change
    MKL's rounding for some widths.

    When autograd records (grad mode on and any argument requires grad) the call goes through
    `DeformConv2dFunction`: the same forward, and a native backward for the input, offset, mask,
    weight and bias (equal to torchvision's gradients to rounding, not bitwise).

    `gemm_dtype=torch.bfloat16` (float32 input only, inference only) is the bf16-autocast variant:
    the sampling stays in float32, the columns are rounded once to bfloat16 and the GEMM runs in
    bfloat16; the output is bfloat16, as an autocast convolution's would be. Not torchvision's bits.
    """
    _check_dtypes(input_bchw, gemm_dtype)
    if torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (input_bchw, offset, weight, bias, mask)
    ):
        if gemm_dtype not in (None, input_bchw.dtype):
            raise RuntimeError("the bfloat16-GEMM variant of the native kernel has no backward")
        dtype = input_bchw.dtype
        # Casts outside the Function, so that autograd carries the gradients back through them.
        return DeformConv2dFunction.apply(
            input_bchw, offset.to(dtype), None if mask is None else mask.to(dtype), weight.to(dtype),
            None if bias is None else bias.to(dtype), _pair(stride), _pair(padding), _pair(dilation),
        )  # fmt: skip
    return _forward(input_bchw, offset, weight, bias, stride, padding, dilation, mask, gemm_dtype)


def _check_dtypes(input_bchw: torch.Tensor, gemm_dtype: torch.dtype | None) -> None:
    if input_bchw.device.type != "cpu" or input_bchw.dtype not in (torch.float32, torch.float64):
        raise ValueError("the native deformable-conv kernel runs on CPU float32/float64 tensors only")
    bf16 = gemm_dtype == torch.bfloat16
    if gemm_dtype not in (None, input_bchw.dtype) and not (bf16 and input_bchw.dtype == torch.float32):
        raise ValueError(f"gemm_dtype {gemm_dtype} is not supported for {input_bchw.dtype} input")


def _library_or_raise() -> ctypes.CDLL:
    lib = _load()
    if lib is None:
        raise RuntimeError(f"the native deformable-conv kernel is unavailable: {_failure}")
    return lib


def _geometry(input_bchw, offset, weight, mask, stride, padding, dilation):
    """Checked sizes: (b, c, h, w), (out_c, kh, kw), (out_h, out_w), and the (stride, pad, dilation) pairs."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    b, c, h, w = input_bchw.shape
    out_c, in_c, kh, kw = weight.shape
    taps = kh * kw
    if in_c != c:
        raise ValueError(f"weight expects {in_c} input channels, input has {c} (groups are not supported)")
    out_h = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    out_w = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"input {h}x{w} is too small for a {kh}x{kw} kernel (output {out_h}x{out_w})")
    if offset.shape != (b, 2 * taps, out_h, out_w):
        raise ValueError(f"offset must be {(b, 2 * taps, out_h, out_w)}, got {tuple(offset.shape)}")
    if mask is not None and mask.shape != (b, taps, out_h, out_w):
        raise ValueError(f"mask must be {(b, taps, out_h, out_w)}, got {tuple(mask.shape)}")
    return (b, c, h, w), (out_c, kh, kw), (out_h, out_w), ((sh, sw), (ph, pw), (dh, dw))


def _padded_input(input_bchw: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The input in this thread's "padded" workspace: one zero row on top, two at the bottom (the
    "outside" cell), one zero column each side."""
    b, c, h, w = input_bchw.shape
    padded = _scratch("padded", b * c * (h + 3) * (w + 2), dtype).view(b, c, h + 3, w + 2).zero_()
    padded[:, :, 1 : h + 1, 1 : w + 1].copy_(input_bchw)
    return padded


def _forward(
    input_bchw: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int | tuple[int, int],
    padding: int | tuple[int, int],
    dilation: int | tuple[int, int],
    mask: torch.Tensor | None,
    gemm_dtype: torch.dtype | None,
) -> torch.Tensor:
    lib = _library_or_raise()
    _check_dtypes(input_bchw, gemm_dtype)
    bf16 = gemm_dtype == torch.bfloat16
    (b, c, h, w), (out_c, kh, kw), (out_h, out_w), pairs = _geometry(
        input_bchw, offset, weight, mask, stride, padding, dilation
    )
    dtype = input_bchw.dtype
    taps = kh * kw
    out_dtype = torch.bfloat16 if bf16 else dtype
    if mask is None:
        mask = torch.ones(b, taps, out_h, out_w, dtype=dtype)
    if b == 0:
        return torch.zeros(0, out_c, out_h, out_w, dtype=out_dtype)
    offset = offset.to(dtype).contiguous()
    mask = mask.to(dtype).contiguous()
    weight_o_k = weight.to(dtype).contiguous().view(out_c, c * taps)
    padded = _padded_input(input_bchw, dtype)
    group = parallel_images(b)
    columns, gemm_out = _gemm_workspace(c * taps, out_c, group * out_h * out_w, out_dtype)
    bias_o = torch.zeros(out_c, dtype=out_dtype) if bias is None else bias.to(out_dtype)
    bias_1o11 = bias_o.view(1, out_c, 1, 1)
    sample = _column_sampler(lib, padded, offset, mask, (kh, kw), (out_h, out_w), pairs, bf16)
    outs = []
    for first in range(0, b, group):
        for j in range(group):
            sample(first + j, columns, j)
        _gemm(weight_o_k, columns, gemm_out, bf16)
        # + bias writes a fresh tensor, as torchvision's last step does.
        outs.append(gemm_out.view(out_c, group, out_h, out_w).transpose(0, 1) + bias_1o11)
    out = torch.cat(outs) if len(outs) > 1 else outs[0]
    return out.contiguous()


def _gemm_workspace(rows: int, out_c: int, ld: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """This thread's (rows, ld) column matrix and (out_c, ld) GEMM output for a group of images."""
    columns = _scratch("columns", rows * ld, dtype).view(rows, ld)
    gemm_out = _scratch("gemm_out", out_c * ld, dtype).view(out_c, ld)
    return columns, gemm_out


def _column_sampler(lib, padded, offset, mask, kernel_size, out_size, pairs, bf16):
    """`sample(n, columns, j)`: the kernel calls that write image `n`'s bilinear samples (times the
    mask) into block `j` of the column matrix (the sampling corners and weights first)."""
    b, c, ph3, padded_w = padded.shape
    h, w = ph3 - 3, padded_w - 2
    (kh, kw), (out_h, out_w) = kernel_size, out_size
    (sh, sw), (ph, pw), (dh, dw) = pairs
    taps, positions = kh * kw, out_h * out_w
    plane = ph3 * padded_w
    suffix = "f32" if padded.dtype == torch.float32 else "f64"
    prepare = getattr(lib, f"pd_dcn_prepare_{suffix}")
    columns_fn = lib.pd_dcn_columns_f32_bf16 if bf16 else getattr(lib, f"pd_dcn_columns_{suffix}")
    threads = max(1, torch.get_num_threads())
    corner = torch.empty(taps * positions, dtype=torch.int32)
    weights4 = torch.empty(4 * taps * positions, dtype=padded.dtype)

    def sample(n: int, columns: torch.Tensor, j: int) -> None:
        prepare(
            offset[n].data_ptr(), h, w, out_h, out_w, kh, kw, sh, sw, ph, pw, dh, dw, threads,
            corner.data_ptr(), weights4.data_ptr(), None,
        )  # fmt: skip
        columns_fn(
            padded[n].data_ptr(), plane, padded_w, mask[n].data_ptr(), corner.data_ptr(),
            weights4.data_ptr(), taps, positions, c, threads, columns.data_ptr(), columns.shape[1],
            j * positions,
        )  # fmt: skip

    return sample


def _gemm(weight_o_k: torch.Tensor, columns: torch.Tensor, gemm_out: torch.Tensor, bf16: bool) -> None:
    """gemm_out = weight @ columns, issued as torchvision issues it."""
    if bf16:
        torch.mm(weight_o_k.to(torch.bfloat16), columns, out=gemm_out)
    else:  # torchvision: out_buf = zeros; out_buf.addmm_(weight, columns); then + bias.
        gemm_out.zero_().addmm_(weight_o_k, columns)


class DeformConv2dFunction(torch.autograd.Function):
    """The native forward with a native backward (CPU float32/float64, first derivatives only).

    `apply(input, offset, mask, weight, bias, stride, padding, dilation)`: tensors already in the
    input's dtype (`mask` and `bias` may be None), the three geometry arguments as pairs. The
    backward recomputes what it needs (the bilinear set-up and, for the weight gradient, the
    columns) instead of keeping the forward's column matrix, which is ~9x the input's size.
    """

    @staticmethod
    def forward(ctx, input_bchw, offset, mask, weight, bias, stride, padding, dilation):
        out = _forward(input_bchw, offset, weight, bias, stride, padding, dilation, mask, None)
        ctx.geometry = (stride, padding, dilation)
        ctx.has_mask, ctx.has_bias = mask is not None, bias is not None
        ctx.save_for_backward(input_bchw, offset, mask, weight)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        input_bchw, offset, mask, weight = ctx.saved_tensors
        need_input, need_offset, need_mask, need_weight, need_bias = ctx.needs_input_grad[:5]
        grads = _backward(
            grad_out, input_bchw, offset, mask, weight, *ctx.geometry,
            need_input=need_input, need_coords=need_offset or (need_mask and ctx.has_mask),
            need_weight=need_weight, need_bias=need_bias and ctx.has_bias,
        )  # fmt: skip
        grad_input, grad_offset, grad_mask, grad_weight, grad_bias = grads
        return (
            grad_input if need_input else None,
            grad_offset if need_offset else None,
            grad_mask if need_mask and ctx.has_mask else None,
            grad_weight,
            grad_bias,
            None,
            None,
            None,
        )


def _backward(
    grad_out: torch.Tensor,
    input_bchw: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor | None,
    weight: torch.Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    *,
    need_input: bool,
    need_coords: bool,
    need_weight: bool,
    need_bias: bool,
) -> tuple[torch.Tensor | None, ...]:
    """Gradients of the native forward: (input, offset, mask, weight, bias), None where not asked.

    Per image: the bilinear set-up (`prepare`, with the fractional parts kept), then
    grad_weight += grad_out @ columns^T (columns recomputed by the forward's C loop) and the column
    gradient weight^T @ grad_out, which the C backward turns into the input gradient (column to
    image) and the offset and mask gradients. The GEMMs are PyTorch's (MKL).
    """
    lib = _library_or_raise()
    (b, c, h, w), (out_c, kh, kw), (out_h, out_w), pairs = _geometry(
        input_bchw, offset, weight, mask, stride, padding, dilation
    )
    (sh, sw), (ph, pw), (dh, dw) = pairs
    dtype = input_bchw.dtype
    taps, positions = kh * kw, out_h * out_w
    rows = c * taps
    grad_o = grad_out.to(dtype).contiguous().view(b, out_c, positions)
    grad_bias = grad_o.sum((0, 2)) if need_bias else None
    grad_weight = torch.zeros(out_c, rows, dtype=dtype) if need_weight else None
    grad_padded = torch.empty(b, c, h + 3, w + 2, dtype=dtype) if need_input else None
    grad_offset = torch.empty(b, 2 * taps, out_h, out_w, dtype=dtype) if need_input or need_coords else None
    grad_mask = torch.empty(b, taps, out_h, out_w, dtype=dtype) if need_input or need_coords else None
    if b > 0 and (need_input or need_coords or need_weight):
        suffix = "f32" if dtype == torch.float32 else "f64"
        prepare = getattr(lib, f"pd_dcn_prepare_{suffix}")
        columns_fn = getattr(lib, f"pd_dcn_columns_{suffix}")
        backward_fn = getattr(lib, f"pd_dcn_backward_{suffix}")
        threads = max(1, torch.get_num_threads())
        offset = offset.contiguous()
        mask = torch.ones(b, taps, out_h, out_w, dtype=dtype) if mask is None else mask.contiguous()
        weight_o_k = weight.contiguous().view(out_c, rows)
        padded_w = w + 2
        plane = (h + 3) * padded_w
        padded = _padded_input(input_bchw, dtype)
        corner = torch.empty(taps * positions, dtype=torch.int32)
        weights4 = torch.empty(4 * taps * positions, dtype=dtype)
        frac = torch.empty(2 * taps * positions, dtype=dtype)
        columns = _scratch("columns", rows * positions, dtype).view(rows, positions)
        partial = _scratch("partial", threads * 3 * taps * positions, dtype)
        weight_k_o = weight_o_k.t()
        for n in range(b):
            prepare(
                offset[n].data_ptr(), h, w, out_h, out_w, kh, kw, sh, sw, ph, pw, dh, dw, threads,
                corner.data_ptr(), weights4.data_ptr(), frac.data_ptr(),
            )  # fmt: skip
            if need_weight:
                columns_fn(
                    padded[n].data_ptr(), plane, padded_w, mask[n].data_ptr(), corner.data_ptr(),
                    weights4.data_ptr(), taps, positions, c, threads, columns.data_ptr(), positions, 0,
                )  # fmt: skip
                grad_weight.addmm_(grad_o[n], columns.t())
            if need_input or need_coords:
                # The weight gradient is done with `columns`: the column gradient reuses it.
                torch.mm(weight_k_o, grad_o[n], out=columns)
                backward_fn(
                    padded[n].data_ptr(), plane, padded_w, mask[n].data_ptr(), corner.data_ptr(),
                    weights4.data_ptr(), frac.data_ptr(), columns.data_ptr(), taps, positions, c,
                    threads, grad_padded[n].data_ptr() if need_input else None, partial.data_ptr(),
                    grad_offset[n].data_ptr(), grad_mask[n].data_ptr(),
                )  # fmt: skip
    elif grad_padded is not None:
        grad_padded.zero_()
    grad_input = grad_padded[:, :, 1 : h + 1, 1 : w + 1].contiguous() if need_input else None
    if grad_weight is not None:
        grad_weight = grad_weight.view(out_c, c, kh, kw)
    return grad_input, grad_offset, grad_mask, grad_weight, grad_bias


__all__ = [
    "DeformConv2dFunction",
    "available",
    "cache_dir",
    "deform_conv2d",
    "parallel_images",
    "release_buffers",
    "unavailable_reason",
]
