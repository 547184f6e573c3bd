"""Stereo-like ground-truth depth noise (`data/synthetic/depth_noise.py`, `synth --depth-noise`)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy import ndimage

from panopticdepth.cli.main import main
from panopticdepth.data.synthetic import generate, write_dataset
from panopticdepth.data.synthetic.depth_noise import StereoNoise, edge_mask, stereo_noise

H, W = 128, 256


@pytest.fixture(scope="module")
def pairs() -> list[tuple]:
    """(clean, noisy) frames of the same scenes."""
    return [(generate(3, i, H, W), generate(3, i, H, W, depth_noise="stereo")) for i in range(6)]


def _pooled(pairs: list[tuple]):
    """Per valid clean pixel: clean depth, error, near an edge (2 px), hole or outlier."""
    zs, errs, nears, bads = [], [], [], []
    for clean, noisy in pairs:
        valid = clean.depth > 0
        near = ndimage.binary_dilation(edge_mask(clean.depth, clean.panoptic, 0.05), iterations=1)
        err = noisy.depth.astype(np.float64) - clean.depth
        bad = (noisy.depth == 0) | (np.abs(err) > 0.2 * clean.depth)
        zs.append(clean.depth[valid])
        errs.append(err[valid])
        nears.append(near[valid])
        bads.append(bad[valid])
    return tuple(np.concatenate(x) for x in (zs, errs, nears, bads))


def test_error_spread_grows_with_the_square_of_the_distance(pairs):
    z, err, near, bad = _pooled(pairs)
    ok = ~near & ~bad
    xs, ys = [], []
    edges = np.geomspace(4.0, 45.0, 8)
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = ok & (z >= lo) & (z < hi)
        if m.sum() < 300:
            continue
        r = err[m]
        xs.append(np.log(np.sqrt(lo * hi)))
        ys.append(np.log(1.4826 * np.median(np.abs(r - np.median(r)))))  # robust sigma
    assert len(xs) >= 5
    slope = np.polyfit(xs, ys, 1)[0]
    assert 1.7 < slope < 2.3, slope


def test_spread_matches_the_stereo_formula():
    """sigma_Z = Z^2 sigma_d / (f B) on a flat wall at 20 m (no edges there)."""
    z = np.full((64, 64), 20.0, np.float32)
    pan = np.zeros((64, 64), np.int32)
    fx, p = 300.0, StereoNoise(holes_per_frame=0.0, outlier_prob=0.0)
    noisy = stereo_noise(z, pan, fx, np.random.default_rng(0), p)
    expect = 20.0**2 * p.disparity_sigma * fx / 2262.0 / (fx * p.baseline)
    inner = noisy[2:-2, 2:-2]  # the image border is no edge, but keep clear of it anyway
    assert np.all(inner > 0)
    assert np.std(inner) == pytest.approx(expect, rel=0.1)


def test_holes_and_outliers_gather_at_edges(pairs):
    z, _, near, bad = _pooled(pairs)
    # Within 40 m the Gaussian part stays under 5 % (a 20 % error is no tail of it there).
    close = z < 40.0
    near_rate, far_rate = bad[near & close].mean(), bad[~near & close].mean()
    assert near_rate > 0.2
    assert far_rate < 0.02
    assert near_rate > 10 * far_rate


def test_some_random_holes_away_from_edges(pairs):
    holes = 0
    for clean, noisy in pairs:
        near = ndimage.binary_dilation(edge_mask(clean.depth, clean.panoptic, 0.05), iterations=1)
        holes += int(np.count_nonzero((noisy.depth == 0) & (clean.depth > 0) & ~near))
    assert holes > 0


def test_deterministic_per_seed_and_labels_untouched(pairs):
    clean, noisy = pairs[0]
    again = generate(3, 0, H, W, depth_noise="stereo")
    np.testing.assert_array_equal(again.depth, noisy.depth)
    np.testing.assert_array_equal(noisy.image, clean.image)
    np.testing.assert_array_equal(noisy.panoptic, clean.panoptic)
    other = generate(4, 0, H, W, depth_noise="stereo")
    assert not np.array_equal(other.depth, noisy.depth)
    # Invalid stays invalid, values stay on the PNG's 1/256 m grid and within the range.
    assert np.all(noisy.depth[clean.depth == 0] == 0)
    assert np.array_equal(noisy.depth * 256, np.round(noisy.depth * 256))
    assert noisy.depth.max() <= 80.0 and noisy.depth.dtype == np.float32


def test_default_is_the_exact_depth_unchanged():
    """Off by default: the same bits as before the option existed (hash taken before the change)."""
    frame = generate(7, 2, 32, 64)
    digest = hashlib.sha256(frame.depth.tobytes()).hexdigest()
    assert digest == "56f25470a6e470d92665958b1347302899815390b94e3557251b94b9028d2d6c"
    for off in (None, "none"):
        np.testing.assert_array_equal(generate(7, 2, 32, 64, depth_noise=off).depth, frame.depth)
    with pytest.raises(ValueError, match="unknown depth noise"):
        generate(7, 2, 32, 64, depth_noise="lidar")


def test_synth_option_writes_noisy_depth_and_default_files_are_unchanged(tmp_path):
    assert main(["synth", "--out", str(tmp_path / "plain"), "--num", "2", "--size", "32x64"]) == 0
    write_dataset(tmp_path / "api", "train", 2, 32, 64)
    assert main(["synth", "--out", str(tmp_path / "noisy"), "--num", "2", "--size", "32x64",
                 "--depth-noise", "stereo"]) == 0  # fmt: skip
    plain = sorted((tmp_path / "plain" / "video_sequence" / "train").iterdir())
    for f in plain:
        api = tmp_path / "api" / "video_sequence" / "train" / f.name
        noisy = tmp_path / "noisy" / "video_sequence" / "train" / f.name
        assert f.read_bytes() == api.read_bytes()
        same = f.read_bytes() == noisy.read_bytes()
        assert same == (not f.name.endswith("_depth.png")), f.name


def test_synth_rejects_noise_for_moving_sequences(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path), "--num", "6", "--moving", "--depth-noise", "stereo"])
    assert "--depth-noise applies to independent scenes" in capsys.readouterr().err
