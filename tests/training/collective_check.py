"""Test harness: run the engine's collectives through checking wrappers in one process.

A CPU has no second device, so a tensor moved to the host before a collective looks like any other
CPU tensor. `HostTensorTracker` gives host tensors a visible mark instead: it treats the rank's
training device as if it were an accelerator and marks every tensor that comes from `.cpu()`,
`.to("cpu")`, `.numpy()`-style round trips or a factory call without `device=`, and everything
computed from such a tensor, until `.to(device)` moves it (a `torch.device` object, as the engine
passes its rank's device; the string "cpu" counts as a move to the host). `FakeCollectives` stands in for a
2-rank process group (sums double, objects are echoed) and fails on any marked tensor, so a
`.cpu()` before a collective fails a test here as NCCL would fail it on a GPU cluster.
"""

from __future__ import annotations

import weakref
from contextlib import ExitStack
from unittest import mock

import torch
import torch.distributed as dist
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

_FACTORIES = {
    torch.tensor, torch.as_tensor, torch.from_numpy, torch.zeros, torch.ones, torch.full,
    torch.empty, torch.arange, torch.linspace, torch.rand, torch.randn, torch.randint, torch.eye,
}  # fmt: skip


class HostTensorTracker(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self._host: dict[int, weakref.ref] = {}

    def is_host(self, t: torch.Tensor) -> bool:
        ref = self._host.get(id(t))
        return ref is not None and ref() is t

    def _mark(self, out, host: bool) -> None:
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            key = id(t)
            if host:
                self._host[key] = weakref.ref(t, lambda _r, k=key: self._host.pop(k, None))
            else:
                self._host.pop(key, None)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is torch.Tensor.cpu:
            self._mark(out, True)
        elif func is torch.Tensor.to:
            target = kwargs.get("device", args[1] if len(args) > 1 else None)
            if isinstance(target, (str, torch.device)):
                # The training device is a torch.device object; the literal "cpu" means the host.
                self._mark(out, isinstance(target, str) and target == "cpu")
            elif isinstance(target, torch.Tensor):
                self._mark(out, self.is_host(target))
            else:  # dtype-only conversion keeps the mark
                self._mark(
                    out, any(self.is_host(t) for t in tree_flatten(args)[0] if isinstance(t, torch.Tensor))
                )
        elif func in _FACTORIES:
            self._mark(out, "device" not in kwargs and not _has_tensor_on_device(args, self))
        else:
            inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
            if any(self.is_host(t) for t in inputs):
                self._mark(out, True)
        return out


def _has_tensor_on_device(args, tracker: HostTensorTracker) -> bool:
    """torch.as_tensor(device_tensor) keeps the tensor where it is."""
    return any(isinstance(a, torch.Tensor) and not tracker.is_host(a) for a in tree_flatten(args)[0])


class FakeCollectives:
    """A 2-rank process group in one process: every rank holds the same values."""

    world_size = 2

    def __init__(self, tracker: HostTensorTracker, device: torch.device):
        self.tracker = tracker
        self.device = device
        self.calls: list[str] = []

    def _check(self, name: str, t: torch.Tensor) -> None:
        self.calls.append(name)
        if self.tracker.is_host(t) or t.device.type != self.device.type:
            raise AssertionError(f"{name} received a host tensor (shape {tuple(t.shape)}): NCCL rejects it")

    def all_reduce(self, t, op=None, group=None, async_op=False):
        self._check("all_reduce", t)
        with torch.no_grad():
            t.mul_(self.world_size)

    def broadcast(self, t, src=0, group=None, async_op=False):
        self._check("broadcast", t)

    def all_gather(self, out, t, group=None, async_op=False):
        self._check("all_gather", t)
        for o in out:
            o.copy_(t)

    def all_gather_object(self, out, obj, group=None):
        self.calls.append("all_gather_object")
        out[:] = [obj] * len(out)

    def broadcast_object_list(self, objs, src=0, group=None, device=None):
        self.calls.append("broadcast_object_list")

    def barrier(self, group=None, async_op=False, device_ids=None):
        self.calls.append("barrier")

    def patches(self) -> ExitStack:
        stack = ExitStack()
        for name in (
            "all_reduce",
            "broadcast",
            "all_gather",
            "all_gather_object",
            "broadcast_object_list",
            "barrier",
        ):
            stack.enter_context(mock.patch.object(dist, name, getattr(self, name)))
        stack.enter_context(mock.patch.object(dist, "is_initialized", lambda: True))
        stack.enter_context(mock.patch.object(dist, "get_backend", lambda group=None: "fake"))
        stack.enter_context(mock.patch.object(dist, "get_world_size", lambda group=None: self.world_size))
        stack.enter_context(mock.patch.object(dist, "get_rank", lambda group=None: 0))
        # DDP needs a real process group; gradients are identical on both fake ranks anyway.
        stack.enter_context(
            mock.patch("panopticdepth.training.engine.wrap_ddp", lambda module, info, find_unused: module)
        )
        return stack
