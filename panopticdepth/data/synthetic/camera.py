"""Pinhole camera of the synthetic street scenes (Cityscapes- or KITTI-like intrinsics, pitch only).

World frame: X right, Y up, Z forward along the street, ground plane Y = 0, camera at
(0, height, 0). The camera looks along +Z tilted down by `pitch` (radians). Pixel (u, v) is the
ray through the *integer* image coordinate (u, v) (Cityscapes' cx, cy convention), and the depth
of a point is its camera-frame z, i.e. the ray parameter t when the camera-frame direction is
((u - cx)/fx, (v - cy)/fy, 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Cityscapes intrinsics at 2048x1024 (camera.json of the Cityscapes cameras, rounded).
CITYSCAPES_FX = 2262.0
CITYSCAPES_FY = 2262.0
CITYSCAPES_CX = 1096.0
CITYSCAPES_CY = 513.0
CITYSCAPES_SIZE = (1024, 2048)
# KITTI odometry left colour camera (P2) at 376x1241, the SemKITTI-DVPS image size; 1.65 m above the road.
KITTI_FOCAL = 718.856
KITTI_CX = 607.1928
KITTI_CY = 185.2157
KITTI_SIZE = (376, 1241)
KITTI_HEIGHT_M = 1.65


@dataclass
class Camera:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    height_m: float  # camera height above the road
    pitch: float  # radians, > 0 looks down

    @classmethod
    def cityscapes_like(cls, height: int, width: int, height_m: float, pitch: float) -> Camera:
        """Cityscapes intrinsics scaled to (height, width)."""
        sy, sx = height / CITYSCAPES_SIZE[0], width / CITYSCAPES_SIZE[1]
        fx, fy, cx, cy = CITYSCAPES_FX * sx, CITYSCAPES_FY * sy, CITYSCAPES_CX * sx, CITYSCAPES_CY * sy
        return cls(width, height, fx, fy, cx, cy, height_m, pitch)

    @classmethod
    def kitti_like(
        cls, height: int, width: int, height_m: float = KITTI_HEIGHT_M, pitch: float = 0.0
    ) -> Camera:
        """KITTI intrinsics scaled to (height, width), with square pixels.

        One focal length for both axes (scaled with the width and rounded to 0.001 px as the release
        writes it), so the focal in the depth file names is exactly the one the rays use.
        """
        focal = round(KITTI_FOCAL * width / KITTI_SIZE[1], 3)
        cx, cy = KITTI_CX * width / KITTI_SIZE[1], KITTI_CY * height / KITTI_SIZE[0]
        return cls(width, height, focal, focal, cx, cy, height_m, pitch)

    @property
    def origin(self) -> np.ndarray:
        return np.array([0.0, self.height_m, 0.0])

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World directions of the camera's x (right), y (down) and z (forward) axes."""
        c, s = np.cos(self.pitch), np.sin(self.pitch)
        return np.array([1.0, 0.0, 0.0]), np.array([0.0, -c, -s]), np.array([0.0, -s, c])

    def ray_directions(self) -> np.ndarray:
        """(3, H, W) float32 world-frame ray directions whose camera-frame z is 1 (t = depth)."""
        _, down, fwd = self.axes()
        xc = (np.arange(self.width, dtype=np.float64) - self.cx) / self.fx
        yc = (np.arange(self.height, dtype=np.float64) - self.cy) / self.fy
        # right = (1, 0, 0): x depends on the column only, y and z on the row only.
        d = np.empty((3, self.height, self.width), np.float32)
        d[0] = xc[None, :]
        d[1] = (down[1] * yc + fwd[1])[:, None]
        d[2] = (down[2] * yc + fwd[2])[:, None]
        return d

    def project(self, points_n3: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World points -> (u, v, z) image coordinates and camera depth."""
        right, down, fwd = self.axes()
        rel = points_n3 - self.origin
        z = rel @ fwd
        zc = np.maximum(z, 1e-3)
        return self.fx * (rel @ right) / zc + self.cx, self.fy * (rel @ down) / zc + self.cy, z
