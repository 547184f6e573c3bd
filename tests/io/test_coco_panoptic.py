"""COCO-panoptic encoding of a library panoptic map (ids, categories, VOID, boxes)."""

from __future__ import annotations

import numpy as np

from panopticdepth.io.coco_panoptic import cityscapes_categories, image_id_from_stem, panoptic_to_coco


def test_road_is_not_void_and_void_ids_become_zero():
    pan = np.zeros((4, 6), np.int64)  # road: library id 0
    pan[1:3, 2:5] = 13021  # a car
    pan[0, 0] = -1  # unassigned (segmentation-only models)
    pan[3, 5] = 32000  # VOID
    pan[3, 0] = 10000  # sky
    label_ids = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
    seg, segments = panoptic_to_coco(pan, label_ids)
    assert seg[0, 0] == 0 and seg[3, 5] == 0
    by_cat = {s["category_id"]: s for s in segments}
    assert sorted(by_cat) == [7, 23, 26]
    assert sorted(s["id"] for s in segments) == [1, 2, 3]
    car = by_cat[26]
    assert car["area"] == 6 and car["bbox"] == [2, 1, 3, 2] and car["iscrowd"] == 0
    assert (seg == car["id"]).sum() == 6 and (seg == by_cat[7]["id"]).sum() == 24 - 6 - 3
    assert by_cat[23]["bbox"] == [0, 3, 1, 1]


def test_cityscapes_categories_and_image_ids():
    cats = cityscapes_categories()
    assert [c["id"] for c in cats] == [
        7,
        8,
        11,
        12,
        13,
        17,
        19,
        20,
        21,
        22,
        23,
        24,
        25,
        26,
        27,
        28,
        31,
        32,
        33,
    ]
    assert [c["isthing"] for c in cats] == [0] * 11 + [1] * 8
    assert image_id_from_stem("frankfurt_000000_000294_leftImg8bit") == "frankfurt_000000_000294"
    assert image_id_from_stem("photo") == "photo"
