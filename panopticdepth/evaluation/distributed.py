"""Distributed evaluation: sum every rank's `DPSEvaluator` with one torch.distributed all_reduce.

Each rank must own whole sequences (windows never span ranks), as with a sequence-sharded sampler;
then the reduced sums equal a single-process pass exactly (integer counts are exact in float64).
"""

from __future__ import annotations

from .accumulator import DPSEvaluator


def all_reduce_evaluator(ev: DPSEvaluator, group=None, device=None) -> DPSEvaluator:
    """In place: after the call every rank holds the global sums. No-op without a process group.

    `device`: where the reduced vector lives (the rank's GPU under NCCL); by default the current
    CUDA device for NCCL, else the CPU.
    """
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return ev
    if device is None:
        device = (
            torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" else "cpu"
        )
    vec = torch.from_numpy(ev.state_vector()).to(device)
    dist.all_reduce(vec, op=dist.ReduceOp.SUM, group=group)
    ev.load_state_vector(vec.cpu().numpy())
    return ev
