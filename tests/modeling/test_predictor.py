"""Predictor: any size (pad + crop back), grayscale/RGBA inputs, batching, speed switches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from panopticdepth.config.model import ModelConfig
from panopticdepth.modeling.network import build_model
from panopticdepth.modeling.predictor import Predictor, to_rgb_chw


def tiny_model_config() -> ModelConfig:
    cfg = ModelConfig()
    cfg.backbone.name = "resnet18"
    cfg.fpn.out_channels = 32
    cfg.heads.convs_dim = 32
    cfg.heads.norm_groups = 8
    cfg.inference.stuff_area_limit = 16
    return cfg


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    cfg = tiny_model_config()
    model = build_model(cfg)
    seen: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    p = Predictor(model, cfg)
    p.seen = seen
    return p


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_odd_size_is_padded_and_cropped_back(predictor):
    predictor.seen.clear()
    res = predictor.predict(_image(37, 53))
    assert predictor.seen == [(1, 3, 64, 64)]
    assert res.panoptic.shape == res.semantic.shape == res.depth.shape == (37, 53)
    assert res.sem_seg_probs.shape[1:] == (37, 53)
    assert sum(s.area for s in res.segments) == 37 * 53 - int((res.segment_ids < 0).sum())


def test_grayscale_and_rgba_equal_rgb(predictor):
    gray = _image(40, 48)[..., 0]
    rgb = np.repeat(gray[..., None], 3, axis=2)
    rgba = np.concatenate([rgb, np.full((40, 48, 1), 7, np.uint8)], axis=2)
    ref = predictor.predict(rgb)
    for img in (gray, gray[..., None], rgba):
        res = predictor.predict(img)
        assert torch.equal(res.panoptic, ref.panoptic)
        assert torch.equal(res.depth, ref.depth)


def test_to_rgb_chw_layouts():
    img = _image(5, 6)
    chw = to_rgb_chw(img)
    assert chw.shape == (3, 5, 6) and chw.dtype == torch.uint8
    assert torch.equal(chw, torch.from_numpy(img).permute(2, 0, 1))
    assert torch.equal(to_rgb_chw(chw), chw)
    with pytest.raises(ValueError):
        to_rgb_chw(np.zeros((4, 5, 2), np.uint8))


def test_batch_equals_single_images(predictor):
    images = [_image(40, 48, 1), _image(70, 33, 2), _image(33, 40, 3)]
    predictor.seen.clear()
    batch = predictor.predict_batch(images, batch_size=4)
    # Images are grouped by padded size: (64, 64) twice, (96, 64) once.
    assert sorted(predictor.seen) == [(1, 3, 96, 64), (2, 3, 64, 64)]
    for img, res in zip(images, batch):
        single = predictor.predict(img)
        assert res.panoptic.shape == img.shape[:2]
        assert (res.panoptic == single.panoptic).float().mean() > 0.999
        torch.testing.assert_close(res.depth, single.depth, atol=1e-3, rtol=0)


def test_bf16_channels_last_runs(predictor):
    fast = Predictor(predictor.model, predictor.cfg, channels_last=True, bf16=True)
    res = fast.predict(_image(37, 53))
    assert res.panoptic.shape == (37, 53) and res.depth.dtype == torch.float32
    predictor.model.to(memory_format=torch.contiguous_format)
