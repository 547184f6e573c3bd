"""Reading pickles of numpy arrays (Detectron2 / Caffe2 `.pkl` weights) without running code.

`pickle.load` imports and calls whatever a file names, so a crafted `.pkl` runs arbitrary code
when read. `ArraysOnlyUnpickler` admits only what weight files need (numpy arrays and scalars,
numbers, strings, lists, tuples, dicts, sets) and refuses every other global before importing it.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

# Globals a Detectron2-style `.pkl` of numpy arrays may name.
# Python 2 pickles spell the modules differently; both spellings are listed.
_PICKLE_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
        ("collections", "OrderedDict"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("__builtin__", "set"),
        ("__builtin__", "frozenset"),
    }
)


class ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle names a class or function outside the numpy-arrays-and-containers set."""


class ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickler that builds numpy arrays, numbers, strings and plain containers, nothing else.

    Every other global (a class, a function such as `os.system`) is refused before it is
    imported, so a hostile file cannot run code while it is read.
    """

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if (module, name) not in _PICKLE_GLOBALS:
            raise ForbiddenGlobal(f"{module}.{name}")
        return super().find_class(module, name)


def load_arrays_pickle(path: str | os.PathLike) -> Any:
    """Unpickle `path` with `ArraysOnlyUnpickler` (Python 2 pickles included, read as latin1)."""
    with open(path, "rb") as f:
        return ArraysOnlyUnpickler(f, encoding="latin1").load()
