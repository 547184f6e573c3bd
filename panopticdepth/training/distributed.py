"""Process-group set-up for `torchrun`, deterministic data sharding and DDP wrapping.

`torchrun` exports RANK / WORLD_SIZE / LOCAL_RANK; we use NCCL on CUDA and gloo on the CPU. Each
optimizer step sees `solver.ims_per_batch` images: `world_size` ranks times
`solver.accumulation_steps` micro-batches of `ims_per_batch / (world_size * accumulation_steps)`
images. DDP averages the gradients over ranks, accumulation over micro-batches, so the result is
the same for any split of the same effective batch (docs/distributed_training.md). Rank 0 alone logs
and writes checkpoints.

Every collective goes through the functions below, and every tensor handed to one lives on the
rank's training device (NCCL accepts nothing else); only the Python objects of
`broadcast_object` / `all_gather_object` are pickled by torch.distributed itself.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, Sampler

from ..utils.device import resolve_device

log = logging.getLogger(__name__)


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def select_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` = CUDA (this rank's GPU) when available, else CPU; a CUDA device becomes current."""
    device = resolve_device(name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def init_distributed(device_name: str = "auto", timeout_minutes: float = 30.0) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1), else a single process.

    `timeout_minutes` bounds how long a collective waits for a missing rank before the job fails
    (instead of hanging); periodic evaluation and checkpoint writes must fit in it.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(device_name, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(minutes=timeout_minutes),
            **kwargs,
        )
        log.info("rank %d/%d joined the %s process group on %s", rank, world, backend, device)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=device)


def shutdown_distributed(exit_code: int | None = None) -> None:
    """Leave the process group; with `exit_code`, end the worker with os._exit after a flush.

    Ending gloo workers this way avoids the sporadic "terminate called without an active
    exception" abort at interpreter exit (ENVIRONMENT.md).
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    if exit_code is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(exit_code)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        if info.device.type == "cuda":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


class CollectiveDeviceError(RuntimeError):
    """A tensor on another device than the rank's was handed to a collective (a programming error)."""


def _check_device(t: torch.Tensor, info: DistInfo) -> None:
    if t.device.type != info.device.type or (t.device.type == "cuda" and t.device != info.device):
        raise CollectiveDeviceError(
            f"collective tensor on {t.device}, but rank {info.rank} trains on {info.device}"
        )


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """In-place sum over ranks (no-op for one process); `t` must live on `info.device`."""
    _check_device(t, info)
    if info.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj: object, info: DistInfo) -> object:
    """Rank 0's `obj` on every rank (pickled; tensors inside travel as bytes)."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=info.device)
    return box[0]


def all_gather_object(obj: object, info: DistInfo) -> list:
    """Every rank's `obj`, in rank order."""
    if not info.distributed:
        return [obj]
    gathered: list = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def convert_sync_batchnorm(model: nn.Module, backbone_norm: str, info: DistInfo) -> nn.Module:
    """BN -> SyncBatchNorm when the config asks for SyncBN and a process group runs on CUDA (also
    a one-rank group, as `benchmarks/gpu_check.py` uses).

    SyncBatchNorm has no CPU kernel: on the CPU the backbone keeps per-process BatchNorm.
    """
    if backbone_norm != "SyncBN":
        return model
    if info.device.type == "cuda" and (info.distributed or dist.is_initialized()):
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if info.distributed:
        log.warning("backbone norm SyncBN needs CUDA: using per-process BatchNorm on %s", info.device)
    return model


def wrap_ddp(module: nn.Module, info: DistInfo, find_unused_parameters: bool) -> nn.Module:
    """DistributedDataParallel around the module whose forward returns the loss dict."""
    if not info.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    kwargs = {"device_ids": [info.device.index]} if info.device.type == "cuda" else {}
    return DistributedDataParallel(module, find_unused_parameters=find_unused_parameters, **kwargs)


def epoch_permutation(num_items: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of one epoch, a function of (seed, epoch) only."""
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([seed, epoch, 0x5EED]).generate_state(1)[0]))
    return torch.randperm(num_items, generator=g).numpy()


class InfiniteShardedBatchSampler(Sampler):
    """Endless batches of (epoch, index) pairs for one rank, resumable at any iteration.

    Each epoch is one seeded permutation of the dataset, padded (wrapping around) to a multiple of
    `world_size` and dealt round-robin to the ranks like `DistributedSampler`. A rank's stream is
    the concatenation of its epoch shards; batch k holds stream items [k*B, (k+1)*B), so batches
    may straddle epochs and the position after k batches is known without replaying them.
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
        shuffle: bool = True,
    ):
        if num_items <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_batch = start_batch
        self.shuffle = shuffle
        self.shard_len = -(-num_items // world_size)

    def shard(self, epoch: int) -> np.ndarray:
        order = (
            epoch_permutation(self.num_items, self.seed, epoch) if self.shuffle else np.arange(self.num_items)
        )
        total = self.shard_len * self.world_size
        order = np.resize(order, total)  # wraps around, as DistributedSampler pads
        return order[self.rank : total : self.world_size]

    def batch_at(self, k: int) -> list[tuple[int, int]]:
        out = []
        for pos in range(k * self.batch_size, (k + 1) * self.batch_size):
            epoch, offset = divmod(pos, self.shard_len)
            out.append((epoch, int(self.shard(epoch)[offset])))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        k = self.start_batch
        cache: dict[int, np.ndarray] = {}
        while True:
            batch = []
            for pos in range(k * self.batch_size, (k + 1) * self.batch_size):
                epoch, offset = divmod(pos, self.shard_len)
                if epoch not in cache:
                    cache = {epoch: self.shard(epoch)}
                batch.append((epoch, int(cache[epoch][offset])))
            yield batch
            k += 1

    def __len__(self) -> int:  # pragma: no cover - infinite
        return 2**62


class MicroBatchSampler(Sampler):
    """The micro-batches of one rank under gradient accumulation, in the order they are consumed.

    Optimizer step k of rank r takes `accumulation_steps` micro-batches; micro-batch j is batch k
    of the virtual rank `r * accumulation_steps + j` among `world_size * accumulation_steps`. So one
    process with A steps sees exactly what A processes with one step each would see, which makes
    accumulation reproduce data parallelism (docs/distributed_training.md).
    """

    def __init__(
        self,
        num_items: int,
        micro_batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        accumulation_steps: int = 1,
        start_iteration: int = 0,
    ):
        steps = accumulation_steps
        self.samplers = [
            InfiniteShardedBatchSampler(
                num_items,
                micro_batch_size,
                seed=seed,
                rank=rank * steps + j,
                world_size=world_size * steps,
                start_batch=start_iteration,
            )
            for j in range(steps)
        ]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        streams = [iter(s) for s in self.samplers]
        while True:
            for stream in streams:
                yield next(stream)

    def __len__(self) -> int:  # pragma: no cover - infinite
        return 2**62


class EpochIndexedDataset(Dataset):
    """Dataset view indexed by (epoch, index): sets the augmentation epoch before each fetch.

    Keeps the dataset's per-(seed, epoch, index) augmentation draw exact in any worker process.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        set_epoch = getattr(self.dataset, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)
        return self.dataset[index]
