"""Shared fixtures: the oracle folder, offline hubs, one thread per test process."""

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
