"""Depth error near ground-truth thing boundaries (`depth_metrics.thing_boundary_band`,
`DPSEvaluator.track_boundary_depth`) on hand-made arrays with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from panopticdepth.evaluation import DPSEvaluator
from panopticdepth.evaluation.depth_metrics import boundary_depth_sums, depth_summary, thing_boundary_band

THINGS = range(11, 19)
CAR = 13 * 1000 + 1


def _scene() -> np.ndarray:
    """6x8: road (id 0) on top, sidewalk (1000) in the bottom row, a 2x3 car at rows 2-3, cols 2-4."""
    pan = np.zeros((6, 8), np.int32)
    pan[5] = 1000
    pan[2:4, 2:5] = CAR
    return pan


def _band1_by_hand() -> np.ndarray:
    m = np.zeros((6, 8), bool)
    m[2:4, 2:5] = True  # every car pixel touches the road
    m[1, 2:5] = m[4, 2:5] = True  # road above and below
    m[2:4, 1] = m[2:4, 5] = True  # road left and right
    return m


def test_band_of_one_is_the_pixels_touching_a_thing_edge():
    band = thing_boundary_band(_scene(), THINGS, 1000, band=1)
    np.testing.assert_array_equal(band, _band1_by_hand())
    # The road / sidewalk edge (stuff / stuff) is not a thing boundary.
    assert not band[4:6, 6:].any()


def test_wider_band_grows_by_chebyshev_distance():
    base = _band1_by_hand()
    expect = np.zeros_like(base)
    for y, x in zip(*np.nonzero(base)):
        expect[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2] = True
    np.testing.assert_array_equal(thing_boundary_band(_scene(), THINGS, 1000, band=2), expect)
    with pytest.raises(ValueError, match="at least 1 pixel"):
        thing_boundary_band(_scene(), THINGS, 1000, band=0)


def test_edge_between_two_instances_counts():
    pan = np.zeros((3, 4), np.int32)
    pan[:, :2], pan[:, 2:] = CAR, CAR + 1
    band = thing_boundary_band(pan, THINGS, 1000, band=1)
    expect = np.zeros((3, 4), bool)
    expect[:, 1:3] = True
    np.testing.assert_array_equal(band, expect)
    # Only stuff: nothing.
    assert not thing_boundary_band(np.zeros((3, 4), np.int32), THINGS, 1000, band=3).any()


def _depths() -> tuple[np.ndarray, np.ndarray]:
    """GT 10 m, invalid above the car's left column; prediction 1 m too far on the car."""
    gt = np.full((6, 8), 10.0)
    gt[1, 2] = 0.0
    pred = gt.copy()
    pred[2:4, 2:5] += 1.0
    pred[1, 2] = 50.0  # invalid GT: never counted
    pred[0, 7] = 99.0  # outside the band: not counted here
    return pred, gt


def test_boundary_sums_known_answer():
    pred, gt = _depths()
    s = depth_summary(boundary_depth_sums(pred, gt, _scene(), THINGS, 1000, band=1))
    # 16 band pixels, 1 without GT depth; the 6 car pixels are 1 m (10 %) off.
    assert s["num_pixels"] == 15
    assert s["abs_rel"] == pytest.approx(6 * 0.1 / 15)
    assert s["rmse"] == pytest.approx(math.sqrt(6 / 15))


def _evaluator(track: bool) -> DPSEvaluator:
    ev = DPSEvaluator(num_classes=19, thing_ids=THINGS, dataset="cityscapes-dps")
    return ev.track_boundary_depth(band=1) if track else ev


def test_evaluator_reports_it_only_when_asked():
    pred, gt = _depths()
    pan = _scene()
    plain, tracked = _evaluator(False), _evaluator(True)
    for ev in (plain, tracked):
        ev.update(pan, pred, pan, gt)
    a, b = plain.summary(), tracked.summary()
    assert "boundary_depth" not in a
    edge = b.pop("boundary_depth")
    assert a == b  # every other number unchanged
    assert edge["band"] == 1 and edge["num_pixels"] == 15
    assert edge["abs_rel"] == pytest.approx(0.04)
    assert edge["rmse"] == pytest.approx(math.sqrt(0.4))
    assert "near thing boundaries (band 1 px, 15 px)" in tracked.format_table()
    assert "near thing boundaries" not in plain.format_table()


def test_raw_png_integers_and_merge():
    pred, gt = _depths()
    pan = _scene()
    ev = DPSEvaluator(num_classes=19, thing_ids=THINGS, depth_scale=256.0).track_boundary_depth(band=1)
    ev.update(pan, (pred * 256).astype(np.uint16), pan, (gt * 256).astype(np.uint16))
    other = _evaluator(True)
    other.update(pan, pred, pan, gt)
    ev.merge(other)
    edge = ev.summary()["boundary_depth"]
    assert edge["num_pixels"] == 30
    assert edge["abs_rel"] == pytest.approx(0.04)
    with pytest.raises(ValueError, match="at least 1 pixel"):
        _evaluator(False).track_boundary_depth(0)
