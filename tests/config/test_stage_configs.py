"""The shipped stage configs carry the original's training recipe (docs/training_recipe.md).

Expected values are the original implementation's, written here from its description, not read
from the YAML files or the config defaults.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from panopticdepth.config import load_config
from panopticdepth.data.augment import Augmentation

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "cityscapes"

COMMON_SOLVER = {
    "optimizer": "adam",
    "weight_decay": 1e-4,
    "weight_decay_norm": 0.0,
    "weight_decay_bias": 1e-4,
    "warmup_iters": 2000,
    "warmup_factor": 0.001,
    "poly_power": 0.9,
    "clip_value": 35.0,
    "amp": "none",
}

STAGES = {
    "stage1_ps_crop.yaml": {
        "dataset": "cityscapes-panoptic",
        "max_iter": 130_000,
        "ims_per_batch": 32,
        "base_lr": 1e-4,
        "norm": "SyncBN",
        "freeze_at": 0,
        "pipeline": "ps",
        "short_edges": [512, 768, 1024, 1152, 1216, 1344, 1408, 1536, 1664, 1728, 1856, 1920, 2048],
        "crop_size": [512, 1024],
        "depth": False,
        "checkpoint_period": 20_000,
    },
    "stage2_ps_fsf.yaml": {
        "dataset": "cityscapes-panoptic",
        "max_iter": 10_000,
        "ims_per_batch": 8,
        "base_lr": 1e-5,
        "norm": "FrozenBN",
        "freeze_at": 2,
        "pipeline": "ps",
        "short_edges": [1024, 1088, 1152, 1216, 1280, 1344, 1408, 1472, 1536],
        "crop_size": [1024, 2048],
        "depth": False,
        "checkpoint_period": 20_000,
    },
    "stage3_dps.yaml": {
        "dataset": "cityscapes-dps",
        "max_iter": 10_000,
        "ims_per_batch": 8,
        "base_lr": 1e-4,
        "norm": "FrozenBN",
        "freeze_at": 2,
        "pipeline": "dps",
        "short_edges": [],
        "crop_size": [],
        "depth": True,
        "checkpoint_period": 3_000,
    },
}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_config_carries_the_recipe(name):
    want = STAGES[name]
    cfg = load_config(CONFIGS / name)
    solver = cfg.solver
    for key, value in COMMON_SOLVER.items():
        expected = pytest.approx(value, rel=1e-12) if isinstance(value, float) else value
        assert getattr(solver, key) == expected, key
    assert solver.max_iter == want["max_iter"]
    assert solver.ims_per_batch == want["ims_per_batch"]
    assert solver.base_lr == pytest.approx(want["base_lr"], rel=1e-12)
    assert cfg.train.checkpoint_period == want["checkpoint_period"]

    backbone = cfg.model.backbone
    assert (backbone.name, backbone.stride_in_1x1) == ("resnet50", True)  # MSRA ResNet-50
    assert (backbone.norm, backbone.freeze_at) == (want["norm"], want["freeze_at"])
    fmt, mean, std = cfg.model.input_normalization()
    assert fmt == "BGR"
    assert mean == [123.675, 116.28, 103.53] and std == [1.0, 1.0, 1.0]
    assert cfg.model.depth.enabled is want["depth"]

    assert cfg.data.dataset == want["dataset"]
    aug = cfg.data.augmentation
    assert aug.enabled and aug.hflip and aug.color
    assert aug.pipeline == want["pipeline"]
    assert list(aug.short_edges) == want["short_edges"]
    assert list(aug.crop_size) == want["crop_size"]
    assert list(aug.scale_range) == [1.0, 1.0]  # the only rescale of stages 1-2 is the list above
    if want["pipeline"] == "ps":
        assert aug.max_size == 4096 and aug.crop_mode == "random"
    Augmentation(aug)  # the settings are consistent


def test_stage1_and_stage2_size_lists_step_as_the_original():
    s1 = load_config(CONFIGS / "stage1_ps_crop.yaml").data.augmentation.short_edges
    s2 = load_config(CONFIGS / "stage2_ps_fsf.yaml").data.augmentation.short_edges
    assert len(s1) == 13 and (min(s1), max(s1)) == (512, 2048)
    assert s2 == list(range(1024, 1537, 64))
