"""A faster CPU forward of `torchvision.ops.deform_conv2d` with bit-identical results.

torchvision's CPU kernel builds the im2col columns in one single-threaded loop that redoes the
bilinear coordinate work for every channel; on this model that loop, not the GEMM, is most of the
cost. `csrc/deform_im2col.c` does the same floating-point operations in the same order, with the
coordinate work done once per (tap, position) and the channels split over OpenMP threads; the
columns then go through the same `weight @ columns` GEMM that torchvision issues, so the output
has the same bits (tests compare with `torch.equal`). It is a forward-only kernel: training keeps
torchvision's (or the sampling formulation's) autograd.

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
            prepare.argtypes = [ptr, *[i64] * 13, ptr, ptr]
            prepare.restype = None
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
    """`torchvision.ops.deform_conv2d` (one offset group, one weight group), forward only, CPU.

    The GEMM is issued exactly as torchvision issues it (the whole column matrix of a group of
    images, accumulated into zeros): splitting it into tiles of columns was measured to change
    MKL's rounding for some widths.

    `gemm_dtype=torch.bfloat16` (float32 input only) is the bf16-autocast variant: the sampling
    stays in float32, the columns are rounded once to bfloat16 and the GEMM runs in bfloat16;
    the output is bfloat16, as an autocast convolution's would be. Not torchvision's bits.
    """
    lib = _load()
    if lib is None:
        raise RuntimeError(f"the native deformable-conv kernel is unavailable: {_failure}")
    if input_bchw.device.type != "cpu" or input_bchw.dtype not in (torch.float32, torch.float64):
        raise ValueError("the native deformable-conv kernel runs on CPU float32/float64 tensors only")
    bf16 = gemm_dtype == torch.bfloat16
    if gemm_dtype not in (None, input_bchw.dtype) and not (bf16 and input_bchw.dtype == torch.float32):
        raise ValueError(f"gemm_dtype {gemm_dtype} is not supported for {input_bchw.dtype} input")
    if torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (input_bchw, offset, weight, bias, mask)
    ):
        raise RuntimeError("the native deformable-conv kernel has no backward; use torchvision's")
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    dtype = input_bchw.dtype
    b, c, h, w = input_bchw.shape
    out_c, in_c, kh, kw = weight.shape
    taps = kh * kw
    if in_c != c:
        raise ValueError(f"weight expects {in_c} input channels, input has {c} (groups are not supported)")
    out_h = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    out_w = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"input {h}x{w} is too small for a {kh}x{kw} kernel (output {out_h}x{out_w})")
    positions = out_h * out_w
    if offset.shape != (b, 2 * taps, out_h, out_w):
        raise ValueError(f"offset must be {(b, 2 * taps, out_h, out_w)}, got {tuple(offset.shape)}")
    if mask is None:
        mask = torch.ones(b, taps, out_h, out_w, dtype=dtype)
    elif mask.shape != (b, taps, out_h, out_w):
        raise ValueError(f"mask must be {(b, taps, out_h, out_w)}, got {tuple(mask.shape)}")
    if b == 0:
        return torch.zeros(0, out_c, out_h, out_w, dtype=torch.bfloat16 if bf16 else dtype)
    offset = offset.to(dtype).contiguous()
    mask = mask.to(dtype).contiguous()
    weight_o_k = weight.to(dtype).contiguous().view(out_c, in_c * taps)
    # One zero row on top, two at the bottom (the "outside" cell), one zero column each side.
    padded_w = w + 2
    plane = (h + 3) * padded_w
    padded = _scratch("padded", b * c * plane, dtype).view(b, c, h + 3, padded_w).zero_()
    padded[:, :, 1 : h + 1, 1 : w + 1].copy_(input_bchw)
    suffix = "f32" if dtype == torch.float32 else "f64"
    prepare = getattr(lib, f"pd_dcn_prepare_{suffix}")
    columns_fn = lib.pd_dcn_columns_f32_bf16 if bf16 else getattr(lib, f"pd_dcn_columns_{suffix}")
    out_dtype = torch.bfloat16 if bf16 else dtype
    threads = max(1, torch.get_num_threads())

    group = parallel_images(b)
    ld = group * positions
    columns = _scratch("columns", c * taps * ld, out_dtype).view(c * taps, ld)
    gemm_out = _scratch("gemm_out", out_c * ld, out_dtype).view(out_c, ld)
    bias_o = torch.zeros(out_c, dtype=out_dtype) if bias is None else bias.to(out_dtype)
    bias_1o11 = bias_o.view(1, out_c, 1, 1)
    corner = torch.empty(taps * positions, dtype=torch.int32)
    weights4 = torch.empty(4 * taps * positions, dtype=dtype)
    outs = []
    for first in range(0, b, group):
        for j in range(group):
            n = first + j
            prepare(
                offset[n].data_ptr(), h, w, out_h, out_w, kh, kw, sh, sw, ph, pw, dh, dw, threads,
                corner.data_ptr(), weights4.data_ptr(),
            )  # fmt: skip
            columns_fn(
                padded[n].data_ptr(), plane, padded_w, mask[n].data_ptr(), corner.data_ptr(),
                weights4.data_ptr(), taps, positions, c, threads, columns.data_ptr(), ld, j * positions,
            )  # fmt: skip
        if bf16:
            torch.mm(weight_o_k.to(torch.bfloat16), columns, out=gemm_out)
        else:  # torchvision: out_buf = zeros; out_buf.addmm_(weight, columns); then + bias.
            gemm_out.zero_().addmm_(weight_o_k, columns)
        # + bias writes a fresh tensor, as torchvision's last step does.
        outs.append(gemm_out.view(out_c, group, out_h, out_w).transpose(0, 1) + bias_1o11)
    out = torch.cat(outs) if len(outs) > 1 else outs[0]
    return out.contiguous()


__all__ = [
    "available",
    "cache_dir",
    "deform_conv2d",
    "parallel_images",
    "release_buffers",
    "unavailable_reason",
]
