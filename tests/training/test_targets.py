"""Ground-truth generation against brute-force references written in the tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from panopticdepth.config import Config
from panopticdepth.errors import DataError
from panopticdepth.modeling.outputs import HeadOutputs, LevelOutputs
from panopticdepth.training.targets import boxes_from_masks, build_targets, draw_heatmap, gaussian_radius

LEVEL_STRIDES = (8, 16, 32, 64, 128)


def fake_outputs(batch: int, padded: tuple[int, int], channels: int = 4) -> HeadOutputs:
    hp, wp = padded
    levels = []
    for s in LEVEL_STRIDES:
        h, w = math.ceil(hp / s), math.ceil(wp / s)
        levels.append(
            LevelOutputs(
                torch.zeros(batch, 8, h, w),
                torch.zeros(batch, 19, h, w),
                torch.zeros(batch, channels, h, w),
                torch.zeros(batch, 18, h, w),
            )  # fmt: skip
        )
    return HeadOutputs(levels=levels, mask_embedding=torch.zeros(batch, channels, hp // 4, wp // 4))


def make_sample(
    h: int = 64, w: int = 128, boxes=((4, 6, 30, 40, 2), (50, 10, 90, 60, 0)), seed: int = 0
) -> dict:
    """Rectangular instances (x0, y0, x1, y1 inclusive, class), a striped semantic map, depth."""
    g = torch.Generator().manual_seed(seed)
    semantic = torch.zeros(h, w, dtype=torch.int64)
    semantic[: h // 3] = 10
    semantic[h // 3 : h // 2] = 2
    semantic[h - 5 :] = 255
    masks = torch.zeros(len(boxes), h, w, dtype=torch.bool)
    for i, (x0, y0, x1, y1, c) in enumerate(boxes):
        masks[i, y0 : y1 + 1, x0 : x1 + 1] = True
        semantic[masks[i]] = 11 + c
    depth = torch.rand(h, w, generator=g) * 50 + 1
    depth[torch.rand(h, w, generator=g) < 0.3] = 0
    return {
        "image": torch.zeros(3, h, w, dtype=torch.uint8),
        "semantic": semantic,
        "instance_masks": masks,
        "instance_classes": torch.tensor([b[4] for b in boxes], dtype=torch.int64),
        "depth": depth,
        "meta": {"image_path": f"synthetic_{seed}.png"},
    }


def radius_reference(w: float, h: float, o: float) -> float:
    """Smallest of the three CornerNet roots, each (b + sqrt(b^2 - 4ac)) / 2 (CenterNet variant)."""
    roots = []
    for a, b, c in (
        (1, h + w, w * h * (1 - o) / (1 + o)),
        (4, 2 * (h + w), (1 - o) * w * h),
        (4 * o, -2 * o * (h + w), (o - 1) * w * h),
    ):
        roots.append((b + math.sqrt(b * b - 4 * a * c)) / 2)
    return min(roots)


def test_gaussian_radius_matches_independent_formula():
    wh = torch.tensor([[3.5, 7.25], [10.0, 2.0], [0.0, 5.0], [40.0, 33.0]])
    got = gaussian_radius(wh, 0.7)
    for (w, h), r in zip(wh.tolist(), got.tolist()):
        assert r == pytest.approx(radius_reference(w, h, 0.7), rel=1e-5)
    # not CornerNet's own (b + sq) / (2a) form, which gives a different (smaller) radius here
    w, h, o = 40.0, 33.0, 0.7
    b3, c3 = -2 * o * (h + w), (o - 1) * w * h
    cornernet_r3 = (b3 + math.sqrt(b3 * b3 - 16 * o * c3)) / (8 * o)  # 3.53 vs the variant's 9.89
    assert float(got[3]) > cornernet_r3 + 5


def test_heatmap_matches_brute_force_drawing():
    h, w = 9, 13
    centers = torch.tensor([[2, 3], [12, 0], [13, 8], [6, 4]])  # (x, y); x = w is the original's off-by-one
    radius = torch.tensor([2, 3, 1, 0], dtype=torch.int32)
    classes = torch.tensor([1, 1, 0, 1])
    heat = draw_heatmap(centers, radius, classes, 3, (h, w), 3.0)
    ref = np.zeros((3, h, w), np.float32)
    for (cx, cy), r, c in zip(centers.tolist(), radius.tolist(), classes.tolist()):
        sigma = (2 * r + 1) / 3.0
        for y in range(h):
            for x in range(w):
                if abs(x - cx) <= r and abs(y - cy) <= r:
                    v = np.float32(math.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma * sigma)))
                    ref[c, y, x] = max(ref[c, y, x], v)
    np.testing.assert_allclose(heat.numpy(), ref, rtol=0, atol=1e-7)
    assert heat[1, 4, 6] == 1.0 and heat[2].abs().sum() == 0


def test_boxes_inclusive_max_and_empty():
    masks = torch.zeros(2, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 3:9] = True
    boxes = boxes_from_masks(masks)
    assert boxes.tolist() == [[3.0, 2.0, 8.0, 4.0], [0.0, 0.0, 0.0, 0.0]]


def test_thing_targets_against_references():
    sample = make_sample()
    cfg = Config()
    t = build_targets([sample], fake_outputs(1, (64, 128)), (64, 128), cfg)
    p3 = t.levels[0]
    masks = sample["instance_masks"]
    # scales: sqrt(27*34) ~ 30 and sqrt(40*50) ~ 45 -> both only on p3 (1..128)
    assert p3.num_things.tolist() == [2] and all(int(lv.num_things[0]) == 0 for lv in t.levels[1:])
    assert t.num_things == 2
    soft = F.interpolate(masks.float()[None], size=(16, 32), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(p3.thing_masks[0], soft)
    for i in range(2):
        ys, xs = np.nonzero(soft[i].numpy() > 0)
        cx, cy = int(xs.mean() * 16 / 32), int(ys.mean() * 8 / 16)
        assert int(p3.thing_index[0, i]) == cy * 16 + cx
        cls = int(sample["instance_classes"][i])
        assert p3.thing_classes[0, i] == cls and p3.center[0, cls, cy, cx] == 1.0
    # empty levels: one 255-filled slot, zero heat map
    p5 = t.levels[2]
    assert p5.thing_masks.shape[1] == 1 and bool((p5.thing_masks == 255).all()) and p5.center.sum() == 0


def test_overlapping_scale_ranges_count_twice():
    big = make_sample(128, 256, boxes=((10, 10, 109, 109, 3),))  # scale 99 in [64, 128]: p3 and p4
    t = build_targets([big], fake_outputs(1, (128, 256)), (128, 256), Config())
    assert [int(lv.num_things[0]) for lv in t.levels] == [1, 1, 0, 0, 0]
    assert t.num_things == 2


def test_stuff_targets_soft_and_compacted():
    sample = make_sample()
    t = build_targets([sample], fake_outputs(1, (64, 128)), (64, 128), Config())
    sem = sample["semantic"].clone()
    # 255 -> all zero (docs/original_implementation.md#ignore-negatives)
    onehot = torch.stack([(sem == c).float() for c in range(19)])
    gt_sem = F.interpolate(onehot[None], size=(16, 32), mode="bilinear", align_corners=False)[0]
    for lv in t.levels:
        h, w = lv.stuff_scores.shape[-2:]
        ref = F.interpolate(gt_sem[None], size=(h, w), mode="bilinear", align_corners=False)[0].clamp(max=1)
        ref[ref < 0.5] = 0
        torch.testing.assert_close(lv.stuff_scores[0], ref)
        present = [c for c in range(19) if ref[c].sum() > 0]
        n = len(present)
        assert lv.stuff_classes[0, :n].tolist() == present and int(lv.num_stuff[0]) == n
        torch.testing.assert_close(lv.stuff_labels[0, :n], gt_sem[present])
        torch.testing.assert_close(lv.stuff_masks[0, :n], (ref[present] > 0).float())
    assert bool(((t.levels[0].stuff_scores > 0) & (t.levels[0].stuff_scores < 0.5)).sum() == 0)


def test_depth_target_and_instance_statistics():
    sample = make_sample()
    t = build_targets([sample], fake_outputs(1, (64, 128)), (64, 128), Config())
    # legacy nearest = top-left pixel of each 4x4 block (docs/original_implementation.md#legacy-nearest-depth)
    ref = sample["depth"][::4, ::4]
    torch.testing.assert_close(t.depth[0, 0], ref)
    p3 = t.levels[0]
    for i in range(2):
        vals = [
            float(ref[y, x])
            for y in range(16)
            for x in range(32)
            if p3.thing_masks[0, i, y, x] > 0 and ref[y, x] > 0
        ]
        assert int(p3.thing_depth_count[0, i]) == len(vals)
        assert float(p3.thing_depth_mean[0, i]) == pytest.approx(sum(vals) / len(vals), rel=1e-5)
        assert float(p3.thing_depth_min[0, i]) == pytest.approx(min(vals))


def test_batch_with_padding_and_empty_image():
    a = make_sample(64, 128)
    b = make_sample(48, 96, boxes=(), seed=1)
    b["instance_masks"] = torch.zeros(0, 48, 96, dtype=torch.bool)
    b["instance_classes"] = torch.zeros(0, dtype=torch.int64)
    t = build_targets([a, b], fake_outputs(2, (64, 128)), (64, 128), Config())
    p3 = t.levels[0]
    assert p3.thing_masks.shape[:2] == (2, 2) and p3.num_things.tolist() == [2, 0]
    assert bool((p3.thing_masks[1] == 255).all()) and p3.center[1].sum() == 0
    # the smaller image's targets are pasted top-left, zero outside
    assert t.depth[1, 0, 12:].abs().sum() == 0 and t.depth[1, 0, :, 24:].abs().sum() == 0
    assert p3.stuff_labels[1, :, 12:].abs().sum() == 0


def test_missing_depth_is_a_data_error():
    sample = make_sample()
    sample["depth"] = None
    with pytest.raises(DataError, match="synthetic_0.png"):
        build_targets([sample], fake_outputs(1, (64, 128)), (64, 128), Config())
    cfg = Config()
    cfg.model.depth.enabled = False
    assert build_targets([sample], fake_outputs(1, (64, 128)), (64, 128), cfg).depth is None


def test_inconsistent_instances_are_data_errors():
    bad_class = make_sample()
    bad_class["instance_classes"] = torch.tensor([2, 8])
    with pytest.raises(DataError, match="outside 0..7"):
        build_targets([bad_class], fake_outputs(1, (64, 128)), (64, 128), Config())
    cfg = Config()
    cfg.train.targets.tensor_dim = 1
    with pytest.raises(DataError, match="tensor_dim"):
        build_targets([make_sample()], fake_outputs(1, (64, 128)), (64, 128), cfg)


@pytest.mark.parametrize(
    "big, small",
    [
        ((128, 256), (32, 64)),
        ((64, 128), (16, 32)),
        ((64, 96), (32, 16)),
        ((96, 64), (16, 8)),
        ((60, 80), (15, 20)),
        ((30, 50), (10, 10)),  # odd factors: the kernel itself
    ],
)
def test_downsampled_binary_maps_are_the_bilinear_kernels_values(big, small):
    from panopticdepth.training.targets import _bilinear_chunked, _stuff_semantics

    g = torch.Generator().manual_seed(3)
    masks = torch.rand((11, *big), generator=g) > 0.5
    want = F.interpolate(masks.float()[None], size=small, mode="bilinear", align_corners=False)[0]
    got = _bilinear_chunked(masks, small)
    assert got.dtype == torch.float32 and torch.equal(got, want)  # bit for bit, sampled or not
    # semantic maps with the ignore label and ids outside the classes: zero rows, as the one-hot has
    sem = torch.randint(0, 24, big, generator=g)
    sem[:5] = 255
    stride = big[0] // small[0]
    if big[1] // small[1] == stride:
        classes = torch.arange(19).view(-1, 1, 1)
        ref = F.interpolate((sem == classes).float()[None], size=small, mode="bilinear", align_corners=False)[
            0
        ]
        got = _stuff_semantics({"semantic": sem}, 19, 255, stride, small, torch.device("cpu"))
        assert torch.equal(got, ref)


def test_a_batch_holds_each_images_own_targets():
    """The levels are built for all images at once: every image's slots, heat maps and stuff maps
    must equal what that image gets alone (an empty image in the middle shifts nothing)."""
    samples = [
        make_sample(64, 128, seed=0),
        make_sample(64, 128, boxes=(), seed=1),
        make_sample(64, 128, boxes=((2, 2, 60, 50, 1), (70, 5, 80, 20, 4), (90, 30, 126, 62, 0)), seed=2),
    ]
    samples[1]["instance_masks"] = torch.zeros(0, 64, 128, dtype=torch.bool)
    samples[1]["instance_classes"] = torch.zeros(0, dtype=torch.int64)
    batch = build_targets(samples, fake_outputs(3, (64, 128)), (64, 128), Config())
    for i, sample in enumerate(samples):
        alone = build_targets([sample], fake_outputs(1, (64, 128)), (64, 128), Config())
        assert torch.equal(batch.depth[i], alone.depth[0])
        for lb, la in zip(batch.levels, alone.levels):
            n, m = int(la.num_things[0]), int(la.num_stuff[0])
            assert int(lb.num_things[i]) == n and int(lb.num_stuff[i]) == m
            assert torch.equal(lb.center[i], la.center[0])
            for name in ("thing_masks", "thing_classes", "thing_index", "thing_depth_mean"):
                assert torch.equal(getattr(lb, name)[i, :n], getattr(la, name)[0, :n]), name
            assert torch.equal(lb.thing_depth_min[i, :n], la.thing_depth_min[0, :n])
            assert bool((lb.thing_masks[i, n:] == 255).all()) and not bool(lb.thing_valid[i, n:].any())
            assert torch.equal(lb.stuff_scores[i], la.stuff_scores[0])
            for name in ("stuff_labels", "stuff_masks", "stuff_classes"):
                assert torch.equal(getattr(lb, name)[i, :m], getattr(la, name)[0, :m]), name
    assert sum(int(lv.num_things[2]) for lv in batch.levels) >= 3  # the third image's things are placed
