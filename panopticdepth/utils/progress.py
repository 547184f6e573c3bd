"""Progress bars that stay quiet when output is not a terminal (CI logs, pipes)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm


def progress_enabled() -> bool:
    if os.environ.get("PANOPTICDEPTH_PROGRESS") == "1":
        return True
    if os.environ.get("PANOPTICDEPTH_PROGRESS") == "0":
        return False
    return sys.stderr.isatty()


def progress(iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    """`tqdm` with a shared default: disabled unless stderr is a terminal."""
    kwargs.setdefault("disable", not progress_enabled())
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
