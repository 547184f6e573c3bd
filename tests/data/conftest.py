"""Small synthetic Cityscapes-DPS folders shared by the data tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from panopticdepth.data.synthetic import write_dataset

H, W = 64, 128
NUM = 6
SEED = 7


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A read-only synthetic dataset (do not modify it in tests; use `synth_copy`)."""
    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, "train", NUM, height=H, width=W, seed=SEED)
    return root


@pytest.fixture
def synth_copy(synth_root: Path, tmp_path: Path) -> Path:
    """A private copy of `synth_root` that a test may break."""
    dst = tmp_path / "ds"
    shutil.copytree(synth_root, dst)
    return dst
