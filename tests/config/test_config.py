"""The config system: defaults, YAML merge, dotted overrides, and errors that name key and file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from panopticdepth.config import Config, ConfigError, load_config, save_config


def test_defaults_are_the_released_dps_values():
    cfg = load_config()
    assert isinstance(cfg, Config)
    # released Cityscapes-DPS values (docs/original_implementation.md#config-defaults)
    assert cfg.model.backbone.name == "resnet50"
    assert cfg.model.backbone.stride_in_1x1 is True
    assert cfg.model.inference.similarity_threshold == 0.97
    assert cfg.model.inference.stuff_area_limit == 2048
    assert cfg.model.depth.normalization == "T2"
    assert cfg.model.input_format == "auto"  # resolved from the backbone:
    assert cfg.model.input_normalization() == ("BGR", [123.675, 116.28, 103.53], [1.0, 1.0, 1.0])
    assert cfg.solver.clip_value == 35.0


def test_defaults_are_not_shared_between_instances():
    a, b = Config(), Config()
    a.model.pixel_mean.append(0.0)
    assert b.model.pixel_mean == []
    a.model.inference.pool_sizes.append(7)
    assert b.model.inference.pool_sizes == [3, 3, 3, 5, 5]


def test_yaml_overrides_only_given_keys(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  depth:\n    normalization: T1\nsolver:\n  base_lr: 0.001\n")
    cfg = load_config(path)
    assert cfg.model.depth.normalization == "T1"
    assert cfg.solver.base_lr == pytest.approx(1e-3)
    assert cfg.model.depth.enabled is True  # untouched sibling keeps its default


def test_base_chain(tmp_path: Path):
    (tmp_path / "base.yaml").write_text("solver:\n  base_lr: 0.5\n  max_iter: 7\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\nsolver:\n  max_iter: 9\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert cfg.solver.base_lr == 0.5
    assert cfg.solver.max_iter == 9


def test_dotted_overrides_win_over_yaml(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("solver:\n  base_lr: 0.001\n")
    cfg = load_config(
        path, ["solver.base_lr=1e-4", "model.depth.normalization=T2", "model.pixel_std=[2, 2, 2]"]
    )
    assert cfg.solver.base_lr == pytest.approx(1e-4)
    assert cfg.model.pixel_std == [2.0, 2.0, 2.0]


def test_int_is_accepted_for_float_but_not_the_reverse():
    assert load_config(None, ["solver.base_lr=1"]).solver.base_lr == 1.0
    with pytest.raises(ConfigError, match="solver.max_iter"):
        load_config(None, ["solver.max_iter=1.5"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("solver.base_lrr=1", "solver.base_lrr"),
        ("model.depth.normalization=T3", "model.depth.normalization"),
        ("model.depth.enabled=maybe", "model.depth.enabled"),
        ("model.pixel_mean=3", "model.pixel_mean"),
        ("model.backbone=3", "model.backbone"),
        ("nonsense=1", "nonsense"),
    ],
)
def test_bad_overrides_name_the_key(override: str, key: str):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert key in str(err.value)
    assert "command line" in str(err.value)


def test_override_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(None, ["solver.base_lr"])


def test_bad_yaml_key_names_the_file(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  heads:\n    convs_dimm: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "model.heads.convs_dimm" in str(err.value)


def test_bad_yaml_type_names_the_file(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  log_period: often\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "train.log_period" in str(err.value)


def test_missing_and_malformed_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
    path = tmp_path / "broken.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(path)


def test_saved_config_round_trips(tmp_path: Path):
    cfg = load_config(None, ["model.depth.normalization=T1", "solver.max_iter=5"])
    out = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert yaml.safe_load(out.read_text())["solver"]["max_iter"] == 5
    assert load_config(out) == cfg
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_every_shipped_config_file_loads():
    configs = sorted((Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml"))
    for path in configs:
        load_config(path)
