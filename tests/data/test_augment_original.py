"""The original's panoptic-segmentation pipeline and SSD colour transform (docs/augmentation.md),
each compared with a reference written in this file from the description of the original."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from panopticdepth.config import ConfigError
from panopticdepth.config.data import AugmentationConfig, DataConfig
from panopticdepth.data.augment import Augmentation, ColorParams, apply_color_ssd, draw_color_params
from panopticdepth.data.build import build_dataset
from panopticdepth.data.sample import make_sample

cv2 = pytest.importorskip("cv2")

STAGE1_EDGES = [512, 768, 1024, 1152, 1216, 1344, 1408, 1536, 1664, 1728, 1856, 1920, 2048]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ps(**kw) -> Augmentation:
    cfg = AugmentationConfig(pipeline="ps", crop_mode="random", hflip=False, color=False)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return Augmentation(cfg)


def ref_short_edge_size(h: int, w: int, short: int, max_size: int) -> tuple[int, int]:
    """Shortest edge -> `short`; if the longer side exceeds max_size, rescale to fit; int(x + 0.5)."""
    s = short / min(h, w)
    new_h, new_w = h * s, w * s
    longest = max(new_h, new_w)
    if longest > max_size:
        new_h, new_w = new_h * max_size / longest, new_w * max_size / longest
    return int(new_h + 0.5), int(new_w + 0.5)


def ref_nearest(labels: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Nearest neighbour sampling at output pixel centres: source index floor((i + 0.5) * in / out)."""
    h, w = labels.shape
    rows = np.floor((np.arange(size_hw[0]) + 0.5) * h / size_hw[0]).astype(int)
    cols = np.floor((np.arange(size_hw[1]) + 0.5) * w / size_hw[1]).astype(int)
    return labels[rows][:, cols]


# ---------------------------------------------------------------- shortest-edge resize


def test_reference_sizes_of_the_stage_lists():
    # a Cityscapes frame: the short side becomes S, the long one 2S (4096 is never exceeded)
    assert [ref_short_edge_size(1024, 2048, s, 4096) for s in STAGE1_EDGES[:2]] == [(512, 1024), (768, 1536)]
    assert ref_short_edge_size(1024, 2048, 2048, 4096) == (2048, 4096)
    assert ref_short_edge_size(100, 1000, 512, 4096) == (410, 4096)  # capped: 512 x 5120 -> 409.6 x 4096


@pytest.mark.parametrize(
    ("hw", "edges", "max_size"),
    [((6, 12), [3, 6, 8, 12, 15], 4096), ((12, 5), [4, 7, 10], 4096), ((4, 20), [6, 9], 40)],
)
def test_drawn_sizes_are_uniform_over_the_list(hw, edges, max_size):
    """Many draws through the pipeline: every listed length appears with frequency 1/len."""
    h, w = hw
    aug = _ps(short_edges=edges, max_size=max_size)
    image = np.zeros((h, w, 3), np.uint8)
    pan = np.arange(h * w, dtype=np.int64).reshape(h, w)
    expected = {ref_short_edge_size(h, w, s, max_size): s for s in edges}
    assert len(expected) == len(edges)
    n = 1200
    counts = dict.fromkeys(expected.values(), 0)
    for seed in range(n):
        out_img, out_pan, _ = aug(image, pan, None, _gen(seed))
        assert out_img.shape[:2] == out_pan.shape
        counts[expected[out_pan.shape]] += 1
    p = 1 / len(edges)
    sd = (n * p * (1 - p)) ** 0.5
    for s, c in counts.items():
        assert abs(c - n * p) < 4.5 * sd, (s, counts)


def test_stage1_list_scale_statistics():
    """The stage-1 list on a 1024 x 2048 frame: mean scale ~1.37x, 2 of 13 sizes shrink the image."""
    cfg = AugmentationConfig(pipeline="ps", short_edges=STAGE1_EDGES, crop_mode="random")
    aug = Augmentation(cfg)
    scales = [ref_short_edge_size(1024, 2048, s, aug.max_size)[0] / 1024 for s in aug.short_edges]
    assert np.mean(scales) == pytest.approx(1.365, abs=0.001)
    assert sum(s < 1 for s in scales) == 2


def test_resize_is_pil_bilinear_and_labels_are_nearest():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)
    pan = rng.integers(0, 40, (10, 14)) * 1000 + rng.integers(0, 3, (10, 14))
    for edges in ([5], [17]):  # down- and upscaling
        out_img, out_pan, _ = _ps(short_edges=edges)(image, pan, None, _gen(0))
        size = ref_short_edge_size(10, 14, edges[0], 4096)
        assert out_pan.shape == size
        np.testing.assert_array_equal(out_pan, ref_nearest(pan, size))
        pil = np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR))
        np.testing.assert_array_equal(out_img, pil)


# ---------------------------------------------------------------- flip and crop


def test_resize_flip_then_absolute_random_crop():
    """Windows of the resized (and maybe flipped) map, offsets uniform, no padding."""
    h, w = 8, 12
    pan = np.arange(h * w, dtype=np.int64).reshape(h, w)
    image = np.zeros((h, w, 3), np.uint8)
    resized = ref_nearest(pan, (16, 24))  # short edge 8 -> 16
    aug = _ps(short_edges=[16], crop_size=[12, 20], hflip=True)
    windows: dict[tuple[bool, int, int], int] = {}
    n = 1000
    for seed in range(n):
        _, out, _ = aug(image, pan, None, _gen(seed))
        assert out.shape == (12, 20)
        hits = [
            (flip, y, x)
            for flip, src in ((False, resized), (True, resized[:, ::-1]))
            for y in range(16 - 12 + 1)
            for x in range(24 - 20 + 1)
            if np.array_equal(src[y : y + 12, x : x + 20], out)
        ]
        assert len(hits) == 1
        windows[hits[0]] = windows.get(hits[0], 0) + 1
    # offsets uniform in [0, 16 - 12] x [0, 24 - 20], both flip states: 2 * 5 * 5 = 50 windows
    assert set(windows) == {(f, y, x) for f in (False, True) for y in range(5) for x in range(5)}
    mean = n / 50
    assert all(abs(c - mean) < 4.5 * mean**0.5 for c in windows.values()), windows
    # a crop larger than the image is clipped to it: no padding
    _, small, _ = _ps(short_edges=[h], crop_size=[50, 6])(image, pan, None, _gen(3))
    assert small.shape == (8, 6) and (small >= 0).all()


def test_colour_comes_last_on_the_cropped_image(monkeypatch):
    import panopticdepth.data.augment as augment

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    pan = np.zeros((16, 24), np.int64)
    calls = []
    real = augment.apply_color_ssd

    def recording(img, params):
        calls.append((img.copy(), params))
        return real(img, params)

    monkeypatch.setattr(augment, "apply_color_ssd", recording)
    geo = _ps(short_edges=[40], crop_size=[30, 50], hflip=True)
    col = _ps(short_edges=[40], crop_size=[30, 50], hflip=True, color=True)
    for seed in range(6):
        base, _, _ = geo(image, pan, None, _gen(seed))  # colour draws come after the geometric ones
        out, _, _ = col(image, pan, None, _gen(seed))
        seen, params = calls.pop()
        assert not calls and base.shape == out.shape == (30, 50, 3)
        np.testing.assert_array_equal(seen, base)
        np.testing.assert_array_equal(out, ref_color_ssd_bgr(base[..., ::-1].copy(), params)[..., ::-1])


# ---------------------------------------------------------------- SSD colour transform


def ref_color_ssd_bgr(bgr: np.ndarray, p: ColorParams) -> np.ndarray:
    """The SSD photometric distortion on a BGR uint8 image, written from its description."""

    def convert(x, alpha=1.0, beta=0.0):
        return np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def contrast(img):
        return img if p.contrast is None else convert(img, alpha=p.contrast)

    def saturation(img):
        if p.saturation is None:
            return img
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        hsv[:, :, 1] = convert(hsv[:, :, 1], alpha=p.saturation)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)

    def hue(img):
        if p.hue is None:
            return img
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + p.hue) % 180
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)

    img = bgr if p.brightness is None else convert(bgr, beta=p.brightness)
    if p.contrast_first:
        return hue(saturation(contrast(img)))
    return contrast(hue(saturation(img)))


def _random_params(rng) -> ColorParams:
    def maybe(value):
        return value if rng.random() < 0.7 else None

    return ColorParams(
        brightness=maybe(float(rng.uniform(-32, 32))),
        contrast_first=bool(rng.random() < 0.5),
        contrast=maybe(float(rng.uniform(0.5, 1.5))),
        saturation=maybe(float(rng.uniform(0.5, 1.5))),
        hue=maybe(int(rng.integers(-18, 19))),
    )


def test_color_transform_equals_opencv_bgr_reference():
    rng = np.random.default_rng(0)
    cases = [_random_params(rng) for _ in range(40)]
    cases += [
        ColorParams(32.0, True, 1.5, 1.5, 18),
        ColorParams(-32.0, False, 0.5, 0.5, -18),
        ColorParams(None, True, None, None, -1),  # the HSV round trip alone is lossy
    ]
    for i, params in enumerate(cases):
        h, w = int(rng.integers(1, 40)), int(rng.integers(1, 40))
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        rgb[0, 0] = (255, 0, 0)  # saturated red: hue wraps around 0
        expected = ref_color_ssd_bgr(rgb[..., ::-1].copy(), params)[..., ::-1]
        got = apply_color_ssd(rgb, params)
        assert got.dtype == np.uint8 and got.shape == rgb.shape
        np.testing.assert_array_equal(got, expected, err_msg=f"case {i}: {params}")
    # the lossy 8-bit HSV round trip is part of the behaviour: a hue shift of 0 still changes pixels
    rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert not np.array_equal(apply_color_ssd(rgb, ColorParams(None, True, None, None, 0)), rgb)


def test_color_draws_follow_the_ssd_distributions():
    draws = [draw_color_params(_gen(seed)) for seed in range(2000)]

    def rate(values):
        return sum(v is not None for v in values) / len(values)

    for name in ("brightness", "contrast", "saturation", "hue"):
        assert rate([getattr(d, name) for d in draws]) == pytest.approx(0.5, abs=0.05), name
    assert np.mean([d.contrast_first for d in draws]) == pytest.approx(0.5, abs=0.05)
    bright = [d.brightness for d in draws if d.brightness is not None]
    assert -32 <= min(bright) < -28 and 28 < max(bright) <= 32
    for name in ("contrast", "saturation"):
        vals = [getattr(d, name) for d in draws if getattr(d, name) is not None]
        assert 0.5 <= min(vals) < 0.55 and 1.45 < max(vals) <= 1.5
    hues = [d.hue for d in draws if d.hue is not None]
    assert set(hues) == set(range(-18, 19)) and all(isinstance(x, int) for x in hues)


# ---------------------------------------------------------------- configuration and boxes


def test_inconsistent_pipeline_settings_are_rejected():
    with pytest.raises(ConfigError, match="short_edges"):
        Augmentation(AugmentationConfig(pipeline="ps"))
    with pytest.raises(ConfigError, match="scale_range"):
        Augmentation(AugmentationConfig(pipeline="ps", short_edges=[8], scale_range=[1.0, 2.0]))
    with pytest.raises(ConfigError, match="short_edges"):
        Augmentation(AugmentationConfig(pipeline="dps", short_edges=[8]))
    with pytest.raises(ConfigError, match="pipeline"):
        Augmentation(AugmentationConfig(pipeline="detectron"))


def _thin_panoptic() -> np.ndarray:
    pan = np.zeros((24, 40), np.int64)  # road
    pan[3:23, 7] = 11001  # a person one pixel wide, 20 pixels tall
    pan[10:14, 20:30] = 13001  # a car, 10 x 4
    return pan


def test_box_rule_on_a_one_pixel_thin_instance():
    pan = _thin_panoptic()
    image = np.zeros((24, 40, 3), np.uint8)
    ps = make_sample(image, pan, None, {}, crowd_instance_zero=True, drop_thin=False, box_max_exclusive=True)
    assert ps["instance_classes"].tolist() == [0, 2]
    # (min x, min y, max x + 1, max y + 1): width 1, height 20 for the person
    assert ps["instance_boxes"].tolist() == [[7, 3, 8, 23], [20, 10, 30, 14]]
    dps = make_sample(image, pan, None, {}, drop_thin=False, box_max_exclusive=False)
    assert dps["instance_boxes"].tolist() == [[7, 3, 7, 22], [20, 10, 29, 13]]


def test_thin_instance_is_assigned_a_level_in_the_ps_pipeline():
    """sqrt(1 * 20) = 4.5 lies in the p3 range 1..128; with inclusive maxima the scale would be 0."""
    from panopticdepth.config import Config
    from panopticdepth.modeling.outputs import HeadOutputs, LevelOutputs
    from panopticdepth.training.targets import build_targets

    def fake_outputs(hp: int, wp: int) -> HeadOutputs:
        levels = []
        for stride in (8, 16, 32, 64, 128):
            h, w = -(-hp // stride), -(-wp // stride)
            maps = [torch.zeros(1, c, h, w) for c in (8, 19, 4, 18)]
            levels.append(LevelOutputs(*maps))
        return HeadOutputs(levels=levels, mask_embedding=torch.zeros(1, 4, hp // 4, wp // 4))

    pan = _thin_panoptic()
    image = np.zeros((24, 40, 3), np.uint8)
    cfg = Config()
    cfg.model.depth.enabled = False  # a panoptic-segmentation sample has no depth
    ps = make_sample(image, pan, None, {}, crowd_instance_zero=True, drop_thin=False, box_max_exclusive=True)
    targets = build_targets([ps], fake_outputs(32, 64), (32, 64), cfg)
    p3 = targets.levels[0]
    assert p3.thing_valid.sum().item() == 2
    assert sorted(p3.thing_classes[p3.thing_valid].tolist()) == [0, 2]
    # the same sample with inclusive boxes loses the person (scale 0 is in no range)
    inclusive = dict(ps, instance_boxes=None)
    p3_incl = build_targets([inclusive], fake_outputs(32, 64), (32, 64), cfg).levels[0]
    assert p3_incl.thing_classes[p3_incl.thing_valid].tolist() == [2]


def _write_cityscapes_panoptic(root: Path, pan: np.ndarray) -> None:
    """One frame in the Cityscapes panoptic layout; segment ids = label id (stuff) or label*1000+k."""
    label_of_train = {0: 7, 11: 24, 13: 26}
    seg = np.zeros(pan.shape, np.int64)
    segs = []
    for value in np.unique(pan):
        label = label_of_train[int(value) // 1000]
        sid = label * 1000 + int(value) % 1000 if value % 1000 else label
        seg[pan == value] = sid
        segs.append({"id": int(sid), "category_id": label, "iscrowd": 0, "area": int((pan == value).sum())})
    prefix = "aachen_000000_000019"
    folder = root / "gtFine" / "cityscapes_panoptic_train"
    folder.mkdir(parents=True)
    rgb = np.stack([seg % 256, seg // 256 % 256, seg // 65536], -1).astype(np.uint8)
    Image.fromarray(rgb).save(folder / f"{prefix}_gtFine_panoptic.png")
    img_dir = root / "leftImg8bit" / "train" / "aachen"
    img_dir.mkdir(parents=True)
    Image.fromarray(np.full((*pan.shape, 3), 90, np.uint8)).save(img_dir / f"{prefix}_leftImg8bit.png")
    ann = {"image_id": prefix, "file_name": f"{prefix}_gtFine_panoptic.png", "segments_info": segs}
    (root / "gtFine" / "cityscapes_panoptic_train.json").write_text(
        json.dumps({"annotations": [ann], "categories": []})
    )


def test_cityscapes_panoptic_training_samples_use_the_ps_box_rule(tmp_path):
    _write_cityscapes_panoptic(tmp_path, _thin_panoptic())
    cfg = DataConfig(dataset="cityscapes-panoptic", root=str(tmp_path))
    cfg.augmentation = AugmentationConfig(
        pipeline="ps", short_edges=[24], crop_size=[24, 40], crop_mode="random", hflip=False, color=True
    )
    s = build_dataset(cfg, "train", train=True)[0]
    assert s["instance_boxes"].tolist() == [[7, 3, 8, 23], [20, 10, 30, 14]]
    assert s["image"].shape == (3, 24, 40)
