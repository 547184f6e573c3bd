"""Stereo-like noise for the synthetic ground-truth depth (`panopticdepth synth --depth-noise stereo`).

The renderer's depth is exact. Real depth ground truth such as Cityscapes' comes from stereo
disparity, and the paper explains the collapse of Table 3's variant E (instance loss on the minimum
depth) by noisy ground truth: a single bad pixel moves an instance's minimum. This module makes
the written depth look like stereo output:

* Gaussian noise on the disparity d = f * B / Z, so the depth error grows with Z^2
  (sigma_Z ~ Z^2 * sigma_d / (f * B));
* holes (0 = invalid) and outliers near depth discontinuities and object edges, where stereo
  matching fails (occlusions) and flying pixels fall between foreground and background depth;
* a few random rectangular holes (textureless patches) and rare isolated outliers elsewhere.

Labels and image are untouched; the draws come from their own random stream, so a noisy dataset
has the same images and panoptic maps as the clean one of the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...io.formats import DEPTH_SCALE
from .camera import CITYSCAPES_FX

DEPTH_NOISE_KINDS = ("none", "stereo")


@dataclass(frozen=True)
class StereoNoise:
    """Parameters of the stereo-like noise; pixel sizes are at the image's own resolution except
    `disparity_sigma`, which is given at Cityscapes' 2048 px width and scaled with the focal length."""

    baseline: float = 0.22  # metres, Cityscapes' stereo rig
    disparity_sigma: float = 0.5  # px of disparity noise at the 2048 px wide Cityscapes focal
    max_depth: float = 80.0  # deeper measurements are dropped, as in the clean ground truth
    edge_width: int = 2  # px on each side of an edge that count as "near the edge"
    discontinuity: float = 0.05  # relative jump between neighbours that is a depth discontinuity
    edge_hole_prob: float = 0.3  # per near-edge pixel
    edge_outlier_prob: float = 0.15  # per near-edge pixel: a flying pixel between the two sides
    outlier_prob: float = 0.002  # per pixel elsewhere: a gross mismatch
    holes_per_frame: float = 3.0  # mean number of random rectangular holes
    hole_size: tuple[int, int] = (2, 8)  # side range of those holes in px


def edge_mask(depth: np.ndarray, panoptic: np.ndarray, discontinuity: float) -> np.ndarray:
    """Pixels on either side of a segment edge, a depth jump or a valid / invalid depth border."""
    d = np.asarray(depth, np.float64)
    ids = np.asarray(panoptic)
    valid = d > 0
    edge = np.zeros(d.shape, bool)
    for axis in (0, 1):
        a = [slice(None), slice(None)]
        b = [slice(None), slice(None)]
        a[axis], b[axis] = slice(1, None), slice(None, -1)
        da, db = d[tuple(a)], d[tuple(b)]
        jump = np.abs(da - db) > discontinuity * np.minimum(da, db)
        hit = (ids[tuple(a)] != ids[tuple(b)]) | (valid[tuple(a)] != valid[tuple(b)])
        hit |= jump & valid[tuple(a)] & valid[tuple(b)]
        edge[tuple(a)] |= hit
        edge[tuple(b)] |= hit
    return edge


def stereo_noise(
    depth: np.ndarray,
    panoptic: np.ndarray,
    fx: float,
    rng: np.random.Generator,
    params: StereoNoise = StereoNoise(),
) -> np.ndarray:
    """Noisy copy of `depth` (float32 metres, 0 = invalid, quantised to 1/256 m like the PNG).

    `fx`: the camera's focal length in px at this image size; `panoptic`: the frame's ids (their
    edges are object edges).
    """
    from scipy import ndimage  # only here: `synth` without noise does not load scipy

    p = params
    z = np.asarray(depth, np.float64)
    h, w = z.shape
    valid = z > 0
    fb = float(fx) * p.baseline
    sigma_d = p.disparity_sigma * float(fx) / CITYSCAPES_FX
    # Every draw is made for the whole frame, so the stream does not depend on the content.
    gauss = rng.standard_normal((h, w))
    event = rng.random((h, w))
    mix = rng.random((h, w))
    far = rng.random((h, w))
    scale = np.exp(rng.normal(0.0, 0.4, (h, w)))

    disparity = np.where(valid, fb / np.where(valid, z, 1.0), 0.0) + sigma_d * gauss
    ok = valid & (disparity > 0)
    out = np.where(ok, fb / np.where(ok, disparity, 1.0), 0.0)

    near = edge_mask(z, panoptic, p.discontinuity)
    if p.edge_width > 1:
        near = ndimage.binary_dilation(near, np.ones((3, 3), bool), iterations=p.edge_width - 1)
    # Flying pixels: somewhere between the nearest and the farthest valid depth around the pixel.
    # (A valid pixel is its own neighbour, so both are finite where they are used.)
    lo = ndimage.minimum_filter(np.where(valid, z, np.inf), size=3)
    lo[~valid] = 0.0
    hi = ndimage.maximum_filter(np.where(valid, z, 0.0), size=3)
    flying = lo + mix * (hi - lo)
    edge_hole = near & (event < p.edge_hole_prob)
    edge_out = near & ~edge_hole & (event < p.edge_hole_prob + p.edge_outlier_prob)
    out = np.where(edge_out & valid, flying, out)
    # Isolated gross mismatches away from the edges.
    out = np.where(~near & valid & (far < p.outlier_prob), z * scale, out)
    out[edge_hole] = 0.0

    for _ in range(int(rng.poisson(p.holes_per_frame))):
        sy, sx = rng.integers(p.hole_size[0], p.hole_size[1] + 1, size=2)
        y0, x0 = int(rng.integers(0, max(h - sy, 0) + 1)), int(rng.integers(0, max(w - sx, 0) + 1))
        out[y0 : y0 + sy, x0 : x0 + sx] = 0.0

    out[~valid | (out > p.max_depth) | ~np.isfinite(out)] = 0.0
    return (np.round(out * DEPTH_SCALE) / DEPTH_SCALE).astype(np.float32)


def apply_depth_noise(
    depth: np.ndarray, panoptic: np.ndarray, fx: float, kind: str | None, rng_key: list[int]
) -> np.ndarray:
    """`depth` with the noise `kind` ("none"/None: unchanged) drawn from `default_rng(rng_key)`."""
    if kind is None or kind == "none":
        return depth
    if kind != "stereo":
        raise ValueError(f"unknown depth noise {kind!r}; choose one of {DEPTH_NOISE_KINDS}")
    return stereo_noise(depth, panoptic, fx, np.random.default_rng(rng_key))
