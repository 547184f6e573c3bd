"""The reference case bundled in `tests/fixtures/oracle_small`: small, complete, and identical to the
public oracle case it was trimmed from (checked when that folder is present)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import SMALL_CASE_DIR
from tests.fixtures.standin_weights import standin_entry, weights_digest

LOSS_NAMES = {"loss_pos_th", "loss_pos_st", "loss_seg_th", "loss_seg_st", "loss_depth_ins", "loss_depth"}


def test_bundled_case_is_small_and_complete(small_case):
    total = sum(p.stat().st_size for p in SMALL_CASE_DIR.rglob("*") if p.is_file())
    assert total < 1_000_000, f"tests/fixtures/oracle_small holds {total} bytes"
    for name in ("input.png", "gt/scene_gtFine_instanceTrainIds.png", "gt/scene_depth.png", "README.md"):
        assert (SMALL_CASE_DIR / name).is_file(), name
    assert set(small_case["losses"]) == LOSS_NAMES
    a = small_case["arrays"]
    assert a["final_depth"].shape == (128, 256) and a["final_sem_seg_probs"].shape == (19, 128, 256)
    n = len(a["final_instances_classes"])
    assert n > 0 and a["final_instances_scores"].shape == (n,)
    assert a["final_instances_mask_area"].shape == (n,)
    assert a["train_input_image_bgr_chw_uint8"].shape == (3, 192, 448)


def test_standin_weights_match_the_recorded_digest(standin_weights):
    """The generator must give the weights the original ran with, bit for bit; the digest was made
    by the oracle folder's own recipe when the fixture was built."""
    info = json.loads((SMALL_CASE_DIR / "case.json").read_text())
    assert len(standin_weights) == 383
    assert weights_digest(standin_weights) == info["standin_weights_sha256"]


def test_digest_sees_a_changed_entry(standin_weights):
    changed = dict(standin_weights)
    name = next(iter(changed))
    changed[name] = changed[name].copy()
    changed[name].flat[0] = np.nextafter(changed[name].flat[0], np.float32(np.inf))
    assert weights_digest(changed) != weights_digest(standin_weights)


def test_standin_rules():
    assert standin_entry("x.num_batches_tracked", ()).dtype == np.int64
    var = standin_entry("a.norm.running_var", (4096,))
    assert var.dtype == np.float32 and var.min() >= 0.5 and var.max() < 1.5
    scale = standin_entry("a.norm.weight", (4096,))
    assert abs(float(scale.mean()) - 1.0) < 0.01 and abs(float(scale.std()) - 0.1) < 0.01
    conv = standin_entry("a.conv.weight", (64, 32, 3, 3))
    assert abs(float(conv.std()) - (2.0 / (32 * 9)) ** 0.5) < 0.01
    # Depends on the name alone.
    assert np.array_equal(standin_entry("a.conv.weight", (64, 32, 3, 3)), conv)
    assert not np.array_equal(standin_entry("b.conv.weight", (64, 32, 3, 3)), conv)


@pytest.mark.oracle
def test_bundled_case_equals_the_oracle_case(
    oracle_dir, oracle_case, oracle_weights, small_case, standin_weights
):
    keys = json.loads((oracle_dir / "reference_keys.json").read_text())
    assert json.loads((SMALL_CASE_DIR / "reference_keys.json").read_text()) == keys
    assert list(standin_weights) == list(oracle_weights)
    for name, value in oracle_weights.items():
        mine = standin_weights[name]
        assert mine.dtype == value.dtype and mine.tobytes() == value.tobytes(), name
    full = oracle_case["arrays"]
    for name, value in small_case["arrays"].items():
        if name == "final_sem_seg_probs":
            np.testing.assert_allclose(value, full[name], atol=2.5e-4, rtol=0)
        else:
            assert value.dtype == full[name].dtype and np.array_equal(value, full[name]), name
    assert small_case["losses"] == json.loads((oracle_dir / "case_small" / "losses.json").read_text())
    for name in ("input.png", "gt/scene_gtFine_instanceTrainIds.png", "gt/scene_depth.png"):
        assert (SMALL_CASE_DIR / name).read_bytes() == (oracle_dir / "case_small" / name).read_bytes()
