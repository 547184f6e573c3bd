"""Visualisation: Cityscapes colours, instance shading, outlines, depth colours, panel file."""

from __future__ import annotations

import types

import numpy as np
import pytest
from cityscapesscripts.helpers.labels import labels as cs_labels
from PIL import Image

from panopticdepth.visualization import colorize_depth, colorize_panoptic, save_panel

COLOR_BY_TRAIN_ID = {lab.trainId: lab.color for lab in cs_labels if 0 <= lab.trainId < 19}


def _scene(h: int = 48, w: int = 96) -> np.ndarray:
    pan = np.full((h, w), 10 * 1000, dtype=np.int64)  # sky
    pan[h // 2 :, :] = 0  # road
    pan[10:30, 10:30] = 13 * 1000 + 1  # car 1
    pan[10:30, 30:50] = 13 * 1000 + 2  # car 2, touching car 1
    pan[5:8, 60:70] = 32000  # void
    return pan


@pytest.mark.parametrize("train_id", [0, 2, 5, 10, 11, 13, 18])
def test_stuff_and_class_colours_match_cityscapesscripts(train_id: int) -> None:
    pan = np.full((6, 8), train_id * 1000, dtype=np.int64)
    rgb = colorize_panoptic(pan, shade_instances=False, outline=False)
    assert rgb.dtype == np.uint8 and rgb.shape == (6, 8, 3)
    assert (rgb == np.array(COLOR_BY_TRAIN_ID[train_id], dtype=np.uint8)).all()


def test_instances_are_shaded_apart_and_outlined() -> None:
    pan = _scene()
    rgb = colorize_panoptic(pan)
    car1, car2 = rgb[15, 15], rgb[15, 40]
    assert not np.array_equal(car1, car2), "touching instances of one class must differ in colour"
    # Stuff keeps the exact class colour away from boundaries.
    assert tuple(rgb[40, 80]) == COLOR_BY_TRAIN_ID[0]
    assert tuple(rgb[2, 80]) == COLOR_BY_TRAIN_ID[10]
    # Void is black.
    assert tuple(rgb[6, 65]) == (0, 0, 0)
    # Outline pixels exist at every boundary: brute-force check of each pixel against its neighbours.
    h, w = pan.shape
    white = (rgb == 255).all(axis=2)
    for y in range(h):
        for x in range(w):
            boundary = (x + 1 < w and pan[y, x] != pan[y, x + 1]) or (
                y + 1 < h and pan[y, x] != pan[y + 1, x]
            )
            assert white[y, x] == boundary, (y, x)
    # The boundary between the two cars is outlined.
    assert white[10:30, 29].all()


def test_colorize_depth_invalid_black_and_monotone() -> None:
    depth = np.tile(np.linspace(0.0, 80.0, 9, dtype=np.float32), (2, 1))
    rgb = colorize_depth(depth, max_depth=80.0)
    assert rgb.shape == (2, 9, 3) and rgb.dtype == np.uint8
    assert (rgb[:, 0] == 0).all()  # depth 0 = invalid
    assert len({tuple(c) for c in rgb[0, 1:]}) == 8  # distinct colours along the range
    # Near is brighter than far.
    assert rgb[0, 1].astype(int).sum() > rgb[0, -1].astype(int).sum()


def test_save_panel_writes_png(tmp_path) -> None:
    pan = _scene()
    depth = np.linspace(1.0, 50.0, pan.size, dtype=np.float32).reshape(pan.shape)
    image = np.random.default_rng(0).integers(0, 256, (*pan.shape, 3), dtype=np.uint8)
    result = types.SimpleNamespace(panoptic=pan, depth=depth)
    out = save_panel(tmp_path / "a" / "panel.png", image, result, gt={"panoptic": pan, "depth": depth})
    out_nogt = save_panel(tmp_path / "panel_nogt.png", image, types.SimpleNamespace(panoptic=pan, depth=None))
    for path in (out, out_nogt):
        assert path.is_file()
        with Image.open(path) as img:
            assert img.format == "PNG" and img.width > 300
    with Image.open(out) as a, Image.open(out_nogt) as b:
        assert a.height > b.height  # the ground-truth row is there
    assert not list(tmp_path.glob("**/.*tmp*"))  # no temporary files left behind


def test_pointcloud_render_near_points_hide_far_ones(tmp_path) -> None:
    from panopticdepth.io.pointcloud import backproject
    from panopticdepth.visualization import render_pointcloud, save_pointcloud_view

    h, w = 40, 60
    intr = (50.0, 50.0, 29.5, 19.5)
    depth = np.full((h, w), 20.0, dtype=np.float32)  # a far wall ...
    depth[15:25, 25:35] = 5.0  # ... with a near square in front of its centre
    colors_hw = np.zeros((h, w, 3), dtype=np.uint8)
    colors_hw[..., 2] = 255  # wall blue
    colors_hw[15:25, 25:35] = (255, 0, 0)  # square red
    points, valid = backproject(depth, intr)
    view = render_pointcloud(points, colors_hw[valid], intr, (h, w), elevation_deg=0.0, yaw_deg=0.0)
    assert view.shape == (h, w, 3) and view.dtype == np.uint8
    assert tuple(view[h // 2, w // 2]) == (255, 0, 0)  # the near square wins the painter's z-test
    assert (view == (0, 0, 255)).all(axis=2).sum() > 0.3 * h * w  # the wall fills the rest
    out = save_pointcloud_view(tmp_path / "cloud.png", points, colors_hw[valid], intr, (h, w), title="t")
    with Image.open(out) as img:
        assert img.format == "PNG"
