"""Preprocessing: channel order, per-channel mean/std, zero padding after normalisation."""

from __future__ import annotations

import numpy as np
import torch

from panopticdepth.config import ModelConfig
from panopticdepth.modeling.preprocess import preprocess


def _reference(img_rgb: np.ndarray, mean, std, fmt: str, hp: int, wp: int) -> np.ndarray:
    out = np.zeros((3, hp, wp), np.float64)
    c_order = [2, 1, 0] if fmt == "BGR" else [0, 1, 2]
    for c in range(3):
        for y in range(img_rgb.shape[1]):
            for x in range(img_rgb.shape[2]):
                out[c, y, x] = (float(img_rgb[c_order[c], y, x]) - mean[c]) / std[c]
    return out


def test_bgr_mean_applied_per_tensor_channel_and_padding():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 5, 7), dtype=np.uint8)
    b = rng.integers(0, 256, (3, 9, 4), dtype=np.uint8)
    cfg = ModelConfig(size_divisibility=8, pixel_std=[1.0, 2.0, 4.0])
    batch, sizes = preprocess([torch.from_numpy(a), torch.from_numpy(b)], cfg)
    assert sizes == [(5, 7), (9, 4)]
    assert batch.shape == (2, 3, 16, 8) and batch.dtype == torch.float32
    for i, img in enumerate((a, b)):
        ref = _reference(img, [123.675, 116.28, 103.53], cfg.pixel_std, "BGR", 16, 8)
        np.testing.assert_allclose(batch[i].numpy(), ref, rtol=0, atol=1e-4)
    # channel 0 of the batch is B minus the first mean value (docs/original_implementation.md#bgr-input)
    assert abs(float(batch[0, 0, 0, 0]) - (a[2, 0, 0] - 123.675)) < 1e-4


def test_rgb_format_and_no_padding_when_divisible():
    img = torch.randint(0, 256, (3, 32, 64), dtype=torch.uint8)
    cfg = ModelConfig(input_format="RGB", pixel_mean=[1.0, 2.0, 3.0])
    batch, _ = preprocess([img], cfg)
    assert batch.shape == (1, 3, 32, 64)
    ref = img.double() - torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).view(3, 1, 1)
    assert torch.allclose(batch[0].double(), ref, atol=1e-5)


def test_swin_backbone_gets_imagenet_rgb_normalisation():
    img = torch.randint(0, 256, (3, 32, 64), dtype=torch.uint8)
    cfg = ModelConfig()
    cfg.backbone.name = "swin_t"
    batch, _ = preprocess([img], cfg)
    mean = torch.tensor([123.675, 116.28, 103.53], dtype=torch.float64).view(3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375], dtype=torch.float64).view(3, 1, 1)
    assert torch.allclose(batch[0].double(), (img.double() - mean) / std, atol=1e-5)
    # an explicit setting wins over the backbone's convention
    cfg.input_format = "BGR"
    batch_bgr, _ = preprocess([img], cfg)
    assert torch.allclose(batch_bgr[0, 0].double(), (img[2].double() - 123.675) / 58.395, atol=1e-5)
