"""Every trainable parameter gets a gradient in every step, even from a batch without things.

This is what lets DDP run with `find_unused_parameters=False` (the default): an empty loss term
is a graph-connected zero, so no head drops out of the graph. Parametrised over the small config
and the paper's model (deformable convolutions on), with and without depth.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from panopticdepth.config import load_config
from panopticdepth.modeling import build_model
from panopticdepth.modeling.preprocess import preprocess
from panopticdepth.training.engine import default_criterion

from .test_targets import make_sample

REPO = Path(__file__).resolve().parents[2]
NARROW = ["model.fpn.out_channels=32", "model.heads.convs_dim=32", "model.heads.norm_groups=8"]
CASES = {
    "small_cpu": (REPO / "configs/synthetic/small_cpu.yaml", []),
    "paper_dps": (None, ["model.backbone.name=resnet18", "model.backbone.freeze_at=0", *NARROW]),
    "paper_ps": (None, ["model.backbone.name=resnet18", "model.depth.enabled=false", *NARROW]),
    "pixel_depth": (None, ["model.backbone.name=resnet18", "model.depth.mode=pixel", *NARROW]),
    "p2_levels": (
        REPO / "configs/synthetic/small_cpu.yaml",
        [
            "model.heads.levels=[p2,p3,p4,p5]",
            "train.targets.instance_scales=[[1,32],[16,128],[64,256],[128,512]]",
            "model.inference.pool_sizes=[3,3,3,3]",
        ],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("with_things", [True, False])
def test_every_parameter_gets_a_gradient(case, with_things):
    config, overrides = CASES[case]
    cfg = load_config(config, [*overrides, "model.heads.deform_impl=torchvision"])
    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    boxes = ((4, 6, 30, 40, 2), (50, 10, 90, 60, 0)) if with_things else ()
    samples = [make_sample(boxes=boxes, seed=s) for s in range(2)]
    for s in samples:
        s["image"] = torch.randint(0, 256, s["image"].shape, dtype=torch.uint8)
    batch, _ = preprocess([s["image"] for s in samples], cfg.model)
    losses = default_criterion(samples, model(batch), tuple(batch.shape[-2:]), model, cfg)
    sum(losses.values()).backward()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert trainable and not missing, missing
