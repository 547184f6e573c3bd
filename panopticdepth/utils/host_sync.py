"""Count the tensor operations that make the host wait for the device.

On a GPU, reading a value (`.item()`, `.tolist()`, `int(t)`, `bool(t)`), copying to the host, and
operations whose output size depends on the data (`nonzero`, boolean-mask indexing, `unique`,
`bincount`, `repeat_interleave` with tensor counts) block the Python thread until the GPU has
finished all queued work. Each such wait empties the GPU's queue. `HostSyncCounter` counts them
for any code, on any device (on the CPU they cost nothing, but they are the same calls), so tests
can bound them and benchmarks can print them.
"""

from __future__ import annotations

import weakref
from collections import Counter
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

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


_FACTORIES = {
    torch.tensor, torch.as_tensor, torch.from_numpy, torch.zeros, torch.ones, torch.full,
    torch.empty, torch.arange, torch.linspace, torch.rand, torch.randn, torch.randint, torch.eye,
}  # fmt: skip


def _tensors(obj: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(obj)[0] if isinstance(t, torch.Tensor)]


class HostTensorTracker(TorchFunctionMode):
    """Tells host tensors from device tensors when both are CPU tensors.

    It treats the compute device as if it were an accelerator: a tensor made by `.cpu()`,
    `.to("cpu")` or a factory call without `device=` or with `device="cpu"` (as PyTorch's optimizers
    make their step counters, and data loaders their samples) is a host tensor, and so is anything
    computed from one, until `.to(device)` with a `torch.device` moves it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._host: dict[int, weakref.ref] = {}

    def is_host(self, t: torch.Tensor) -> bool:
        ref = self._host.get(id(t))
        return ref is not None and ref() is t

    def _mark(self, out: Any, host: bool) -> None:
        for t in _tensors(out):
            key = id(t)
            if host:
                self._host[key] = weakref.ref(t, lambda _r, k=key: self._host.pop(k, None))
            else:
                self._host.pop(key, None)

    def _track(self, func, args: tuple, kwargs: dict, out: Any) -> None:
        if func is torch.Tensor.cpu:
            self._mark(out, True)
        elif func is torch.Tensor.to:
            target = kwargs.get("device", args[1] if len(args) > 1 else None)
            if isinstance(target, (str, torch.device)):
                self._mark(out, isinstance(target, str) and target == "cpu")
            elif isinstance(target, torch.Tensor):
                self._mark(out, self.is_host(target))
            else:  # dtype-only conversion keeps the mark
                self._mark(out, any(self.is_host(t) for t in _tensors(args)))
        elif func in _FACTORIES:
            on_device = any(not self.is_host(t) for t in _tensors(args))  # as_tensor(device_tensor)
            device = kwargs.get("device")
            self._mark(
                out, (device is None and not on_device) or (isinstance(device, str) and device == "cpu")
            )
        elif any(self.is_host(t) for t in _tensors((args, kwargs))):
            self._mark(out, True)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self._track(func, args, kwargs, out)
        return out


class HostSyncCounter(HostTensorTracker):
    """`with HostSyncCounter() as c: ...` then `c.count` and `c.by_op` (operation name -> count).

    A call counts when it reads a device tensor (`HostTensorTracker`): reading a host tensor, such
    as an optimizer's step counter, costs no wait on a GPU either.
    """

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.by_op: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        reads_device = args and isinstance(args[0], torch.Tensor) and not self.is_host(args[0])
        if not args or not isinstance(args[0], torch.Tensor):  # torch.nonzero(t), torch.unique(t), ...
            reads_device = any(not self.is_host(t) for t in _tensors(args[:1]))
        if reads_device and is_host_sync(func, args, kwargs):
            self.count += 1
            self.by_op[getattr(func, "__name__", str(func))] += 1
        out = func(*args, **kwargs)
        self._track(func, args, kwargs, out)
        return out
