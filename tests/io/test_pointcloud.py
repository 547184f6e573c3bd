"""Point clouds: analytic back-projection, intrinsics parsing, the PLY file's fields."""

from __future__ import annotations

import json

import numpy as np
import pytest
from plyfile import PlyData

from panopticdepth.errors import DataError, PanopticDepthError
from panopticdepth.io.pointcloud import (
    backproject,
    default_intrinsics,
    parse_intrinsics,
    write_pointcloud_ply,
)


def test_pixel_with_known_depth_lands_at_analytic_point() -> None:
    fx, fy, cx, cy = 100.0, 120.0, 15.5, 9.0
    depth = np.zeros((20, 30), dtype=np.float32)
    depth[4, 25] = 10.0  # row v=4, column u=25
    depth[9, 15] = 2.0
    points, valid = backproject(depth, (fx, fy, cx, cy))
    assert valid.sum() == 2 and points.shape == (2, 3) and points.dtype == np.float32
    # Row-major order: (4, 25) first. x = (25 - 15.5) * 10 / 100, y = (4 - 9) * 10 / 120.
    np.testing.assert_allclose(points[0], [0.95, -5.0 / 12.0, 10.0], rtol=1e-6)
    np.testing.assert_allclose(points[1], [-0.5 * 2.0 / 100.0, 0.0, 2.0], rtol=1e-6, atol=1e-7)


def test_backprojection_inverts_projection() -> None:
    rng = np.random.default_rng(1)
    h, w = 24, 40
    intr = default_intrinsics(h, w)
    depth = rng.uniform(1.0, 50.0, (h, w)).astype(np.float32)
    depth[0, :5] = 0.0
    depth[3, 3] = np.nan
    points, valid = backproject(depth, intr)
    assert valid.sum() == h * w - 6
    fx, fy, cx, cy = intr
    u = fx * points[:, 0] / points[:, 2] + cx
    v = fy * points[:, 1] / points[:, 2] + cy
    vv, uu = np.nonzero(valid)
    np.testing.assert_allclose(u, uu, atol=1e-3)
    np.testing.assert_allclose(v, vv, atol=1e-3)


def test_default_and_parsed_intrinsics(tmp_path) -> None:
    fx, fy, cx, cy = default_intrinsics(1024, 2048)
    assert fx == pytest.approx(2262.52) and cy == pytest.approx(513.137)
    half = default_intrinsics(512, 1024)
    assert half == pytest.approx((fx / 2, fy / 2, cx / 2, cy / 2))
    assert parse_intrinsics(None, 512, 1024) == pytest.approx(half)
    assert parse_intrinsics("1,2,3,4", 10, 10) == (1.0, 2.0, 3.0, 4.0)
    cam = tmp_path / "cam.json"
    cam.write_text(json.dumps({"intrinsic": {"fx": 2000.0, "fy": 2100.0, "u0": 1000.0, "v0": 500.0}}))
    assert parse_intrinsics(str(cam), 256, 512) == pytest.approx((500.0, 525.0, 250.0, 125.0))
    with pytest.raises(PanopticDepthError):
        parse_intrinsics("1,2,3", 10, 10)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(DataError, match="bad.json"):
        parse_intrinsics(str(bad), 10, 10)


def test_ply_opens_with_expected_fields(tmp_path) -> None:
    h, w = 8, 12
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    depth = rng.uniform(1.0, 30.0, (h, w)).astype(np.float32)
    depth[0, 0] = 0.0
    pan = np.full((h, w), 0, dtype=np.int64)  # road
    pan[2:5, 3:7] = 13 * 1000 + 2  # car instance 2
    pan[7, :] = 32000  # void
    intr = (50.0, 50.0, 6.0, 4.0)
    path = write_pointcloud_ply(tmp_path / "cloud.ply", image, depth, pan, intr)
    raw = path.read_bytes()
    assert b"format binary_little_endian 1.0" in raw[:200]
    ply = PlyData.read(str(path))
    vertex = ply["vertex"].data
    assert len(vertex) == h * w - 1
    dtypes = {name: vertex.dtype[name] for name in vertex.dtype.names}
    assert set(dtypes) == {"x", "y", "z", "red", "green", "blue", "class", "instance"}
    assert all(dtypes[k] == np.float32 for k in "xyz")
    assert all(dtypes[k] == np.uint8 for k in ("red", "green", "blue", "class"))
    assert dtypes["instance"] == np.uint16
    # Per-point values follow the pixels in row-major order (pixel (0, 0) was dropped).
    valid = depth > 0
    np.testing.assert_array_equal(vertex["red"], image[..., 0][valid])
    np.testing.assert_allclose(vertex["z"], depth[valid])
    expected_cls = np.where(pan == 32000, 255, pan // 1000)[valid]
    expected_inst = np.where(pan == 32000, 0, pan % 1000)[valid]
    np.testing.assert_array_equal(vertex["class"], expected_cls)
    np.testing.assert_array_equal(vertex["instance"], expected_inst)
    assert (vertex["instance"] == 2).sum() == 12
