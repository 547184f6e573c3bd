"""How much host memory a training step needs, estimated from the config before anything is built.

A paper config run on a CPU by mistake (stage 1: 32 crops of 512x1024 in one step) asks for tens of
GB; the kernel's out-of-memory killer then ends the process without a word. `check_train_memory`
says so before training starts.

Model of one process's peak (bytes):

    runtime + parameters * 16 + micro_batch * pixels * per_pixel(parameters)

- runtime: Python, PyTorch, the data loader (600 MB, the intercept of the measurements below);
- 16 bytes per parameter: float32 weights, gradients and Adam's two moments;
- activations kept for the backward pass, linear in the images of one micro-batch
  (`solver.ims_per_batch / (processes * solver.accumulation_steps)`) and in their pixels. The bytes
  per pixel grow with the network's width, taken here as linear in the parameter count through two
  measured points (`benchmarks/train_step.py`, peak RSS on a CPU): the small CPU config (12.2 M
  parameters) at 4 x 128x256 and 4 x 256x512 (1.08 / 1.64 GB) gives ~1.8 kB per pixel, the R-50
  paper model (38.6 M) at 1 x 512x1024 (2.97 GB) ~3.3 kB per pixel.

The estimate is within ~10 % of those measurements; it is meant to tell "fits" from "needs 20x the
memory", not to plan to the last megabyte.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..config import Config
from ..errors import PanopticDepthError

RUNTIME_BYTES = 600 * 2**20
BYTES_PER_PARAMETER = 16  # weights, gradients, two Adam moments (float32)
# (parameters, bytes per pixel of one training image) measured on the CPU
CALIBRATION = ((12.2e6, 1800.0), (38.6e6, 3340.0))
# Image size (H, W) a dataset's training images have when no crop fixes it.
NOMINAL_SIZE = {
    "cityscapes-dps": (1024, 2048),
    "cityscapes-panoptic": (1024, 2048),
    "semkitti-dps": (376, 1241),
    "synthetic": (128, 256),
}


@dataclass
class MemoryEstimate:
    total_bytes: int
    parameters: int
    micro_batch: int
    processes: int
    image_size: tuple[int, int]
    activation_bytes: int
    state_bytes: int

    def describe(self) -> str:
        h, w = self.image_size
        per = f"{self.micro_batch} image(s) of {h}x{w} per step and process"
        procs = f" x {self.processes} processes" if self.processes > 1 else ""
        return (
            f"~{gib(self.total_bytes)} ({per}{procs}; activations {gib(self.activation_bytes)}, "
            f"weights + gradients + Adam state of {self.parameters / 1e6:.1f} M parameters "
            f"{gib(self.state_bytes)})"
        )


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def bytes_per_pixel(parameters: int) -> float:
    (p0, b0), (p1, b1) = CALIBRATION
    return max(b0 + (parameters - p0) * (b1 - b0) / (p1 - p0), 0.5 * b0)


def count_parameters(cfg: Config) -> int:
    """Parameters of the configured model, built on the meta device (no memory, no weights read)."""
    import copy

    import torch

    from ..modeling import build_model

    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.pretrained = "none"
    with torch.device("meta"):
        model = build_model(model_cfg)
    return int(sum(p.numel() for p in model.parameters()))


def training_image_size(cfg: Config) -> tuple[int, int]:
    """(H, W) of one training image after augmentation: the crop when set, else the dataset's size
    scaled by the largest rescale factor (or the largest shortest-edge resize of the ps pipeline)."""
    aug = cfg.data.augmentation
    if aug.enabled and len(aug.crop_size) == 2:
        return int(aug.crop_size[0]), int(aug.crop_size[1])
    h, w = NOMINAL_SIZE.get(cfg.data.dataset, (1024, 2048))
    if aug.enabled and aug.pipeline == "ps" and aug.short_edges:
        short = max(aug.short_edges)
        scale = min(short / min(h, w), aug.max_size / max(h, w))
        return int(round(h * scale)), int(round(w * scale))
    if aug.enabled and aug.scale_range:
        s = max(aug.scale_range)
        return int(round(h * s)), int(round(w * s))
    return h, w


def estimate_train_memory(
    cfg: Config,
    processes: int = 1,
    *,
    world_size: int | None = None,
    image_size: tuple[int, int] | None = None,
    parameters: int | None = None,
) -> MemoryEstimate:
    """Peak host memory of `processes` training processes on this machine (see the module doc).
    `world_size` (default: `processes`) sets the micro-batch: ims_per_batch / (world_size x
    accumulation_steps)."""
    from .engine import split_batch

    world = processes if world_size is None else world_size
    _, micro = split_batch(cfg, world)
    params = count_parameters(cfg) if parameters is None else int(parameters)
    h, w = image_size or training_image_size(cfg)
    activations = int(micro * h * w * bytes_per_pixel(params))
    state = params * BYTES_PER_PARAMETER
    total = processes * (RUNTIME_BYTES + state + activations)
    return MemoryEstimate(total, params, micro, processes, (h, w), processes * activations, processes * state)


def available_memory_bytes() -> int | None:
    """Memory the kernel can give without swapping (MemAvailable), or free physical pages."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_train_memory(cfg: Config, processes: int = 1, *, world_size: int | None = None,
                       available: int | None = None) -> MemoryEstimate:  # fmt: skip
    """Raise a PanopticDepthError naming the estimate and the available memory when a CPU training
    step will not fit; returns the estimate otherwise."""
    est = estimate_train_memory(cfg, processes, world_size=world_size)
    avail = available_memory_bytes() if available is None else available
    if avail is not None and est.total_bytes > avail:
        h, w = est.image_size
        raise PanopticDepthError(
            f"a training step of this config needs {est.describe()}, but only {gib(avail)} of memory "
            f"is available: the out-of-memory killer would likely end the process. The paper configs "
            f"(configs/cityscapes, configs/semkitti) are meant for GPUs (train.device=cuda, under "
            f"torchrun). To train on this CPU anyway, split the batch with "
            f"solver.accumulation_steps=N (micro-batch = solver.ims_per_batch / N; now "
            f"{est.micro_batch}), or use a smaller crop (data.augmentation.crop_size, now {h}x{w}), "
            f"or start from configs/synthetic/small_cpu.yaml. --skip-memory-check skips this check."
        )
    return est
