"""Converter of original checkpoints: key mapping, file formats, named errors, YAML translation."""

from __future__ import annotations

import json
import logging
import pickle
from fractions import Fraction

import numpy as np
import pytest
import torch

from panopticdepth.checkpoint.convert_original import (
    convert_original,
    convert_state_dict,
    map_original_key,
    read_original_checkpoint,
)
from panopticdepth.checkpoint.model_dir import load_model_dir
from panopticdepth.checkpoint.original_config import translate_original_config
from panopticdepth.config import ConfigError
from panopticdepth.errors import CheckpointError
from panopticdepth.modeling import build_model


@pytest.fixture(scope="module")
def reference_keys():
    """The original checkpoint's key list (bundled with the reference case, so no skip in a clone)."""
    from tests.conftest import SMALL_CASE_DIR

    return json.loads((SMALL_CASE_DIR / "reference_keys.json").read_text())


@pytest.fixture(scope="module")
def default_model():
    return build_model(load_cfg().model)


def load_cfg(*over):
    from panopticdepth.config import load_config

    return load_config(None, list(over))


def _zeros(keys: dict) -> dict:
    return {k: torch.zeros(shape) for k, shape in keys.items()}


@pytest.mark.oracle
def test_every_original_key_maps_one_to_one(reference_keys, default_model):
    own = default_model.state_dict()
    mapped = {k: map_original_key(k) for k in reference_keys}
    assert all(v is not None for v in mapped.values()), [k for k, v in mapped.items() if v is None]
    assert len(set(mapped.values())) == len(mapped) == 383
    assert set(mapped.values()) == {k for k in own if not k.endswith("num_batches_tracked")}
    for k, v in mapped.items():
        shape = tuple(reference_keys[k])
        if v.endswith("projection.weight"):
            shape = shape[:2]
        assert tuple(own[v].shape) == shape, k


def test_mapping_examples():
    assert map_original_key("backbone.bottom_up.res3.0.conv1.norm.running_var") == (
        "backbone.body.layer2.0.bn1.running_var"
    )
    assert map_original_key("backbone.bottom_up.res2.0.shortcut.norm.weight") == (
        "backbone.body.layer1.0.downsample.1.weight"
    )
    assert map_original_key("depth_encode_head.encode_head.depth_encode_head_head_3.dcnv2.bias") == (
        "depth_encoder.tower.layers.2.conv.bias"
    )
    assert map_original_key("position_head.position_head.position_head_head_1.dcnv2.norm.weight") == (
        "position_head.tower.layers.0.norm.weight"
    )
    assert map_original_key("semantic_fpn.p5.4.norm.bias") == "semantic_fpn.branches.p5.4.norm.bias"
    assert map_original_key("some.other.key") is None


def _write_pth(tmp_path, state, name="ck.pth", wrap=True):
    path = tmp_path / name
    torch.save({"model": state} if wrap else state, path)
    return path


@pytest.mark.oracle
def test_unexpected_missing_and_shape_errors_are_named(reference_keys, tmp_path):
    state = _zeros(reference_keys)
    bad = dict(state)
    bad["roi_heads.box_predictor.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"roi_heads\.box_predictor\.weight"):
        convert_original(_write_pth(tmp_path, bad), tmp_path / "o1")
    bad = dict(state)
    del bad["kernel_head.out_conv.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): kernel_head\.out\.bias"):
        convert_original(_write_pth(tmp_path, bad), tmp_path / "o2")
    bad = dict(state)
    bad["position_head.out_sem.bias"] = torch.zeros(20)
    with pytest.raises(
        CheckpointError, match=r"position_head\.region_out\.bias: checkpoint \(20,\) vs model \(19,\)"
    ):
        convert_original(_write_pth(tmp_path, bad), tmp_path / "o3")
    assert not (tmp_path / "o3").exists()


@pytest.mark.oracle
def test_ps_checkpoint_bare_dict_and_batches_tracked(reference_keys, tmp_path):
    ps = {k: v for k, v in _zeros(reference_keys).items() if not k.startswith("depth_")}
    ps["backbone.bottom_up.stem.conv1.norm.num_batches_tracked"] = torch.tensor(5)
    path = _write_pth(tmp_path, ps, wrap=False)
    model, cfg = convert_original(path, tmp_path / "out")
    assert not cfg.model.depth.enabled  # inferred from the keys
    assert model.depth_encoder is None
    loaded, cfg2 = load_model_dir(tmp_path / "out")
    assert not cfg2.model.depth.enabled


@pytest.mark.oracle
def test_pkl_numpy_checkpoint(reference_keys, tmp_path):
    arrays = {k: np.full(shape, 0.5, np.float32) for k, shape in reference_keys.items()}
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": arrays, "__author__": "someone"}, f)
    state = read_original_checkpoint(path)
    assert set(state) == set(reference_keys)
    converted = convert_state_dict(state)
    assert converted["thing_projection.weight"].shape == (256, 256)
    assert float(converted["thing_projection.weight"][3, 4]) == 0.5


def test_unreadable_and_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_original_checkpoint(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        read_original_checkpoint(tmp_path / "junk.pth")


def test_yaml_translation_base_chain_and_unknown_keys(tmp_path, caplog):
    (tmp_path / "Base.yaml").write_text(
        "MODEL:\n  RESNETS: {DEPTH: 101, NORM: SyncBN}\n  BACKBONE: {FREEZE_AT: 0}\n"
        "  POSITION_HEAD: {THING: {THRES: 0.05, TOP_NUM: 100}, CONVS_DIM: 128}\n"
        "  KERNEL_HEAD: {CONVS_DIM: 128}\n  FEATURE_ENCODER: {CONVS_DIM: 128}\n"
        "  SEMANTIC_FPN: {CONVS_DIM: 128}\n  DEPTH_HEAD: {CONVS_DIM: 128}\n"
        "SOLVER: {BASE_LR: 0.001, OPTIMIZER: ADAM}\n"
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "dps.yaml").write_text(
        "_BASE_: ../Base.yaml\n"
        "MODEL:\n  DEPTH_ON: True\n  POSITION_HEAD: {THING: {THRES: 0.02}}\n"
        "  KERNEL_HEAD: {INSTANCE_SCALES: '((1, 64), (32, 128), (64, 256), (128, 512), (256, 2048))'}\n"
        "  INFERENCE: {INST_THRES: 0.45, COMBINE: {STUFF_AREA_LIMIT: 512, INST_THRESH: 0.3}}\n"
        "  PIXEL_MEAN: [1.0, 2.0, 3.0]\n  MYSTERY_KNOB: 3\n"
        "INPUT: {FORMAT: RGB}\nDATASETS: {TRAIN: ['x']}\nWHATEVER: {A: 1}\n"
    )
    with caplog.at_level(logging.WARNING):
        cfg = translate_original_config(tmp_path / "sub" / "dps.yaml")
    m = cfg.model
    assert m.backbone.name == "resnet101" and m.backbone.norm == "SyncBN" and m.backbone.freeze_at == 0
    assert m.inference.thing_threshold == 0.02  # child overrides base
    assert m.inference.top_num == 100
    assert m.inference.mask_threshold == 0.45
    assert m.inference.stuff_area_limit == 512 and m.inference.combine_instance_threshold == 0.3
    assert m.inference.similarity_threshold == 0.97  # not in the YAML: released value stays
    assert m.heads.convs_dim == 128
    assert m.pixel_mean == [1.0, 2.0, 3.0] and m.input_format == "RGB"
    assert cfg.train.targets.instance_scales[0] == [1, 64]
    assert cfg.solver.base_lr == 0.001 and cfg.solver.optimizer == "adam"
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "MODEL.MYSTERY_KNOB" in warned and "WHATEVER.A" in warned and "DATASETS" not in warned


def test_yaml_unsupported_values_raise(tmp_path):
    p = tmp_path / "a.yaml"
    p.write_text("MODEL:\n  RESNETS: {RES5_DILATION: 2}\n")
    with pytest.raises(ConfigError, match="RES5_DILATION"):
        translate_original_config(p)
    p.write_text("MODEL:\n  POSITION_HEAD: {CONVS_DIM: 128}\n  KERNEL_HEAD: {CONVS_DIM: 256}\n")
    with pytest.raises(ConfigError, match="differ"):
        translate_original_config(p)
    with pytest.raises(ConfigError, match="missing.yaml"):
        translate_original_config(tmp_path / "missing.yaml")


def test_yaml_missing_base_warns(tmp_path, caplog):
    p = tmp_path / "child.yaml"
    p.write_text("_BASE_: ../nowhere/Base.yaml\nMODEL:\n  INFERENCE: {INST_THRES: 0.3}\n")
    with caplog.at_level(logging.WARNING):
        cfg = translate_original_config(p)
    assert cfg.model.inference.mask_threshold == 0.3
    assert "Base.yaml" in caplog.text


def test_infer_model_overrides_from_keys():
    from panopticdepth.checkpoint.convert_original import infer_model_overrides

    keys = {
        "backbone.bottom_up.res2.0.conv1.weight": torch.zeros(1),
        "backbone.bottom_up.res2.0.conv2.weight": torch.zeros(1),
        **{f"backbone.bottom_up.res4.{b}.conv1.weight": torch.zeros(1) for b in range(2)},
        "position_head.position_head.position_head_head_1.weight": torch.zeros(1),
        "position_head.out_sem.weight": torch.zeros(11, 4, 3, 3),
        "kernel_head.out_conv.weight": torch.zeros(64, 64, 3, 3),
    }
    over = infer_model_overrides(keys)
    assert "model.backbone.name=resnet18" in over  # basic blocks, 2 blocks in res4
    assert "model.depth.enabled=false" in over
    assert "model.heads.position_deform=false" in over
    assert "model.heads.convs_dim=64" in over and "model.num_classes=11" in over


class _RunsCommand:
    """Unpickling this calls `os.system`: what a hostile checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _dump(path, obj, protocol=pickle.DEFAULT_PROTOCOL):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_pkl_arrays_read_with_every_protocol(tmp_path, protocol):
    from collections import OrderedDict

    model = OrderedDict(w=np.arange(6, dtype=np.float32).reshape(2, 3), b=np.arange(3).astype(">i2"))
    path = _dump(tmp_path / "m.pkl", {"model": model, "__author__": "x", "tags": {1, 2}}, protocol)
    state = read_original_checkpoint(path)
    assert state["w"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert state["b"].tolist() == [0, 1, 2]  # big-endian input converted


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(lambda marker: {"model": {"w": _RunsCommand(marker)}}, id="os-system-in-model"),
        pytest.param(lambda marker: _RunsCommand(marker), id="os-system-top-level"),
        pytest.param(lambda marker: {"model": {}, "meta": Fraction(1, 3)}, id="class"),
    ],
)
def test_pkl_with_code_is_refused_without_unsafe_load(tmp_path, payload):
    marker = tmp_path / "pwned"
    path = _dump(tmp_path / "evil.pkl", payload(marker))
    with pytest.raises(CheckpointError, match="--unsafe-load") as info:
        read_original_checkpoint(path)
    assert "evil.pkl" in str(info.value)
    assert not marker.exists()


def test_pkl_with_objects_loads_with_unsafe_load(tmp_path):
    path = _dump(tmp_path / "m.pkl", {"model": {"w": np.ones(2, np.float32)}, "meta": Fraction(1, 3)})
    state = read_original_checkpoint(path, unsafe=True)
    assert list(state) == ["w"]


@pytest.mark.parametrize(
    "content", [b"hello world\n", b"", b"\x80\x04garbage", b"MODEL:\n  WEIGHTS: x\n"], ids=repr
)
@pytest.mark.parametrize("suffix", [".pkl", ".pth"])
def test_non_checkpoint_files_are_not_told_to_use_unsafe_load(tmp_path, content, suffix):
    path = tmp_path / f"notes{suffix}"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        read_original_checkpoint(path)
    msg = str(info.value)
    assert f"notes{suffix}" in msg and "unsafe" not in msg


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_torch_files_are_told_by_content_not_suffix(tmp_path, zipped):
    for name in ("m.pkl", "m.pth"):
        torch.save({"model": {"w": torch.ones(2)}}, tmp_path / name, _use_new_zipfile_serialization=zipped)
        assert read_original_checkpoint(tmp_path / name)["w"].tolist() == [1.0, 1.0]
    path = tmp_path / "meta.pth"
    torch.save({"model": {"w": torch.ones(2)}, "meta": Fraction(1, 3)}, path)
    with pytest.raises(CheckpointError, match=r"fractions\.Fraction.*--unsafe-load"):
        read_original_checkpoint(path)
    assert list(read_original_checkpoint(path, unsafe=True)) == ["w"]


def test_plain_pickle_named_pth_is_read_safely(tmp_path):
    path = _dump(tmp_path / "m.pth", {"model": {"w": np.ones(2, np.float32)}})
    assert read_original_checkpoint(path)["w"].tolist() == [1.0, 1.0]
    marker = tmp_path / "pwned"
    path = _dump(tmp_path / "evil.pth", {"model": {"w": _RunsCommand(marker)}})
    with pytest.raises(CheckpointError, match="--unsafe-load"):
        read_original_checkpoint(path)
    assert not marker.exists()


def test_convert_cli_refuses_hostile_pkl(tmp_path, capsys):
    from panopticdepth.cli.main import main

    marker = tmp_path / "pwned"
    path = _dump(tmp_path / "model_final.pkl", {"model": {"w": _RunsCommand(marker)}})
    assert main(["convert", "--original", str(path), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "--unsafe-load" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_original_config_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "orig.yaml"
    path.write_bytes(b"MODEL:\n  WEIGHTS: caf\xe9.pkl\n")
    with pytest.raises(ConfigError, match="orig.yaml: not a UTF-8 text file"):
        translate_original_config(path)
