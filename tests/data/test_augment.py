"""Augmentation invariants (docs/augmentation.md): flip symmetry, depth scaling, nearest labels, pad values,
VOID/ignore handling, determinism per (seed, epoch, index), and the off switch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from panopticdepth.config.data import AugmentationConfig, DataConfig
from panopticdepth.data.augment import Augmentation
from panopticdepth.data.build import build_dataset
from panopticdepth.data.sample import make_sample


def _inputs(h=12, w=20, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    pan = np.zeros((h, w), np.int64)
    pan[:, : w // 2] = 13001
    pan[2:6, w // 2 :] = 11002
    pan[-2:] = 32000
    depth = rng.uniform(2, 50, (h, w)).astype(np.float32)
    depth[0, :] = 0.0
    depth[:, 3] = 0.0
    return image, pan, depth


def _aug(**kw) -> Augmentation:
    cfg = AugmentationConfig(color=False, hflip=False)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return Augmentation(cfg)


def _gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def test_flip_symmetry():
    image, pan, depth = _inputs()
    aug = _aug(hflip=True)
    flipped = 0
    for seed in range(24):
        im2, pan2, d2 = aug(image, pan, depth, _gen(seed))
        if np.array_equal(pan2, pan[:, ::-1]):
            flipped += 1
            np.testing.assert_array_equal(im2, image[:, ::-1])
            np.testing.assert_array_equal(d2, depth[:, ::-1])
        else:
            np.testing.assert_array_equal(pan2, pan)
            np.testing.assert_array_equal(im2, image)
            np.testing.assert_array_equal(d2, depth)
    assert 4 <= flipped <= 20  # p = 0.5


def test_upscale_by_two_is_nearest_and_halves_depth():
    """Scale 2: labels/depth repeat each pixel 2x2 (nearest); depth x mean inverse scale = 0.5."""
    image, pan, depth = _inputs()
    aug = _aug(scale_range=[2.0, 2.0], depth_bound=False)
    im2, pan2, d2 = aug(image, pan, depth, _gen(0))
    up = lambda a: np.repeat(np.repeat(a, 2, 0), 2, 1)  # noqa: E731
    assert im2.shape == (24, 40, 3) and im2.dtype == np.uint8
    np.testing.assert_array_equal(pan2, up(pan))
    np.testing.assert_allclose(d2, up(depth) * 0.5, rtol=1e-6)
    assert ((d2 == 0) == up(depth == 0)).all()  # invalid stays invalid


def test_downscale_doubles_depth_and_bound_clips():
    image, pan, depth = _inputs(16, 24)
    d2 = _aug(scale_range=[0.5, 0.5], depth_bound=False)(image, pan, depth, _gen(0))[2]
    src = depth[1::2, 1::2]  # nearest-exact picks floor((i + 0.5) * 2) = 2i + 1
    np.testing.assert_allclose(d2, src * 2.0, rtol=1e-6)
    d3 = _aug(scale_range=[0.5, 0.5], depth_bound=True)(image, pan, depth, _gen(0))[2]
    np.testing.assert_allclose(d3, np.clip(src * 2.0, depth.min(), depth.max()), rtol=1e-6)


def test_pad_values_and_centre_placement():
    image, pan, depth = _inputs(10, 16)
    im2, pan2, d2 = _aug(crop_size=[15, 21])(image, pan, depth, _gen(0))
    top, left = (15 - 10) // 2, (21 - 16) // 2
    assert im2.shape == (15, 21, 3)
    np.testing.assert_array_equal(im2[top : top + 10, left : left + 16], image)
    np.testing.assert_array_equal(pan2[top : top + 10, left : left + 16], pan)
    inside = np.zeros((15, 21), bool)
    inside[top : top + 10, left : left + 16] = True
    assert (im2[~inside] == 128).all() and (pan2[~inside] == 32000).all() and (d2[~inside] == 0).all()
    s = make_sample(im2, pan2, d2, {})
    assert (s["semantic"].numpy()[~inside] == 255).all()


def test_centre_crop_and_random_crop():
    image, pan, depth = _inputs(20, 30)
    im2, pan2, _ = _aug(crop_size=[10, 12])(image, pan, depth, _gen(0))
    np.testing.assert_array_equal(pan2, pan[5:15, 9:21])
    np.testing.assert_array_equal(im2, image[5:15, 9:21])
    offsets = set()
    for seed in range(10):
        _, pan3, d3 = _aug(crop_size=[10, 12], crop_mode="random")(image, pan, depth, _gen(seed))
        hits = [
            (y, x) for y in range(11) for x in range(19) if np.array_equal(d3, depth[y : y + 10, x : x + 12])
        ]
        assert hits
        offsets.add(hits[0])
    assert len(offsets) > 1


def test_color_applies_the_drawn_ssd_parameters_to_the_image_only():
    from panopticdepth.data.augment import ColorParams, apply_color_ssd, draw_color_params

    image, pan, depth = _inputs()
    # Brightness alone adds the drawn delta to every value (float32, clipped, truncated);
    # contrast alone scales every value.
    for beta in (-20.5, 17.25):
        got = apply_color_ssd(image, ColorParams(beta, True, None, None, None))
        np.testing.assert_array_equal(got, np.clip(image.astype(np.float32) + beta, 0, 255).astype(np.uint8))
    got = apply_color_ssd(image, ColorParams(None, True, 1.3, None, None))
    np.testing.assert_array_equal(got, np.clip(image.astype(np.float32) * 1.3, 0, 255).astype(np.uint8))
    # The augmentation applies exactly the parameters drawn from its generator, and only to the image.
    aug = Augmentation(AugmentationConfig(color=True, hflip=False))
    for seed in range(8):
        params = draw_color_params(_gen(seed))
        im2, pan2, d2 = aug(image, pan, depth, _gen(seed))
        assert im2.dtype == np.uint8 and im2.shape == image.shape
        np.testing.assert_array_equal(im2, apply_color_ssd(image, params))
        np.testing.assert_array_equal(pan2, pan)
        np.testing.assert_array_equal(d2, depth)


def test_dataset_determinism_and_switch(synth_root):
    cfg = DataConfig(dataset="synthetic", root=str(synth_root), seed=3)
    cfg.augmentation = AugmentationConfig(scale_range=[0.8, 1.2], crop_size=[48, 96])
    ds = build_dataset(cfg, "train", train=True)
    a, b = ds[1], ds[1]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["panoptic"], b["panoptic"])
    assert a["image"].shape == (3, 48, 96)
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["image"], a["image"])
    ds.set_epoch(0)
    assert torch.equal(ds[1]["image"], a["image"])
    cfg.augmentation.enabled = False
    plain = build_dataset(cfg, "train", train=True)
    raw = build_dataset(cfg, "train", train=False)
    assert torch.equal(plain[1]["image"], raw[1]["image"]) and plain[1]["image"].shape[-2:] == (64, 128)


@pytest.mark.parametrize("crop", [[], [40, 100]])
def test_instances_follow_augmented_panoptic(synth_root, crop):
    cfg = DataConfig(dataset="synthetic", root=str(synth_root), seed=1)
    cfg.augmentation = AugmentationConfig(scale_range=[0.7, 1.3], crop_size=crop)
    s = build_dataset(cfg, "train", train=True)[0]
    pan = s["panoptic"].numpy()
    for m, c in zip(s["instance_masks"].numpy(), s["instance_classes"].numpy()):
        vals = np.unique(pan[m])
        assert len(vals) == 1 and vals[0] // 1000 == c + 11 and (pan == vals[0]).sum() == m.sum()
    assert ((s["semantic"].numpy() == 255) == (pan // 1000 > 18)).all()
    assert s["depth"].shape == pan.shape == tuple(s["image"].shape[-2:])
