"""Sparse (LiDAR-projected) labels with `train.loss.labeled_pixels_only`: unlabelled pixels count
neither for nor against any class in the region and mask losses (docs/label_spaces.md#sparse-labels)."""

from __future__ import annotations

import torch

from panopticdepth.config import Config
from panopticdepth.training.losses import dice_loss, position_losses, stuff_segment_loss
from panopticdepth.training.targets import build_targets

from .test_targets import fake_outputs

H, W = 64, 128


def scan_line_sample() -> dict:
    """Road below, building above, labelled only on every 8th row (like projected scan lines)."""
    semantic = torch.full((H, W), 255, dtype=torch.int64)
    rows = torch.arange(0, H, 8)
    semantic[rows[rows < H // 2]] = 2  # building
    semantic[rows[rows >= H // 2]] = 0  # road
    return {
        "image": torch.zeros(3, H, W, dtype=torch.uint8),
        "semantic": semantic,
        "instance_masks": torch.zeros(0, H, W, dtype=torch.bool),
        "instance_classes": torch.zeros(0, dtype=torch.int64),
        "depth": torch.where(semantic != 255, 10.0, 0.0),
        "meta": {"image_path": "scan.png"},
    }


def _cfg(sparse: bool) -> Config:
    cfg = Config()
    cfg.train.loss.labeled_pixels_only = sparse
    return cfg


def test_sparse_rows_still_make_the_classes_present():
    sample = scan_line_sample()
    dense = build_targets([sample], fake_outputs(1, (H, W)), (H, W), _cfg(False))
    sparse = build_targets([sample], fake_outputs(1, (H, W)), (H, W), _cfg(True))
    # Dense: one labelled row in eight gives shares < 0.5 (or none), so no class is present.
    assert dense.levels[0].stuff_scores[0, [0, 2]].amax().item() == 0.0
    # Sparse: the shares among labelled pixels are 1 where a class's rows are.
    scores = sparse.levels[0].stuff_scores[0]
    assert scores[0, -1].max().item() == 1.0 and scores[2, 0].max().item() == 1.0
    assert sparse.levels[0].stuff_classes[0].tolist() == [0, 2]
    assert sparse.labeled.shape == (1, 1, H // 4, W // 4) and 0 < sparse.labeled.mean().item() < 1


def test_region_loss_ignores_unlabelled_positions_only_in_sparse_mode():
    sample = scan_line_sample()
    for sparse in (True, False):
        cfg = _cfg(sparse)
        outputs = fake_outputs(1, (H, W))
        targets = build_targets([sample], outputs, (H, W), cfg)
        base = position_losses(outputs, targets, cfg)[1]
        changed = fake_outputs(1, (H, W))
        for level, tgt in zip(changed.levels, targets.levels):
            unlabelled = (
                (tgt.labeled == 0) if sparse else torch.ones_like(level.region_logits[:, :1], dtype=bool)
            )
            level.region_logits[:] = torch.where(
                unlabelled, 5.0, 0.0
            )  # confident class everywhere unlabelled
        loss = position_losses(changed, targets, cfg)[1]
        if sparse:
            assert torch.allclose(loss, base), (loss, base)
        else:
            assert loss > 2 * base


def test_stuff_dice_sees_labelled_pixels_only():
    sample = scan_line_sample()
    cfg = _cfg(True)
    outputs = fake_outputs(1, (H, W), channels=2)
    targets = build_targets([sample], outputs, (H, W), cfg)
    labeled = targets.labeled.flatten(1)  # (1, K)
    from panopticdepth.training.kernel_gather import StuffKernels

    lv = targets.levels[0]
    s = lv.stuff_classes.shape[1]
    labels = lv.stuff_labels.flatten(2)  # (1, S, K) shares among labelled pixels
    kernels = torch.zeros(1, s, 2)
    kernels[0, :, 0] = 1.0
    embed = torch.zeros((1, 2, H // 4, W // 4))  # probabilities 0.5 everywhere ...
    stuff = StuffKernels(
        kernels=kernels, depth_kernels=None, labels=labels, valid=lv.stuff_valid, classes=lv.stuff_classes
    )
    index = torch.nonzero(lv.stuff_valid.flatten()).flatten()
    base = stuff_segment_loss(stuff, embed, cfg, index, labeled)
    embed2 = embed.clone()
    embed2[0, 0][targets.labeled[0, 0] == 0] = 20.0  # ... or ~1 on unlabelled pixels
    assert torch.allclose(stuff_segment_loss(stuff, embed2, cfg, index, labeled), base)
    assert not torch.allclose(stuff_segment_loss(stuff, embed2, cfg, index, None), base)
    assert dice_loss(torch.ones(1, 4), torch.ones(1, 4)).item() == 0.0
