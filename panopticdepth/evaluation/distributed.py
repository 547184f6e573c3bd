"""Distributed evaluation: sum every rank's `DPSEvaluator` with one torch.distributed all_reduce.

Each rank must own whole sequences (windows never span ranks), as with a sequence-sharded sampler;
then the reduced sums equal a single-process pass exactly (integer counts are exact in float64).
"""

from __future__ import annotations

from .accumulator import DPSEvaluator


def all_reduce_evaluator(ev: DPSEvaluator, group=None) -> DPSEvaluator:
    """In place: after the call every rank holds the global sums. No-op without a process group."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return ev
    vec = torch.from_numpy(ev.state_vector())
    if dist.get_backend(group) == "nccl":  # NCCL reduces device tensors only
        vec = vec.cuda()
    dist.all_reduce(vec, op=dist.ReduceOp.SUM, group=group)
    ev.load_state_vector(vec.cpu().numpy())
    return ev
