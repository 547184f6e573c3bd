"""Range rules of config values and file-level faults: each is one ConfigError naming the key or file."""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from panopticdepth.config import Config, ConfigError, load_config, save_config
from panopticdepth.config.checks import field_problem


@pytest.mark.parametrize(
    ("override", "key", "why"),
    [
        ("solver.ims_per_batch=0", "solver.ims_per_batch", ">= 1"),
        ("solver.base_lr=nan", "solver.base_lr", "finite"),
        ("solver.base_lr=inf", "solver.base_lr", "finite"),
        ("solver.base_lr=-1", "solver.base_lr", "> 0"),
        ("solver.base_lr=0", "solver.base_lr", "> 0"),
        ("solver.base_lr=1e39", "solver.base_lr", "<= 10"),
        ("solver.base_lr=1e400", "solver.base_lr", "finite"),
        ("solver.max_iter=-5", "solver.max_iter", ">= 1"),
        ("solver.max_iter=0", "solver.max_iter", ">= 1"),
        ("solver.warmup_factor=2", "solver.warmup_factor", "between 0 and 1"),
        ("solver.clip_value=-1", "solver.clip_value", ">= 0"),
        ("data.num_workers=-1", "data.num_workers", ">= 0"),
        ("data.seed=-3", "data.seed", ">= 0"),
        ("data.augmentation.scale_range=[2.0,1.0]", "data.augmentation.scale_range", "ascending"),
        ("data.augmentation.scale_range=[0.5]", "data.augmentation.scale_range", "2 entries"),
        ("data.augmentation.scale_range=[0,1]", "data.augmentation.scale_range", "> 0"),
        ("data.augmentation.crop_size=[0,64]", "data.augmentation.crop_size", ">= 1"),
        ("train.checkpoint_period=-1", "train.checkpoint_period", ">= 0"),
        ("train.max_minutes=-0.5", "train.max_minutes", ">= 0"),
        ("train.loss.segment=-4", "train.loss.segment", ">= 0"),
        ("train.targets.instance_scales=[[128,1]]", "train.targets.instance_scales", "ascending"),
        ("model.pixel_std=[1,0,1]", "model.pixel_std", "> 0"),
        ("model.pixel_mean=[1,2]", "model.pixel_mean", "3 entries"),
        ("model.inference.mask_threshold=-0.5", "model.inference.mask_threshold", ">= 0"),
        ("model.backbone.freeze_at=9", "model.backbone.freeze_at", "between 0 and 5"),
        ("model.depth.max_depth=0", "model.depth.max_depth", "> 0"),
        ("eval.depth_thresholds=[]", "eval.depth_thresholds", "empty"),
        ("eval.frames=[0]", "eval.frames", ">= 1"),
    ],
)
def test_out_of_range_values_name_the_key(override: str, key: str, why: str):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    msg = str(info.value)
    assert f"'{key}'" in msg and why in msg and "command line" in msg


def test_out_of_range_value_in_a_file_names_the_file(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("solver:\n  ims_per_batch: 0\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: 'solver\.ims_per_batch' must be >= 1, got 0"):
        load_config(path)


@pytest.mark.parametrize("override", ["solver.base_lr=10", "solver.max_iter=1", "data.num_workers=0",
                                      "train.keep_checkpoints=0", "data.augmentation.crop_size=[]",
                                      "data.augmentation.scale_range=[0.5,2.0]"])  # fmt: skip
def test_boundary_values_are_accepted(override: str):
    load_config(None, [override])


def _fields(obj, prefix=""):
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            yield from _fields(value, key + ".")
        else:
            yield key, f, value


def test_defaults_obey_their_own_rules():
    checked = 0
    for key, f, value in _fields(Config()):
        assert field_problem(f.metadata, value) is None, key
        checked += bool(f.metadata)
    assert checked > 40


def test_base_cycle_is_an_error_not_a_recursion(tmp_path: Path):
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\nsolver: {max_iter: 5}\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(ConfigError, match=r"_base_ chain loops.*a\.yaml.*b\.yaml.*a\.yaml"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "self.yaml").write_text("_base_: ./self.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "self.yaml")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"solver:\n  base_lr: 1.0e-4  # r\xe9glage\n", "not a UTF-8 text file"),
        (b"\xff\xfe\x00\x00", "not a UTF-8 text file"),
        (b"_base_: [a.yaml]\n", "_base_ must be a file path"),
        (b"_base_: missing.yaml\n", "missing.yaml: cannot read"),
    ],
)
def test_unreadable_config_files(tmp_path: Path, content: bytes, match: str):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=match):
        load_config(path)


def test_config_folder_is_an_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    "args",
    [["solver.base_lr=1e39"], ["solver.ims_per_batch=0"], ["--config", "{cycle}"], ["--config", "{latin1}"]],
    ids=["lr-overflow", "batch-zero", "base-cycle", "latin1"],
)
def test_cli_prints_one_line(tmp_path: Path, args: list[str]):
    (tmp_path / "cycle.yaml").write_text("_base_: cycle.yaml\n")
    (tmp_path / "latin1.yaml").write_bytes(b"# \xe9\n")
    args = [a.format(cycle=tmp_path / "cycle.yaml", latin1=tmp_path / "latin1.yaml") for a in args]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    res = subprocess.run([sys.executable, "-m", "panopticdepth.cli.main", "config", *args],
                         capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_saved_config_has_shared_file_permissions(tmp_path: Path):
    old = os.umask(0o022)
    try:
        path = save_config(Config(), tmp_path / "config.yaml")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert load_config(path) == Config()
