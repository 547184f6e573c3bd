"""One parser for device names (`auto`, `cpu`, `cuda`, `cuda:N`) shared by training and the CLI."""

from __future__ import annotations

import re

import torch

from ..errors import PanopticDepthError

_CUDA = re.compile(r"^cuda(?::(\d+))?$")


class DeviceError(PanopticDepthError):
    """An unknown device name, or a CUDA device that this machine does not have."""


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """`auto` = CUDA when available (this rank's GPU under torchrun), else the CPU.

    `cuda` without an index takes `local_rank` (0 outside torchrun); a bad name or a missing GPU is
    a `DeviceError` that says what exists.
    """
    text = str(name).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    match = _CUDA.match(text)
    if match is None:
        raise DeviceError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} requested, but no CUDA GPU is available here (use cpu)")
    index = int(match.group(1)) if match.group(1) is not None else (local_rank or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"device cuda:{index} requested, but this machine has {count} CUDA GPU(s)")
    return torch.device("cuda", index)


def index_tensor(values: list[int], device: torch.device) -> torch.Tensor:
    """int64 tensor of host-known indices on `device`, copied without making the host wait
    (through pinned memory on CUDA): the index half of a one-transfer-per-step design."""
    t = torch.tensor(values, dtype=torch.int64)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
