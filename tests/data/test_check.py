"""Bad inputs: each produces a problem naming the file in `data check` and a DataError in the reader."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from panopticdepth.cli.main import main
from panopticdepth.config.data import DataConfig
from panopticdepth.data.build import build_dataset
from panopticdepth.data.check import check_dataset, detect_dataset
from panopticdepth.errors import DataError

from .test_readers import _cityscapes_panoptic_case, _custom_case, _semkitti_case

FIRST = "000000_000000_synth_000000"


def _split(root):
    return root / "video_sequence" / "train"


def _reader_error(root, name="cityscapes-dps", split="train", index=0):
    cfg = DataConfig(dataset=name, root=str(root))
    cfg.augmentation.enabled = False
    with pytest.raises(DataError) as info:
        build_dataset(cfg, split, train=False)[index]
    return str(info.value)


def _one_problem(root, name=None, split=None):
    counts, problems = check_dataset(root, name, [split] if split else None)
    assert len(problems) == 1, problems
    return problems[0]


def test_clean_dataset_passes(synth_root, capsys):
    assert detect_dataset(synth_root) == "cityscapes-dps"
    counts, problems = check_dataset(synth_root)
    assert counts == {"train": 6} and problems == []
    assert main(["data", "check", str(synth_root)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "label space 'cityscapes': 19 classes" in out


def test_missing_partner(synth_copy, capsys):
    (synth_copy / "video_sequence" / "dvps_cityscapes_train.json").unlink()
    (_split(synth_copy) / f"{FIRST}_depth.png").unlink()
    prob = _one_problem(synth_copy)
    assert prob.path.endswith(f"{FIRST}_leftImg8bit.png") and f"{FIRST}_depth.png" in prob.message
    assert "missing partner" in _reader_error(synth_copy)
    assert main(["data", "check", str(synth_copy)]) == 1
    assert f"{FIRST}_leftImg8bit.png: missing partner depth" in capsys.readouterr().out


def test_missing_file_listed_in_index(synth_copy):
    (_split(synth_copy) / f"{FIRST}_gtFine_instanceTrainIds.png").unlink()
    prob = _one_problem(synth_copy)
    assert prob.path.endswith(f"{FIRST}_gtFine_instanceTrainIds.png") and "missing" in prob.message


def test_size_mismatch(synth_copy):
    path = _split(synth_copy) / f"{FIRST}_depth.png"
    Image.fromarray(np.zeros((10, 12), np.uint16)).save(path)
    prob = _one_problem(synth_copy)
    assert prob.path == str(path) and "12x10" in prob.message and "does not match" in prob.message
    assert "does not match" in _reader_error(synth_copy)


def test_truncated_png(synth_copy):
    path = _split(synth_copy) / f"{FIRST}_leftImg8bit.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    prob = _one_problem(synth_copy)
    assert prob.path == str(path) and "unreadable or truncated" in prob.message
    assert "truncated" in _reader_error(synth_copy)


def test_ids_outside_class_table(synth_copy):
    path = _split(synth_copy) / f"{FIRST}_gtFine_instanceTrainIds.png"
    ids = np.asarray(Image.open(path)).astype(np.uint16).copy()
    ids[0, 0] = 20001  # train id 20 does not exist
    Image.fromarray(ids).save(path)
    prob = _one_problem(synth_copy)
    assert prob.path == str(path) and "outside the label space" in prob.message and "20001" in prob.message
    assert "outside the label space" in _reader_error(synth_copy)


def test_depth_wrong_bit_depth(synth_copy):
    path = _split(synth_copy) / f"{FIRST}_depth.png"
    Image.fromarray(np.zeros((64, 128), np.uint8)).save(path)
    prob = _one_problem(synth_copy)
    assert prob.path == str(path) and "16-bit" in prob.message
    assert "16-bit" in _reader_error(synth_copy)


def test_index_size_disagrees(synth_copy):
    index = synth_copy / "video_sequence" / "dvps_cityscapes_train.json"
    entries = json.loads(index.read_text())
    entries[0]["height"] = 99
    index.write_text(json.dumps(entries))
    assert "index JSON says" in _one_problem(synth_copy).message


def test_unknown_dataset_and_empty_root(tmp_path):
    with pytest.raises(DataError, match="cannot tell"):
        detect_dataset(tmp_path)
    with pytest.raises(DataError, match="unknown dataset"):
        build_dataset(DataConfig(dataset="kitti", root=str(tmp_path)), "train", train=False)
    with pytest.raises(DataError, match="data.root is empty"):
        build_dataset(DataConfig(root=""), "train", train=False)
    assert main(["data", "check", str(tmp_path / "nope")]) == 2


def test_semkitti_bad_class_and_bit_depth(tmp_path, capsys):
    _semkitti_case(tmp_path)
    assert main(["data", "check", str(tmp_path)]) == 0
    assert "label space 'semkitti'" in capsys.readouterr().out
    split = tmp_path / "video_sequence" / "val"
    cls_path = split / "000002_000000_gtFine_class.png"
    cls = np.asarray(Image.open(cls_path)).copy()
    cls[0, 0] = 40
    Image.fromarray(cls).save(cls_path)
    Image.fromarray(np.zeros((6, 8), np.uint16)).save(split / "000002_000001_gtFine_class.png")
    counts, problems = check_dataset(tmp_path, "semkitti-dps", ["val"])
    msgs = sorted(f"{p.path}: {p.message}" for p in problems)
    assert len(msgs) == 2
    assert "000002_000000_gtFine_class.png" in msgs[0] and "[40]" in msgs[0]
    assert "000002_000001_gtFine_class.png" in msgs[1] and "8-bit" in msgs[1]
    assert "SemKITTI" in _reader_error(tmp_path, "semkitti-dps", "val")


def test_cityscapes_panoptic_bad_inputs(tmp_path):
    doc = _cityscapes_panoptic_case(tmp_path)
    doc["annotations"][0]["segments_info"][0]["category_id"] = 77
    (tmp_path / "gtFine" / "cityscapes_panoptic_val.json").write_text(json.dumps(doc))
    prob = _one_problem(tmp_path, "cityscapes-panoptic", "val")
    assert "category id 77" in prob.message and prob.path.endswith("_gtFine_panoptic.png")
    assert detect_dataset(tmp_path) == "cityscapes-panoptic"
    for p in (tmp_path / "leftImg8bit").rglob("*.png"):
        p.unlink()
    prob = _one_problem(tmp_path, "cityscapes-panoptic", "val")
    assert "missing partner image" in prob.message


def test_custom_bad_inputs(tmp_path):
    _custom_case(tmp_path)
    assert detect_dataset(tmp_path) == "custom"
    bad = np.zeros((5, 7), np.uint16)
    bad[0, 0] = 9000  # class 9 not in classes.yaml
    Image.fromarray(bad).save(tmp_path / "train" / "panoptic" / "a.png")
    (tmp_path / "train" / "depth" / "b.png").unlink()
    counts, problems = check_dataset(tmp_path, "custom", ["train"])
    text = sorted(f"{p.path}: {p.message}" for p in problems)
    assert len(text) == 2
    assert text[0].startswith(str(tmp_path / "train" / "images" / "b.png")) and "depth" in text[0]
    assert "panoptic/a.png" in text[1] and "9000" in text[1]
    (tmp_path / "classes.yaml").write_text("classes:\n  - {id: 2, name: car, train_id: 3, thing: true}\n")
    prob = _one_problem(tmp_path, "custom", "train")
    assert "train ids must number the trained classes 0..0" in prob.message


def test_16bit_grayscale_training_image_is_scaled(synth_copy, capsys):
    path = _split(synth_copy) / f"{FIRST}_leftImg8bit.png"
    gray = np.asarray(Image.open(path).convert("L")).astype(np.uint16) * 257
    Image.fromarray(gray).save(path)
    assert Image.open(path).mode == "I;16"
    cfg = DataConfig(dataset="cityscapes-dps", root=str(synth_copy))
    cfg.augmentation.enabled = False
    image = build_dataset(cfg, "train", train=False).load_arrays(0)[0]
    assert np.array_equal(image[..., 0], gray // 257)  # not clipped to white
    assert main(["data", "check", str(synth_copy)]) == 0


@pytest.mark.parametrize(
    ("content", "why"),
    [("[{", "unreadable index JSON"), ("[1, 2]", "list of objects"), ('{"a": 1}', "list of objects"),
     ("", "unreadable index JSON")],
    ids=["truncated", "numbers", "object", "empty"],
)  # fmt: skip
def test_corrupt_index_json_is_a_problem_not_a_missing_split(synth_copy, capsys, content, why):
    index = synth_copy / "video_sequence" / "dvps_cityscapes_train.json"
    index.write_text(content)
    prob = _one_problem(synth_copy)
    assert prob.path == str(index) and why in prob.message
    assert main(["data", "check", str(synth_copy)]) == 1
    out = capsys.readouterr().out
    assert "OK" not in out and "dvps_cityscapes_train.json" in out


def test_corrupt_panoptic_json_is_a_problem(tmp_path):
    _cityscapes_panoptic_case(tmp_path)
    (tmp_path / "gtFine" / "cityscapes_panoptic_val.json").write_text("{broken")
    counts, problems = check_dataset(tmp_path, "cityscapes-panoptic")
    assert len(problems) == 1 and "cityscapes_panoptic_val.json" in problems[0].path
    assert "unreadable panoptic JSON" in problems[0].message


def test_absent_splits_are_still_skipped(synth_root):
    counts, problems = check_dataset(synth_root, None, None)
    assert counts == {"train": 6} and problems == []  # no val/test folder: nothing to report
    counts, problems = check_dataset(synth_root, None, ["val"])
    assert len(problems) == 1 and "split 'val'" in problems[0].message
