"""The Cityscapes Swin-T/S configs: each stage equals the R-50 stage but for the Swin choices, and
the input convention resolves to what timm's ImageNet weights expect."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from panopticdepth.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "cityscapes"
STAGES = ("stage1_ps_crop", "stage2_ps_fsf", "stage3_dps")
# What a Swin config may change relative to its R-50 stage.
SWIN_BACKBONE_KEYS = {"name", "drop_path_rate", "out_norm"}
SWIN_SOLVER_KEYS = {
    "optimizer",
    "weight_decay",
    "weight_decay_bias",
    "weight_decay_norm",
    "weight_decay_norm_bias",
    "weight_decay_embed",
    "backbone_lr_multiplier",
}


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("arch", ["swin_t", "swin_s"])
def test_swin_stage_equals_r50_stage_but_for_swin_choices(stage, arch):
    r50 = load_config(CONFIGS / f"{stage}.yaml")
    swin = load_config(CONFIGS / f"{stage}_{arch}.yaml")
    assert swin.model.backbone.name == arch
    assert swin.model.backbone.freeze_at == r50.model.backbone.freeze_at
    assert swin.model.backbone.drop_path_rate == 0.2 and swin.model.backbone.out_norm
    assert swin.data == r50.data and swin.train == r50.train
    assert dataclasses.replace(swin.model, backbone=r50.model.backbone) == r50.model
    changed = {
        f.name
        for f in dataclasses.fields(r50.solver)
        if getattr(r50.solver, f.name) != getattr(swin.solver, f.name)
    }
    assert changed <= SWIN_SOLVER_KEYS, changed
    s = swin.solver
    assert (s.optimizer, s.weight_decay, s.weight_decay_norm, s.weight_decay_norm_bias) == (
        "adamw",
        0.05,
        0.0,
        0.0,
    )
    assert s.weight_decay_embed == 0.0 and s.base_lr == r50.solver.base_lr
    # no silent R-50 preprocessing: RGB with ImageNet mean and std
    assert swin.model.input_normalization() == ("RGB", [123.675, 116.28, 103.53], [58.395, 57.12, 57.375])
    assert r50.model.input_normalization() == ("BGR", [123.675, 116.28, 103.53], [1.0, 1.0, 1.0])


def test_swin_param_groups_exclude_norms_and_position_biases():
    from panopticdepth.modeling.backbone import build_backbone
    from panopticdepth.training.solver import parameter_weight_decay

    cfg = load_config(CONFIGS / "stage1_ps_crop_swin_t.yaml", ["model.backbone.pretrained=none"])
    bb = build_backbone(cfg.model.backbone)
    table = {name: wd for name, _, wd in parameter_weight_decay(bb, cfg.solver)}
    assert table["body.layers_0.blocks.0.attn.relative_position_bias_table"] == 0.0
    assert table["body.layers_0.blocks.0.norm1.weight"] == 0.0
    assert table["body.layers_0.blocks.0.norm1.bias"] == 0.0
    assert table["body.layers_1.downsample.norm.bias"] == 0.0
    assert table["out_norms.res5.weight"] == 0.0
    assert table["body.layers_0.blocks.0.attn.qkv.weight"] == 0.05
    assert table["body.layers_0.blocks.0.attn.qkv.bias"] == 0.05
    assert table["body.patch_embed.proj.weight"] == 0.05
