"""Ground truth vs the original's GenerateGT on the oracle case (recorded gt_<p>_* arrays)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from panopticdepth.config import Config
from panopticdepth.modeling.outputs import HeadOutputs, LevelOutputs
from panopticdepth.training.targets import boxes_from_masks, build_targets

pytestmark = pytest.mark.oracle

LEVELS = ("p3", "p4", "p5", "p6", "p7")


def _sample(arrays: dict) -> dict:
    image_bgr = arrays["train_input_image_bgr_chw_uint8"]
    return {
        "image": torch.from_numpy(np.ascontiguousarray(image_bgr[::-1])),
        "semantic": torch.from_numpy(arrays["train_input_sem_seg"]).long(),
        "instance_masks": torch.from_numpy(arrays["train_input_gt_masks"].astype(bool)),
        "instance_classes": torch.from_numpy(arrays["train_input_gt_classes"]).long(),
        "depth": torch.from_numpy(arrays["train_input_depth"]).float(),
        "meta": {"image_path": "oracle/case_small"},
    }


def _shape_only_outputs(arrays: dict, padded: tuple[int, int]) -> HeadOutputs:
    """Head outputs carrying only the recorded level sizes (targets read nothing else)."""
    levels = []
    for p in LEVELS:
        h, w = arrays[f"gt_{p}_center_heatmap"].shape[-2:]
        levels.append(
            LevelOutputs(
                torch.zeros(1, 8, h, w),
                torch.zeros(1, 19, h, w),
                torch.zeros(1, 4, h, w),
                torch.zeros(1, 18, h, w),
            )
        )
    h4, w4 = padded[0] // 4, padded[1] // 4
    return HeadOutputs(
        levels=levels, mask_embedding=torch.zeros(1, 4, h4, w4), depth_embedding=torch.zeros(1, 16, h4, w4)
    )


@pytest.fixture(scope="module")
def oracle_targets(oracle_case):
    arrays = oracle_case["arrays"]
    sample = _sample(arrays)
    padded = tuple(arrays["train_input_image_bgr_chw_uint8"].shape[-2:])
    return build_targets([sample], _shape_only_outputs(arrays, padded), padded, Config())


def test_boxes_follow_the_dps_mapper(oracle_case):
    arrays = oracle_case["arrays"]
    boxes = boxes_from_masks(torch.from_numpy(arrays["train_input_gt_masks"].astype(bool)))
    np.testing.assert_array_equal(boxes.numpy(), arrays["train_input_gt_boxes_xyxy"])


@pytest.mark.parametrize("level", range(len(LEVELS)))
def test_level_targets_match(oracle_targets, oracle_case, level):
    arrays = oracle_case["arrays"]
    p = LEVELS[level]
    lv = oracle_targets.levels[level]
    np.testing.assert_allclose(lv.center[0].numpy(), arrays[f"gt_{p}_center_heatmap"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        lv.stuff_scores[0].numpy(), arrays[f"gt_{p}_stuff_scoremap"], rtol=0, atol=1e-6
    )
    valid = lv.thing_valid[0]
    assert int(valid.sum()) == int(arrays[f"gt_{p}_num_things"])
    assert int(lv.stuff_valid[0].sum()) == int(arrays[f"gt_{p}_num_stuff"])
    np.testing.assert_array_equal(lv.thing_index[0][valid].numpy(), arrays[f"gt_{p}_thing_index"])
    np.testing.assert_array_equal(lv.thing_classes[0][valid].numpy(), arrays[f"gt_{p}_thing_class"])
    # unused thing slots hold 255 (docs/original_implementation.md#target-slots)
    assert bool((lv.thing_masks[0][~valid] == 255).all())


def test_depth_stride4_matches(oracle_targets, oracle_case):
    np.testing.assert_allclose(
        oracle_targets.depth[0, 0].numpy(), oracle_case["arrays"]["gt_depth_stride4"], rtol=0, atol=1e-6
    )
