"""Evaluation during training: every rank scores its share of the validation images on its own
device, then one all-reduce sums the evaluators' counts, so rank 0 holds the whole-set metrics.

Sharding keeps the wall time of an evaluation at 1 / world_size of a serial pass, which keeps it
inside the collective timeout on a cluster. Only what DPQ needs is post-processed: the panoptic map
and the merged depth, without the full-resolution candidate masks and class probabilities.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from ..config import Config
from .distributed import DistInfo, all_reduce_sum

log = logging.getLogger(__name__)


def build_evaluator(cfg: Config) -> Any:
    """The evaluator of the model's label space, with its official protocol (SemKITTI data is
    scored in SemKITTI ids, docs/label_spaces.md#evaluation)."""
    from ..config.labels import model_label_space
    from ..evaluation import DPSEvaluator
    from ..evaluation.protocol import protocol_for

    protocol = protocol_for(model_label_space(cfg))
    return DPSEvaluator(
        num_classes=protocol.num_classes,
        thing_ids=protocol.thing_classes,
        lambdas=tuple(cfg.eval.depth_thresholds),
        dataset=protocol,
    )


def shard_indices(num_images: int, info: DistInfo) -> range:
    """Images of this rank: every world_size-th one, starting at its rank (single frames only)."""
    return range(info.rank, num_images, info.world_size)


@torch.no_grad()
def evaluate_shard(model: nn.Module, cfg: Config, dataset: Any, indices: range, evaluator: Any) -> None:
    """Post-process and score the images `indices` of `dataset` (batch 1, as the original)."""
    from ..config.labels import model_label_space
    from ..evaluation.protocol import protocol_ids
    from ..modeling.postprocess import postprocess
    from ..modeling.preprocess import preprocess
    from ..utils.progress import progress

    m = cfg.model
    space = model_label_space(cfg)
    device = next(model.parameters()).device
    for i in progress(indices, desc="eval", leave=False):
        sample = dataset[i]
        batch, sizes = preprocess([sample["image"].to(device, non_blocking=True)], m)
        outputs = model(batch)
        result = postprocess(outputs, model, m, sizes, with_instance_masks=False, with_sem_seg=False)[0]
        pred_depth = result.depth.cpu().numpy() if (result.depth is not None and m.depth.enabled) else None
        gt_depth = sample.get("depth")
        evaluator.update(
            protocol_ids(space, result.panoptic.cpu().numpy(), prediction=True),
            pred_depth,
            protocol_ids(space, sample["panoptic"].cpu().numpy()),
            gt_depth.cpu().numpy() if gt_depth is not None else None,
        )


def evaluate_model(
    model: nn.Module, cfg: Config, dataset: Any, max_images: int = 0, info: DistInfo | None = None
) -> dict | None:
    """DPQ/PQ summary of `model` on `dataset`, sharded over the ranks of `info`.

    Collective: every rank must call it. Returns the summary on every rank, or None on every rank
    when any rank failed (its error is logged there); a failure never leaves a rank waiting.
    """
    info = info or DistInfo(device=next(model.parameters()).device)
    n = 0 if dataset is None else (len(dataset) if max_images <= 0 else min(max_images, len(dataset)))
    evaluator = build_evaluator(cfg)
    was_training = model.training
    model.eval()
    failed = 0.0
    try:
        if dataset is None:
            raise RuntimeError("no validation dataset on this rank")
        evaluate_shard(model, cfg, dataset, shard_indices(n, info), evaluator)
    except Exception:  # noqa: BLE001 - one rank's failure is reported to all, never a hang
        log.exception("periodic evaluation failed on rank %d", info.rank)
        failed = 1.0
    finally:
        model.train(was_training)
    flag = all_reduce_sum(torch.tensor([failed], device=info.device), info)
    if float(flag.item()) > 0:
        return None
    state = torch.from_numpy(evaluator.state_vector()).to(info.device)
    evaluator.load_state_vector(all_reduce_sum(state, info).cpu().numpy())
    return evaluator.summary()
