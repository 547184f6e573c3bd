"""Count the tensor operations that make the host wait for the device.

On a GPU, reading a value (`.item()`, `.tolist()`, `int(t)`, `bool(t)`), copying to the host, and
operations whose output size depends on the data (`nonzero`, boolean-mask indexing, `unique`,
`bincount`, `repeat_interleave` with tensor counts) block the Python thread until the GPU has
finished all queued work. Each such wait empties the GPU's queue. `HostSyncCounter` counts them
for any code, on any device (on the CPU they cost nothing, but they are the same calls), so tests
can bound them and benchmarks can print them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

# Calls that read device data on the host.
_READS = {
    torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__int__, torch.Tensor.__float__,
    torch.Tensor.__bool__, torch.Tensor.__index__, torch.Tensor.numpy, torch.Tensor.cpu,
}  # fmt: skip
# Operations whose output size depends on the values (the host must learn it first).
_DATA_DEPENDENT = {
    torch.nonzero, torch.Tensor.nonzero, torch.argwhere, torch.Tensor.argwhere,
    torch.masked_select, torch.Tensor.masked_select, torch.unique, torch.Tensor.unique,
    torch.unique_consecutive, torch.bincount, torch.Tensor.bincount, torch.equal,
    torch.Tensor.equal, torch.allclose, torch.Tensor.allclose,
}  # fmt: skip
_INDEXING = {torch.Tensor.__getitem__, torch.Tensor.__setitem__}


def _has_bool_index(index: Any) -> bool:
    if isinstance(index, torch.Tensor):
        return index.dtype == torch.bool
    if isinstance(index, (tuple, list)):
        return any(_has_bool_index(i) for i in index)
    return False


def is_host_sync(func: Any, args: tuple, kwargs: dict) -> bool:
    """True when `func(*args, **kwargs)` makes the host wait for the device's results."""
    if func in _READS or func in _DATA_DEPENDENT:
        return True
    if func in _INDEXING:
        return len(args) > 1 and _has_bool_index(args[1])
    if func in (torch.repeat_interleave, torch.Tensor.repeat_interleave):
        repeats = args[1] if len(args) > 1 else kwargs.get("repeats")
        return isinstance(repeats, torch.Tensor) and kwargs.get("output_size") is None
    if func is torch.Tensor.to:  # `.to("cpu")`; a torch.device is taken to be the compute device
        target = kwargs.get("device", args[1] if len(args) > 1 else None)
        return isinstance(target, str) and torch.device(target).type == "cpu"
    return False


class HostSyncCounter(TorchFunctionMode):
    """`with HostSyncCounter() as c: ...` then `c.count` and `c.by_op` (operation name -> count).

    A call counts when its input lives on a device whose results the host must wait for; on the
    CPU every tensor counts, since the same code on a GPU would wait.
    """

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.by_op: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if is_host_sync(func, args, kwargs):
            self.count += 1
            self.by_op[getattr(func, "__name__", str(func))] += 1
        return func(*args, **kwargs)
