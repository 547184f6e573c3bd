"""PanopticDepthNet: shapes per level, switches (depth off, pixel depth, deform off), features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from panopticdepth.config import load_config
from panopticdepth.config.loader import ConfigError
from panopticdepth.modeling import build_model
from panopticdepth.modeling.predictor import Predictor

SMALL = [
    "model.backbone.name=resnet18",
    "model.fpn.out_channels=32",
    "model.heads.convs_dim=32",
    "model.heads.norm_groups=8",
    "model.heads.num_convs=1",
]


def _model(*extra):
    torch.manual_seed(0)
    return build_model(load_config(None, SMALL + list(extra)).model).eval()


def test_small_model_shapes_and_features():
    m = _model()
    with torch.no_grad():
        out = m(torch.randn(1, 3, 128, 256), return_features=True)
    assert len(out.levels) == 5
    for lv, s in zip(out.levels, (8, 16, 32, 64, 128)):
        h, w = 128 // s, 256 // s
        assert lv.center_logits.shape == (1, 8, h, w)
        assert lv.region_logits.shape == (1, 19, h, w)
        assert lv.kernels.shape == (1, 32, h, w)
        assert lv.depth_kernels.shape == (1, 18, h, w)
    assert out.mask_embedding.shape == (1, 32, 32, 64)
    assert out.depth_embedding.shape == (1, 16, 32, 64)
    assert out.pixel_depth is None
    expected = {"res2", "res3", "res4", "res5", "p2", "p3", "p4", "p5", "p6", "p7", "semantic"}
    assert set(out.features) == expected
    assert isinstance(
        m.kernel_projection.thing, torch.nn.Linear
    ) and m.kernel_projection.thing.weight.shape == (32, 32)
    assert {"thing_projection.weight", "stuff_projection.bias"} <= set(m.state_dict())  # saved keys kept


P2_LEVELS = [
    "model.heads.levels=[p2,p3,p4,p5]",
    "train.targets.instance_scales=[[1,32],[16,128],[64,256],[128,512]]",
    "model.inference.pool_sizes=[3,3,3,3]",
]


def test_head_levels_follow_the_config():
    m = _model(*P2_LEVELS)
    assert m.head_levels == ("p2", "p3", "p4", "p5")
    with torch.no_grad():
        out = m(torch.randn(1, 3, 128, 256))
    assert [tuple(lv.center_logits.shape[-2:]) for lv in out.levels] == [(32, 64), (16, 32), (8, 16), (4, 8)]
    assert all(lv.kernels.shape[1] == 32 and lv.depth_kernels.shape[1] == 18 for lv in out.levels)
    # the heads are shared over levels (no new parameters); p6 and p7 are not built when unused
    default = set(_model().state_dict())
    assert set(m.state_dict()) == {k for k in default if not k.startswith(("fpn.p6.", "fpn.p7."))}


def test_predictor_runs_on_p2_levels():
    cfg = load_config(None, SMALL + P2_LEVELS)
    torch.manual_seed(0)
    image = np.random.default_rng(0).integers(0, 256, (96, 160, 3), dtype=np.uint8)
    result = Predictor(build_model(cfg.model).eval(), cfg).predict(image)
    assert tuple(result.panoptic.shape) == (96, 160) and tuple(result.depth.shape) == (96, 160)


@pytest.mark.parametrize("levels", ["[p1,p3]", "[p4,p3]", "[]"])
def test_bad_head_levels_are_config_errors(levels):
    with pytest.raises(ConfigError, match="model.heads.levels"):
        load_config(None, [f"model.heads.levels={levels}"])


@pytest.mark.parametrize(
    ("overrides", "other"),
    [
        (["model.heads.levels=[p2,p3,p4,p5]"], "train.targets.instance_scales"),
        (P2_LEVELS[:2] + ["model.inference.pool_sizes=[3,3,3]"], "model.inference.pool_sizes"),
    ],
)
def test_per_level_settings_must_cover_the_head_levels(overrides, other):
    with pytest.raises(ConfigError, match=f"model.heads.levels has 4 entries but {other}"):
        load_config(None, overrides)


def test_depth_off_has_no_depth_modules():
    m = _model("model.depth.enabled=false")
    assert not any(k.startswith(("depth_encoder", "depth_kernel_head")) for k in m.state_dict())
    with torch.no_grad():
        out = m(torch.randn(1, 3, 64, 128))
    assert out.depth_embedding is None and out.levels[0].depth_kernels is None and not out.features


def test_pixel_depth_variant():
    m = _model("model.depth.mode=pixel", "model.depth.max_depth=50.0")
    assert m.depth_kernel_head is None
    with torch.no_grad():
        out = m(torch.randn(2, 3, 64, 128))
    assert out.pixel_depth.shape == (2, 1, 16, 32)
    assert float(out.pixel_depth.min()) >= 0 and float(out.pixel_depth.max()) <= 50
    assert out.depth_embedding is None


def test_deform_off_removes_offset_convs_only():
    on = set(_model().state_dict())
    off = set(
        _model(
            "model.heads.position_deform=false",
            "model.heads.encoder_deform=false",
            "model.heads.depth_kernel_deform=false",
        ).state_dict()
    )
    assert off == {k for k in on if ".offset_conv." not in k}
    assert any(".offset_conv." in k for k in on)


def test_deform_impls_agree_in_network():
    a = _model("model.heads.deform_impl=sample")
    b = _model("model.heads.deform_impl=torchvision")
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        oa, ob = a(x), b(x)
    assert torch.allclose(oa.mask_embedding, ob.mask_embedding, atol=1e-4, rtol=1e-4)
    assert torch.allclose(oa.levels[0].center_logits, ob.levels[0].center_logits, atol=1e-4, rtol=1e-4)


def test_backward_reaches_heads():
    m = _model()
    m.train()
    out = m(torch.randn(1, 3, 64, 128))
    loss = out.mask_embedding.mean() + sum(
        lv.center_logits.mean() + lv.depth_kernels.mean() for lv in out.levels
    )
    loss.backward()
    assert m.mask_encoder.tower.layers[0].conv.offset_conv.weight.grad is not None
    assert m.position_head.center_out.weight.grad is not None
    # freeze_at = 2 (default): stem frozen
    assert m.backbone.body.conv1.weight.grad is None
