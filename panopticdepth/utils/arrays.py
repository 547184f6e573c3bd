"""Tensors or arrays -> numpy, without importing torch."""

from __future__ import annotations

from typing import Any

import numpy as np


def to_numpy(x: Any) -> np.ndarray | None:
    """A torch tensor (any device), array or array-like as a numpy array; None stays None.

    Arrays are returned as they are (no copy); tensors are detached and moved to the CPU.
    """
    if x is None:
        return None
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)
