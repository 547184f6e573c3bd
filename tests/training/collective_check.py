"""Test harness: run the engine's collectives through checking wrappers in one process.

A CPU has no second device, so a tensor moved to the host before a collective looks like any other
CPU tensor. `panopticdepth.utils.host_sync.HostTensorTracker` gives host tensors a visible mark
instead (`.cpu()`, `.to("cpu")`, factories without `device=`, and what is computed from them,
until `.to(device)` with the rank's `torch.device`). `FakeCollectives` stands in for a 2-rank
process group (sums double, objects are echoed) and fails on any marked tensor, so a `.cpu()`
before a collective fails a test here as NCCL would fail it on a GPU cluster.
"""

from __future__ import annotations

from contextlib import ExitStack
from unittest import mock

import torch
import torch.distributed as dist

from panopticdepth.utils.host_sync import HostTensorTracker


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
