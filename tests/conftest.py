"""Shared fixtures: the bundled reference case, the oracle folder, offline hubs, one thread per test process.

Two sources of reference outputs of the original implementation:

- `small_case` / `standin_weights`: a trimmed copy of the public case in `tests/fixtures/oracle_small`
  (inputs, key list of the stand-in weights, final outputs, training inputs, losses). Part of the
  repository, so the end-to-end conformance tests run in every clone.
- `oracle_dir` / `oracle_case` / `oracle_weights`: the full public folder with every intermediate
  array (`PANOPTICDEPTH_ORACLE`, default `../shared/oracle`); tests using it skip when it is absent.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PANOPTICDEPTH_PROGRESS", "0")

REPO_ROOT = Path(__file__).resolve().parents[1]
ORACLE_DIR = Path(os.environ.get("PANOPTICDEPTH_ORACLE", REPO_ROOT.parent / "shared" / "oracle"))
SMALL_CASE_DIR = REPO_ROOT / "tests" / "fixtures" / "oracle_small"


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.set_num_threads(int(os.environ.get("PANOPTICDEPTH_TEST_THREADS", "1")))
    yield


@pytest.fixture(scope="session")
def oracle_dir() -> Path:
    if not ORACLE_DIR.is_dir():
        pytest.skip(f"oracle folder {ORACLE_DIR} is absent (set PANOPTICDEPTH_ORACLE to point at it)")
    return ORACLE_DIR


@pytest.fixture(scope="session")
def oracle_case(oracle_dir: Path):
    """The recorded outputs of the original implementation on case_small, as a dict of arrays."""
    import numpy as np

    case = oracle_dir / "case_small"
    with np.load(case / "outputs.npz") as data:
        arrays = {k: data[k] for k in data.files}
    config = json.loads((case / "config.json").read_text())
    return {"dir": case, "arrays": arrays, "config": config}


@pytest.fixture(scope="session")
def oracle_weights(oracle_dir: Path) -> dict:
    """The deterministic stand-in weights under the original implementation's key names."""
    spec = importlib.util.spec_from_file_location("weights_recipe", oracle_dir / "weights_recipe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    keys = json.loads((oracle_dir / "reference_keys.json").read_text())
    return module.make_weights(keys)


@pytest.fixture(scope="session")
def small_case() -> dict:
    """The bundled reference case: `dir` (input.png, gt/), `arrays` under the full case's names
    (decoded to the full case's dtypes, the semantic probabilities from float16) and `losses`."""
    import numpy as np

    with np.load(SMALL_CASE_DIR / "arrays.npz") as data:
        stored = {k: data[k] for k in data.files}
    arrays = {k: v for k, v in stored.items() if k != "train_input_depth_x256"}
    arrays["train_input_depth"] = stored["train_input_depth_x256"].astype(np.float32) / 256.0
    # Stored narrow; given back in the dtypes of the full case (no uint8 overflow in id arithmetic).
    full_dtypes = {
        "final_panoptic_2ch_segment_id": np.int32,
        "final_panoptic_2ch_category": np.int32,
        "final_sem_seg_probs": np.float32,
        "final_instances_classes": np.int32,
        "final_instances_mask_area": np.int64,
        "train_input_sem_seg": np.int64,
        "train_input_gt_classes": np.int64,
        "train_input_gt_masks": np.uint8,
    }
    for level in ("p3", "p4", "p5", "p6", "p7"):
        full_dtypes[f"level_{level}_thing_cand_class"] = np.int32
        full_dtypes[f"level_{level}_thing_cand_flat_index"] = np.int64
    for name, dtype in full_dtypes.items():
        arrays[name] = arrays[name].astype(dtype)
    losses = json.loads((SMALL_CASE_DIR / "losses.json").read_text())
    return {"dir": SMALL_CASE_DIR, "arrays": arrays, "losses": losses}


@pytest.fixture(scope="session")
def standin_weights() -> dict:
    """The stand-in weights of the reference case, rebuilt from the bundled key list."""
    from tests.fixtures.standin_weights import standin_weights_from_file

    return standin_weights_from_file(SMALL_CASE_DIR / "reference_keys.json")
