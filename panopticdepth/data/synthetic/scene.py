"""Random street scenes: road + sidewalks, facade rows, poles, trees and thing instances as boxes.

Sizes are realistic (metres) and things are placed densely at 5-40 m so that a 256x512 render
holds several large, mutually occluding instances (cars queue in lanes at different depths).
Everything is drawn from one numpy Generator, so a scene is a pure function of its seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...data.classes import TRAIN_ID
from ...io.formats import LABEL_DIVISOR
from .camera import Camera

LANE_WIDTH = 3.2
CAR_COLORS = np.array(
    [[200, 200, 205], [30, 30, 35], [150, 20, 25], [20, 50, 130], [110, 110, 115], [230, 230, 230],
     [60, 90, 60], [180, 150, 40], [90, 60, 40], [40, 110, 160]], dtype=np.float32,
)  # fmt: skip
WALL_COLOR = np.array([170, 162, 150], np.float32)
FENCE_COLOR = np.array([95, 80, 62], np.float32)
CLOTH_COLORS = np.array(
    [[40, 40, 60], [120, 30, 30], [30, 70, 120], [200, 190, 170], [60, 60, 60], [150, 110, 60],
     [20, 20, 20], [90, 120, 80]], dtype=np.float32,
)  # fmt: skip


@dataclass
class Facades:
    """One row of facades along the street at X = x (left side: x < 0), piecewise in Z."""

    x: float
    z_edges: np.ndarray  # (S+1,) segment boundaries along Z
    heights: np.ndarray  # (S,) metres; 0 = gap (terrain / open space behind)
    train_ids: np.ndarray  # (S,) building, wall, fence or vegetation
    colors: np.ndarray  # (S, 3)


@dataclass
class Scene:
    camera: Camera
    road_left: float  # road spans X in [road_left, road_right]
    road_right: float
    lane_lines: np.ndarray  # X of dashed lane markings
    facades: list[Facades]
    end_z: float  # cross facade closing the street (usually beyond the 80 m depth limit)
    end_height: float
    end_color: np.ndarray
    # Box primitives (P = number of boxes), several boxes may share one panoptic id (car body + cabin).
    lo: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    hi: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))
    colors: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    hood_rows: float = 0.06  # fraction of the image height covered by the ego-vehicle hood (VOID)
    # How each thing instance may move in a sequence (`motion.py`): panoptic id -> (kind, lane index);
    # kind is "lane" (drives with its lane's traffic), "parked", "walk" (along the sidewalk) or
    # "cross" (across the road). Recording it draws nothing from the generator.
    roles: dict[int, tuple[str, int]] = field(default_factory=dict)
    # Distance the camera has driven along Z; shifts the road texture with the world (`motion.py`).
    z_offset: float = 0.0
    # Rider panoptic id -> train id of the two-wheeler it sits on (SemKITTI tells bicyclists from
    # motorcyclists). Recording it draws nothing from the generator.
    rides: dict[int, int] = field(default_factory=dict)


class _Boxes:
    """Accumulates box primitives and hands out instance ids per class."""

    def __init__(self) -> None:
        self.lo: list[list[float]] = []
        self.hi: list[list[float]] = []
        self.ids: list[int] = []
        self.colors: list[np.ndarray] = []
        self.next_instance: dict[int, int] = {}
        self.roles: dict[int, tuple[str, int]] = {}
        self.rides: dict[int, int] = {}
        self._untagged: list[int] = []

    def new_id(self, train_id: int) -> int:
        n = self.next_instance.get(train_id, 1)
        self.next_instance[train_id] = n + 1
        self._untagged.append(train_id * LABEL_DIVISOR + n)
        return train_id * LABEL_DIVISOR + n

    def tag(self, kind: str, lane: int = -1) -> None:
        """Give every instance created since the last tag the motion role (kind, lane)."""
        for pid in self._untagged:
            self.roles[pid] = (kind, lane)
        self._untagged.clear()

    def add(self, x0: float, x1: float, y0: float, y1: float, z0: float, z1: float, pid: int, color) -> None:
        self.lo.append([x0, y0, z0])
        self.hi.append([x1, y1, z1])
        self.ids.append(pid)
        self.colors.append(np.asarray(color, np.float32))


def _jitter(rng: np.random.Generator, color: np.ndarray, amount: float = 18.0) -> np.ndarray:
    return np.clip(color + rng.uniform(-amount, amount, 3), 0, 255)


def _car(b: _Boxes, rng: np.random.Generator, x: float, z: float) -> None:
    """Body + cabin + two axles; (x, z) = centre of the rear bumper on the ground."""
    w, ln, h = rng.uniform(1.7, 1.95), rng.uniform(3.8, 4.8), rng.uniform(1.4, 1.6)
    pid = b.new_id(TRAIN_ID["car"])
    col = _jitter(rng, CAR_COLORS[rng.integers(len(CAR_COLORS))])
    b.add(x - w / 2, x + w / 2, 0.3, 0.95, z, z + ln, pid, col)
    b.add(x - 0.45 * w, x + 0.45 * w, 0.95, h, z + 0.25 * ln, z + 0.8 * ln, pid, col * 0.6 + 30)
    for az in (0.15, 0.8):
        b.add(x - 0.48 * w, x + 0.48 * w, 0.0, 0.32, z + az * ln - 0.3, z + az * ln + 0.3, pid, [25, 25, 25])


def _big_vehicle(b: _Boxes, rng: np.random.Generator, x: float, z: float, kind: str) -> float:
    """Truck (cab + cargo) or bus; returns its length."""
    w = rng.uniform(2.3, 2.55)
    pid = b.new_id(TRAIN_ID[kind])
    col = _jitter(rng, CAR_COLORS[rng.integers(len(CAR_COLORS))], 30)
    if kind == "bus":
        ln, h = rng.uniform(10.0, 12.0), rng.uniform(3.0, 3.3)
        b.add(x - w / 2, x + w / 2, 0.35, h, z, z + ln, pid, col)
        b.add(x - w / 2 + 0.05, x + w / 2 - 0.05, 1.2, 2.3, z - 0.02, z + ln, pid, [40, 55, 70])  # windows
    else:
        ln, h = rng.uniform(6.0, 9.0), rng.uniform(3.0, 3.8)
        b.add(x - w / 2, x + w / 2, 0.5, h, z, z + ln - 2.0, pid, _jitter(rng, np.array([190, 190, 180]), 40))
        b.add(x - w / 2, x + w / 2, 0.5, 2.7, z + ln - 2.0, z + ln, pid, col)
    for az in (0.12, 0.85):
        b.add(x - 0.45 * w, x + 0.45 * w, 0.0, 0.5, z + az * ln - 0.5, z + az * ln + 0.5, pid, [25, 25, 25])
    return ln


def _person(
    b: _Boxes, rng: np.random.Generator, x: float, z: float, kind: str = "person", y0: float = 0.0
) -> int:
    """Legs + torso + head; a rider (kind='rider') starts at y0 (sitting on its vehicle). Returns its id."""
    s = rng.uniform(1.6, 1.9) / 1.75
    pid = b.new_id(TRAIN_ID[kind])
    cloth = _jitter(rng, CLOTH_COLORS[rng.integers(len(CLOTH_COLORS))], 20)
    pants = _jitter(rng, CLOTH_COLORS[rng.integers(len(CLOTH_COLORS))], 20)
    skin = _jitter(rng, np.array([200, 160, 130]), 40)
    if kind == "person":
        b.add(x - 0.2 * s, x + 0.2 * s, 0.0, 0.85 * s, z, z + 0.28, pid, pants)
        y0 = 0.85 * s
    b.add(x - 0.25 * s, x + 0.25 * s, y0, y0 + 0.62 * s, z - 0.02, z + 0.3, pid, cloth)
    b.add(x - 0.11 * s, x + 0.11 * s, y0 + 0.62 * s, y0 + 0.88 * s, z + 0.02, z + 0.26, pid, skin)
    return pid


def _two_wheeler(b: _Boxes, rng: np.random.Generator, x: float, z: float, kind: str) -> None:
    """Bicycle or motorcycle with its rider."""
    pid = b.new_id(TRAIN_ID[kind])
    if kind == "bicycle":
        w, ln, h, seat = 0.5, 1.75, 1.05, 0.85
        col = _jitter(rng, np.array([60, 60, 60]), 50)
    else:
        w, ln, h, seat = 0.8, 2.1, 1.2, 0.9
        col = _jitter(rng, CAR_COLORS[rng.integers(len(CAR_COLORS))], 20)
    b.add(x - 0.1, x + 0.1, 0.0, h, z, z + ln, pid, [20, 20, 20])  # wheels seen from behind
    b.add(x - w / 2, x + w / 2, 0.4, h, z + 0.3 * ln, z + 0.7 * ln, pid, col)
    b.rides[_person(b, rng, x, z + 0.4 * ln, "rider", y0=seat)] = TRAIN_ID[kind]


def _facade_row(rng: np.random.Generator, x: float, z_max: float) -> Facades:
    edges = [rng.uniform(-5.0, 2.0)]
    heights, tids, cols = [], [], []
    while edges[-1] < z_max:
        edges.append(edges[-1] + rng.uniform(7.0, 22.0))
        r = rng.random()
        if r < 0.72:
            heights.append(rng.uniform(7.0, 24.0))
            tids.append(TRAIN_ID["building"])
            cols.append(_jitter(rng, np.array([150, 135, 120]), 60))
        elif r < 0.84:
            heights.append(rng.uniform(2.5, 6.0))
            tids.append(TRAIN_ID["vegetation"])
            cols.append(_jitter(rng, np.array([60, 100, 40]), 20))
        elif r < 0.92:
            heights.append(rng.uniform(1.0, 2.2))
            kind = str(rng.choice(["wall", "fence"]))
            tids.append(TRAIN_ID[kind])
            # Light masonry against dark wood or painted metal (the renderer adds a wall's coping
            # and a fence's slats): the two classes must not look alike.
            cols.append(_jitter(rng, WALL_COLOR if kind == "wall" else FENCE_COLOR, 30))
        else:
            heights.append(0.0)
            tids.append(TRAIN_ID["terrain"])
            cols.append(np.array([120, 140, 70], np.float32))
    return Facades(x, np.array(edges, np.float32), np.array(heights, np.float32), np.array(tids, np.int32),
                   np.array(cols, np.float32))  # fmt: skip


CAMERAS = ("cityscapes", "kitti")


def sample_scene(rng: np.random.Generator, height: int, width: int, camera: str = "cityscapes") -> Scene:
    """One random street scene seen by a Cityscapes-like camera 1.2-1.5 m above the road, or by a
    level KITTI-like one 1.65 m above it (`camera="kitti"`, no ego hood in view).

    Both cameras draw the same numbers, so (seed, index) gives the same street for either camera.
    """
    if camera not in CAMERAS:
        raise ValueError(f"camera must be one of {CAMERAS} (got {camera!r})")
    cam_height, pitch = rng.uniform(1.2, 1.5), np.deg2rad(rng.uniform(-1.0, 3.0))
    if camera == "kitti":
        cam = Camera.kitti_like(height, width)
    else:
        cam = Camera.cityscapes_like(height, width, cam_height, pitch)
    n_left, n_right = int(rng.integers(1, 3)), int(rng.integers(0, 2))
    road_left = -LANE_WIDTH / 2 - n_left * LANE_WIDTH - rng.uniform(0.0, 2.0)  # incl. a parking strip
    road_right = LANE_WIDTH / 2 + n_right * LANE_WIDTH + rng.uniform(0.0, 2.0)
    walk_l, walk_r = rng.uniform(2.5, 5.0), rng.uniform(2.5, 5.0)
    end_z = rng.uniform(60.0, 160.0)
    scene = Scene(
        camera=cam, road_left=road_left, road_right=road_right,
        lane_lines=np.array([-LANE_WIDTH / 2 - LANE_WIDTH * i for i in range(n_left)]
                            + [LANE_WIDTH / 2 + LANE_WIDTH * i for i in range(n_right)], np.float32),
        facades=[_facade_row(rng, road_left - walk_l, end_z), _facade_row(rng, road_right + walk_r, end_z)],
        end_z=end_z, end_height=rng.uniform(8.0, 30.0), end_color=_jitter(rng, np.array([140, 130, 125]), 40),
        hood_rows=rng.uniform(0.04, 0.08),
    )  # fmt: skip
    if camera == "kitti":
        scene.hood_rows = 0.0  # roof-mounted camera: the ego vehicle is out of view
    b = _Boxes()
    # Traffic: queues of vehicles per lane (own lane starts farther ahead), 5-45 m.
    lane_centres = [-LANE_WIDTH * i for i in range(n_left + 1)] + [
        LANE_WIDTH * (i + 1) for i in range(n_right)
    ]
    for lane, xc in enumerate(lane_centres):
        z = rng.uniform(7.0, 14.0) if xc == 0 else rng.uniform(3.5, 12.0)
        while z < 45.0:
            x = xc + rng.uniform(-0.4, 0.4)
            r = rng.random()
            if r < 0.78:
                _car(b, rng, x, z)
                z += 4.8
            elif r < 0.88:
                z += _big_vehicle(b, rng, x, z, rng.choice(["truck", "bus"]))
            else:
                _two_wheeler(b, rng, x, z, rng.choice(["bicycle", "motorcycle"]))
                z += 2.2
            b.tag("lane", lane)
            z += rng.uniform(1.2, 9.0)
    # Parked cars along the kerbs.
    for kerb, side in ((road_left, 1.0), (road_right, -1.0)):
        z = rng.uniform(3.0, 10.0)
        while z < 40.0 and rng.random() < 0.6:
            _car(b, rng, kerb + side * 1.05, z)
            b.tag("parked")
            z += 4.8 + rng.uniform(0.5, 6.0)
    # Pedestrians on the sidewalks (a few crossing the road).
    for _ in range(int(rng.integers(4, 11))):
        left = rng.random() < 0.5
        if left:
            x = rng.uniform(road_left - walk_l + 0.4, road_left - 0.3)
        else:
            x = rng.uniform(road_right + 0.3, road_right + walk_r - 0.4)
        crossing = rng.random() < 0.25
        if crossing:
            x = rng.uniform(road_left, road_right)
        _person(b, rng, x, rng.uniform(4.0, 25.0))
        b.tag("cross" if crossing else "walk")
    # Pedestrians crossing in front of the first cars (persons must be learnable, not only hidden).
    for _ in range(int(rng.integers(0, 3))):
        _person(b, rng, rng.uniform(-3.5, 3.0), rng.uniform(4.5, 6.5))
        b.tag("cross")
    # Poles with signs / lights, and trees, on the sidewalks near the kerb.
    for kerb, side in ((road_left, -1.0), (road_right, 1.0)):
        z = rng.uniform(3.0, 15.0)
        while z < 70.0:
            x = kerb + side * rng.uniform(0.4, 0.9)
            if rng.random() < 0.6:
                h = rng.uniform(3.5, 7.0)
                b.add(
                    x - 0.08, x + 0.08, 0.0, h, z, z + 0.16, TRAIN_ID["pole"] * LABEL_DIVISOR, [120, 120, 125]
                )
                r = rng.random()
                if r < 0.4:
                    sign = TRAIN_ID["traffic sign"] * LABEL_DIVISOR
                    b.add(
                        x - 0.35,
                        x + 0.35,
                        h - 0.8,
                        h - 0.1,
                        z - 0.05,
                        z,
                        sign,
                        _jitter(rng, np.array([200, 200, 40]), 40),
                    )
                elif r < 0.6:
                    light = TRAIN_ID["traffic light"] * LABEL_DIVISOR
                    b.add(x - 0.17, x + 0.17, h - 1.0, h, z - 0.3, z, light, [40, 40, 35])
            else:
                th, cw = rng.uniform(2.0, 3.0), rng.uniform(2.0, 4.0)
                veg = TRAIN_ID["vegetation"] * LABEL_DIVISOR
                b.add(x - 0.15, x + 0.15, 0.0, th + 0.3, z - 0.15, z + 0.15, veg, [80, 60, 40])
                b.add(x - cw / 2, x + cw / 2, th, th + rng.uniform(2.0, 4.0), z - cw / 2, z + cw / 2, veg,
                      _jitter(rng, np.array([55, 105, 35]), 25))  # fmt: skip
            z += rng.uniform(8.0, 25.0)
    scene.lo = np.array(b.lo, np.float32).reshape(-1, 3)
    scene.hi = np.array(b.hi, np.float32).reshape(-1, 3)
    scene.ids = np.array(b.ids, np.int32)
    scene.colors = np.array(b.colors, np.float32).reshape(-1, 3)
    scene.roles = b.roles
    scene.rides = b.rides
    return scene
