"""Class names of the two benchmark label spaces, in each dataset's own class order.

A dependency-free table shared by the dataset readers (`data/classes.py`, which checks the
Cityscapes names against cityscapesscripts' label list) and the evaluators (`evaluation/protocol.py`).
"""

from __future__ import annotations

# Cityscapes train ids 0..18 (stuff 0..10, things 11..18).
CITYSCAPES_CLASS_NAMES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip
# SemKITTI-DVPS classes 0..18 (things 0..7, stuff 8..18), as the ViP-DeepLab release numbers them.
SEMKITTI_CLASS_NAMES: tuple[str, ...] = (
    "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist",
    "motorcyclist", "road", "parking", "sidewalk", "other-ground", "building", "fence",
    "vegetation", "trunk", "terrain", "pole", "traffic-sign",
)  # fmt: skip
