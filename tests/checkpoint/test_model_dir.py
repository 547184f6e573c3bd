"""Model directory round trip."""

from __future__ import annotations

import pytest
import torch

from panopticdepth.checkpoint.model_dir import load_model_dir, save_model_dir
from panopticdepth.config import load_config
from panopticdepth.errors import CheckpointError
from panopticdepth.modeling import build_model

SMALL = [
    "model.backbone.name=resnet18",
    "model.fpn.out_channels=32",
    "model.heads.convs_dim=32",
    "model.heads.norm_groups=8",
    "model.heads.num_convs=1",
    "model.inference.stuff_area_limit=777",
]


def test_round_trip(tmp_path):
    cfg = load_config(None, SMALL)
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    save_model_dir(tmp_path / "m", model, cfg)
    assert (tmp_path / "m" / "model.safetensors").is_file() and (tmp_path / "m" / "config.yaml").is_file()
    loaded, cfg2 = load_model_dir(tmp_path / "m")
    assert cfg2 == cfg
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert torch.equal(a.mask_embedding, b.mask_embedding)
    assert torch.equal(a.levels[2].depth_kernels, b.levels[2].depth_kernels)
    # inference-only overrides apply; architecture overrides that do not fit are named errors
    _, cfg3 = load_model_dir(tmp_path / "m", overrides=["model.inference.stuff_area_limit=5"])
    assert cfg3.model.inference.stuff_area_limit == 5
    with pytest.raises(CheckpointError, match="unexpected keys .*depth_encoder"):
        load_model_dir(tmp_path / "m", overrides=["model.depth.enabled=false"])


def test_missing_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model_dir(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model_dir(tmp_path / "empty")
