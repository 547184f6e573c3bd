"""What the page is sent: segment table, index map, binary layouts, display subsampling."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from panopticdepth.app.views import (
    build_views,
    display_step,
    median_per_index,
    segment_index_map,
)
from panopticdepth.io.pointcloud import backproject
from panopticdepth.modeling.outputs import Segment


def _scene(h: int = 30, w: int = 60):
    """road (stuff) below, two cars, a void patch; depth grows with the row, 0 in one corner."""
    pan = np.zeros((h, w), dtype=np.int32)  # road: id 0
    pan[: h // 2] = 2000  # building
    pan[5:15, 5:20] = 13001
    pan[10:25, 30:50] = 13002
    pan[-3:, -3:] = 32000  # void
    rows = np.arange(h, dtype=np.float32)[:, None]
    depth = np.broadcast_to(5.0 + rows, (h, w)).astype(np.float32).copy()
    depth[:2, :2] = 0.0
    depth[10:25, 30:50] += 7.0
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    segs = []
    for sid, score in ((13002, 0.9), (0, 0.8), (13001, 0.7), (2000, 0.6)):
        segs.append(
            Segment(id=sid, category=sid // 1000, instance=sid % 1000, is_thing=sid % 1000 > 0, score=score,
                    area=int((pan == sid).sum()))
        )  # fmt: skip
    return image, pan, depth, segs


def test_segment_index_map_rows_and_void():
    _, pan, _, segs = _scene()
    ids = np.array([s.id for s in segs])
    index = segment_index_map(pan, ids)
    for k, s in enumerate(segs, start=1):
        assert np.array_equal(index == k, pan == s.id)
    assert np.all(index[pan == 32000] == 0)
    assert segment_index_map(pan, np.zeros(0, dtype=np.int64)).max() == 0


def test_median_per_index_matches_numpy_and_skips_invalid():
    _, pan, depth, segs = _scene()
    index = segment_index_map(pan, np.array([s.id for s in segs]))
    medians = median_per_index(index, depth, len(segs) + 1)
    for k, s in enumerate(segs, start=1):
        vals = depth[(pan == s.id) & (depth > 0)]
        assert medians[k - 1] == float(np.median(vals))
    assert medians[-1] is None  # an index with no pixel


def test_build_views_full_size_layouts():
    image, pan, depth, segs = _scene()
    intr = (50.0, 52.0, 29.5, 14.5)
    v = build_views(image, pan, depth, segs, intr, max_display_side=1024)
    h, w = pan.shape
    assert v.size == v.display_size == (h, w)
    # Table: the predictor's order, names from the Cityscapes train ids, medians in metres.
    assert [r["id"] for r in v.segments] == [s.id for s in segs]
    assert [r["name"] for r in v.segments] == ["car", "road", "car", "building"]
    assert v.segments[0]["median_depth"] == float(np.median(depth[pan == 13002]))
    assert [e["name"] for e in v.legend] == ["road", "building", "car"]
    assert v.legend[2]["segments"] == 2 and v.legend[2]["area"] == segs[0].area + segs[2].area
    # pixels.bin: segment indices then depth * 256 as uint16.
    pix = np.frombuffer(v.pixels_bin, dtype="<u2")
    assert pix.size == 2 * h * w
    seg_map, depth_u16 = pix[: h * w].reshape(h, w), pix[h * w :].reshape(h, w)
    assert np.array_equal(seg_map, segment_index_map(pan, np.array([s.id for s in segs])))
    assert np.array_equal(depth_u16, np.round(depth * 256).astype(np.uint16))
    # points.bin: xyz float32, segment uint16, rgb uint8; the corner without depth is left out.
    n = v.num_points
    assert n == int((depth > 0).sum()) and len(v.points_bin) == n * 17
    xyz = np.frombuffer(v.points_bin, dtype="<f4", count=3 * n).reshape(n, 3)
    seg = np.frombuffer(v.points_bin, dtype="<u2", count=n, offset=12 * n)
    rgb = np.frombuffer(v.points_bin, dtype=np.uint8, offset=14 * n).reshape(n, 3)
    ref, valid = backproject(depth, intr)
    np.testing.assert_array_equal(xyz, ref)
    np.testing.assert_array_equal(seg, seg_map[valid])
    np.testing.assert_array_equal(rgb, image[valid])
    # PNGs at the display size; the input is sent unchanged.
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(v.input_png))), image)
    assert Image.open(io.BytesIO(v.overlay_png)).size == (w, h)
    assert Image.open(io.BytesIO(v.depth_png)).size == (w, h)
    # Colour bar: a round top (multiple of 10 m) above the 99th percentile of the depths.
    assert v.depth_range == 40.0 and np.percentile(depth[depth > 0], 99) <= 40.0
    assert len(v.colorbar) == 11


def test_display_subsampling_keeps_exact_values_and_geometry():
    image, pan, depth, segs = _scene(90, 180)
    intr = (150.0, 151.0, 90.0, 45.0)
    assert display_step(90, 180, 60) == 3
    v = build_views(image, pan, depth, segs, intr, max_display_side=60)
    assert v.size == (90, 180) and v.display_size == (30, 60)
    pix = np.frombuffer(v.pixels_bin, dtype="<u2")
    depth_u16 = pix[30 * 60 :].reshape(30, 60)
    assert np.array_equal(depth_u16, np.round(depth[::3, ::3] * 256).astype(np.uint16))
    # The points are the full-resolution pixels (3i, 3j) back-projected with the full intrinsics.
    full, valid_full = backproject(depth, intr)
    keep = np.zeros_like(valid_full)
    keep[::3, ::3] = True
    expected = full[keep[valid_full]]
    xyz = np.frombuffer(v.points_bin, dtype="<f4", count=3 * v.num_points).reshape(-1, 3)
    np.testing.assert_allclose(xyz, expected, rtol=1e-5, atol=1e-5)
    # Area, scores and medians stay those of the full-resolution prediction.
    assert v.segments[1]["area"] == segs[1].area


def test_no_depth_model_sends_no_points():
    image, pan, _, segs = _scene()
    v = build_views(image, pan, None, segs, (50.0, 50.0, 30.0, 15.0))
    assert v.depth_png is None and v.num_points == 0 and v.points_bin == b""
    assert all(r["median_depth"] is None for r in v.segments)
