"""Keep freed memory in the process's heap (glibc), for the command-line tools that own their process.

PyTorch's CPU allocator takes every tensor from `malloc`. With glibc's defaults a large block is
handed back to the system when it is freed (or trimmed off the heap's top), so the next tensor of
that size costs fresh page faults: ~9,400 per training step of the small config (a few ms to
tens of ms). Raising the mmap and trim thresholds keeps those blocks for reuse: the demo's bf16
step 0.137-0.147 -> 0.127-0.133 s, float32 ~8 % faster (benchmarks/README.md, training step).
The setting is process-wide, so the library never applies it on import; `panopticdepth` (the CLI)
does at start, unless the user set glibc's own variables or `PANOPTICDEPTH_KEEP_FREED_MEMORY=0`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest mmap threshold: blocks up to this come from the heap
TRIM_THRESHOLD = 1024 * 1024 * 1024  # free memory kept at the heap's top before it is returned
_USER_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
OPT_OUT = "PANOPTICDEPTH_KEEP_FREED_MEMORY"


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True when applied.

    Does nothing off Linux/glibc, when the user set any of glibc's MALLOC_* thresholds (theirs win),
    or when PANOPTICDEPTH_KEEP_FREED_MEMORY=0.
    """
    if not sys.platform.startswith("linux") or os.environ.get(OPT_OUT, "1") == "0":
        return False
    if any(name in os.environ for name in _USER_VARIABLES):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has no mallopt thresholds)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    trimmed = bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return trimmed and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
