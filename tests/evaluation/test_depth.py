"""Depth paths: integer threshold tables equal float division; depth metrics equal their formulas."""

from __future__ import annotations

import numpy as np
import pytest

from panopticdepth.evaluation import DPSEvaluator
from panopticdepth.evaluation.depth_metrics import depth_summary, depth_sums
from panopticdepth.evaluation.matching import depth_levels, fail_thresholds

from .test_dpq_reference import CITY, random_frames


@pytest.mark.parametrize("lam", [0.5, 0.25, 0.1, 0.3333, 1e-3])
def test_fail_thresholds_are_exact(lam):
    t = fail_thresholds(lam).astype(np.float64)[1:]
    g = np.arange(1, 65536, dtype=np.float64)
    assert np.all(t / g > lam)  # T[g] fails ...
    assert np.all((t - 1) / g <= lam)  # ... and T[g] - 1 is kept


@pytest.mark.parametrize("wrap", [False, True])
def test_integer_levels_equal_float_levels(wrap):
    rng = np.random.default_rng(0)
    g = rng.integers(0, 3000, 5000).astype(np.uint16) * 10
    p = np.select([rng.random(5000) < 0.3, rng.random(5000) < 0.5], [g * 11 // 10, g * 3 // 2], g // 2 + 7)
    p = p.astype(np.uint16)
    lams = (0.5, 0.25, 0.1)
    lev_i, sum_i, n_i = depth_levels(p, g, lams, wrap)
    lev_f, sum_f, n_f = depth_levels(p.astype(np.int64), g.astype(np.int64), lams, wrap)
    np.testing.assert_array_equal(lev_i, lev_f)
    assert n_i == n_f and sum_i == pytest.approx(sum_f, rel=1e-13)


def test_vectorised_equals_bruteforce_on_uint16_depth():
    """The random protocol cases, with depth as raw uint16 maps (the integer path)."""
    from .test_dpq_reference import ref_evaluate

    frames = random_frames(np.random.default_rng(7), CITY, n_frames=3, n_seq=2)
    ev = DPSEvaluator(frames=(1, 2))
    for seq, gt, pred, gd, pdp in frames:
        s = (10, 14)
        ev.update(
            pred.reshape(s),
            pdp.reshape(s).astype(np.uint16),
            gt.reshape(s),
            gd.reshape(s).astype(np.uint16),
            seq,
        )
    out = ev.summary()
    for k in (1, 2):
        for key, lam in (("-1", -1.0), ("0.5", 0.5), ("0.25", 0.25), ("0.1", 0.1)):
            pq, th, st, _ = ref_evaluate(frames, k, lam, CITY)
            got = out["runs"][f"k={k},lambda={key}"]["averages"]
            assert (got["pq"], got["pq_th"], got["pq_st"]) == pytest.approx((pq, th, st), abs=1e-12)


def _reference_metrics(d, g):
    m = g > 0
    d, g = d[m], g[m]
    dl = np.maximum(d, 1e-3)
    e = np.log(dl) - np.log(g)
    ratio = np.maximum(dl / g, g / dl)
    return {
        "abs_rel": np.mean(np.abs(d - g) / g),
        "sq_rel": np.mean((d - g) ** 2 / g),
        "rmse": np.sqrt(np.mean((d - g) ** 2)),
        "rmse_log": np.sqrt(np.mean(e**2)),
        "silog": 100 * np.sqrt(np.mean(e**2) - np.mean(e) ** 2),
        "delta1": 100 * np.mean(ratio < 1.25),
        "delta2": 100 * np.mean(ratio < 1.25**2),
        "delta3": 100 * np.mean(ratio < 1.25**3),
    }


def test_depth_metrics_match_formulas_on_both_paths():
    rng = np.random.default_rng(1)
    g = (rng.uniform(1, 80, (2, 40, 50)) * 256).astype(np.uint16)
    g[:, :5] = 0
    d = np.clip(g * rng.lognormal(0, 0.3, g.shape), 0, 65535).astype(np.uint16)
    d[0, 10, :10] = 0  # zero predictions: clamped for the log metrics only
    want = _reference_metrics(d.astype(np.float64) / 256, g.astype(np.float64) / 256)
    raw = depth_summary(depth_sums(d[0], g[0], 256.0) + depth_sums(d[1], g[1], 256.0))
    metres = depth_summary(
        depth_sums(d[0].astype(np.float32) / 256, g[0].astype(np.float32) / 256)
        + depth_sums(d[1].astype(np.float32) / 256, g[1].astype(np.float32) / 256)
    )
    for key, value in want.items():
        assert raw[key] == pytest.approx(value, rel=1e-9), key
        assert metres[key] == pytest.approx(value, rel=1e-6), key
    assert raw["num_pixels"] == int((g > 0).sum())


def test_blocked_pass_equals_plain_pass(monkeypatch):
    """Chunked 16-bit pass (tiny chunks here) == the plain whole-frame pass, incl. depth sums."""
    from panopticdepth.evaluation import pixel_pass

    frames = random_frames(np.random.default_rng(11), CITY, n_frames=2, n_seq=2)
    monkeypatch.setattr(pixel_pass, "CHUNK", 17)
    blocked = DPSEvaluator(frames=(1, 2), depth_scale=256)
    plain = DPSEvaluator(frames=(1, 2), depth_scale=256)
    for seq, gt, pred, gd, pdp in frames:
        s = (10, 14)
        gd16, pd16 = gd.reshape(s).astype(np.uint16), pdp.reshape(s).astype(np.uint16)
        blocked.update(pred.reshape(s), pd16, gt.reshape(s), gd16, seq)
        # int64 ids with a huge unused id range keep the plain path
        plain.add_frame(
            plain.compute_frame(
                pred.reshape(s) + 0, pd16.astype(np.int32), gt.reshape(s), gd16.astype(np.int32)
            ),
            seq,
        )
    a, b = blocked.summary(), plain.summary()
    for key in b["runs"]:
        assert a["runs"][key]["classes"] == b["runs"][key]["classes"]
        assert a["runs"][key]["abs_rel_internal"] == pytest.approx(
            b["runs"][key]["abs_rel_internal"], rel=1e-12
        )
    for key, value in b["depth"].items():
        assert a["depth"][key] == pytest.approx(value, rel=1e-9)
