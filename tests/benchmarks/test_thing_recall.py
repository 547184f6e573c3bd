"""benchmarks/thing_recall.py on hand-made masks: a thing is found only through a final segment of
its own class with IoU > 0.5; candidates are counted by class; the tables count what they should."""

from __future__ import annotations

import numpy as np

from . import load_benchmark

FIRST_THING = 11  # person = thing 0 = category 11, car = thing 2 = category 13


def box(y0: int, y1: int, x0: int, x1: int, shape=(16, 32)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_found_needs_the_own_class_and_iou_over_half():
    mod = load_benchmark("thing_recall")
    car, person, small = box(2, 10, 2, 12), box(4, 12, 20, 24), box(0, 2, 28, 30)
    gt = {"instance_masks": np.stack([car, person, small]), "instance_classes": np.array([2, 0, 0])}
    panoptic = np.zeros((16, 32), np.int64)  # road everywhere
    panoptic[box(2, 10, 2, 11)] = 13 * 1000 + 1  # the car, 72 of 80 px: IoU 0.9
    panoptic[box(4, 12, 20, 22)] = 12 * 1000 + 1  # the person's left half, labelled rider
    candidates = {
        "masks": np.stack([box(4, 12, 20, 24), box(4, 12, 21, 24), box(2, 10, 2, 12)]),
        "classes": np.array([0, 0, 3]),  # two person candidates, a truck on the car
        "scores": np.array([0.15, 0.3, 0.9]),
    }
    rows = mod.match_things(gt, candidates, panoptic, FIRST_THING)
    car_row, person_row, small_row = rows
    assert car_row["area"] == 80 and abs(car_row["final"] - 0.9) < 1e-9
    assert car_row["candidate"] == 0.0 and car_row["score"] == 0.0  # the truck candidate does not count
    assert person_row["final"] == 0.0  # a rider segment is not the person's
    # the candidate with the best IoU, not the one with the best score
    assert person_row["candidate"] == 1.0 and person_row["score"] == 0.15
    assert small_row["final"] == 0.0 and small_row["candidate"] == 0.0

    names = [f"c{i}" for i in range(19)]
    lines = mod.summarise(rows, names, FIRST_THING)
    person_line = next(line for line in lines if line.startswith("| c11 |"))
    car_line = next(line for line in lines if line.startswith("| c13 |"))
    assert person_line.split("|")[2:5] == [" 2 ", " 0 ", " 1 "] and person_line.endswith("| 0.15 |")
    assert car_line.split("|")[2:5] == [" 1 ", " 1 ", " 0 "] and car_line.endswith("| - |")
    # person (32 px) and the small one (4 px) under 50 px, the car (80 px) in 50-149
    assert "| 0-49 | 2 | 0 % | 50 % |" in lines and "| 50-149 | 1 | 100 % | 0 % |" in lines
    assert not any(line.startswith("| 150-399 |") for line in lines)  # empty bins are left out
