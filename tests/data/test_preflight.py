"""Pre-flight check of a training split from file headers: clean data passes, each fault is named."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from panopticdepth.config.data import DataConfig
from panopticdepth.data.preflight import preflight_split
from panopticdepth.errors import DataError

from .test_readers import _cityscapes_panoptic_case, _custom_case, _semkitti_case

FIRST = "000000_000000_synth_000000"


@pytest.mark.parametrize(
    ("make", "dataset", "split", "frames"),
    [
        (None, "cityscapes-dps", "train", 6),
        (_semkitti_case, "semkitti-dps", "val", 2),
        (_cityscapes_panoptic_case, "cityscapes-panoptic", "val", None),
        (_custom_case, "custom", "train", None),
    ],
    ids=["cityscapes-dps", "semkitti-dps", "cityscapes-panoptic", "custom"],
)
def test_clean_datasets_pass(synth_root, tmp_path, make, dataset, split, frames):
    root = synth_root
    if make is not None:
        make(tmp_path)
        root = tmp_path
    n = preflight_split(DataConfig(dataset=dataset, root=str(root)), split)
    assert n >= 1 and (frames is None or n == frames)


def _split(root):
    return root / "video_sequence" / "train"


@pytest.mark.parametrize(
    ("break_it", "file", "why"),
    [
        (
            lambda r: (_split(r) / f"{FIRST}_depth.png").unlink(),
            "_depth.png",
            "but missing",
        ),
        (
            lambda r: (_split(r) / f"{FIRST}_depth.png").write_text("x"),
            "_depth.png",
            "unreadable image header",
        ),
        (
            lambda r: Image.fromarray(np.zeros((64, 128, 3), np.uint8)).save(
                _split(r) / f"{FIRST}_depth.png"
            ),
            "_depth.png",
            "depth map must be a 16-bit single-channel PNG, got mode RGB",
        ),
        (
            lambda r: Image.fromarray(np.zeros((10, 128), np.uint16)).save(_split(r) / f"{FIRST}_depth.png"),
            "_depth.png",
            "depth map size 128x10 does not match the image size 128x64",
        ),
        (
            lambda r: (
                Image.fromarray(np.zeros((64, 128), np.float32)).save(
                    _split(r) / f"{FIRST}_leftImg8bit.png".replace(".png", ".tif")
                )
                or (_split(r) / f"{FIRST}_leftImg8bit.tif").replace(_split(r) / f"{FIRST}_leftImg8bit.png")
            ),
            "_leftImg8bit.png",
            "floating-point",
        ),
    ],
    ids=["missing-file", "garbage", "depth-rgb", "size", "float-image"],
)
def test_each_fault_is_named(synth_copy, break_it, file, why):
    break_it(synth_copy)
    with pytest.raises(DataError) as info:
        preflight_split(DataConfig(dataset="cityscapes-dps", root=str(synth_copy)), "train")
    msg = str(info.value)
    assert f"{FIRST}{file}" in msg and why in msg
    assert "\n" not in msg


def test_index_size_and_problem_count(synth_copy):
    index = synth_copy / "video_sequence" / "dvps_cityscapes_train.json"
    entries = json.loads(index.read_text())
    for e in entries[:3]:
        e["height"] = 99
    index.write_text(json.dumps(entries))
    with pytest.raises(
        DataError, match=r"index JSON says 128x99 \(and 2 more problem\(s\); run 'panopticdepth"
    ):
        preflight_split(DataConfig(dataset="cityscapes-dps", root=str(synth_copy)), "train")


def test_semkitti_class_map_of_wrong_depth(tmp_path):
    _semkitti_case(tmp_path)
    split = tmp_path / "video_sequence" / "val"
    path = next(split.glob("*_gtFine_class.png"))
    Image.fromarray(np.zeros((6, 8), np.uint16)).save(path)
    with pytest.raises(DataError, match=f"{path.name}: class map must be a 8-bit single-channel PNG"):
        preflight_split(DataConfig(dataset="semkitti-dps", root=str(tmp_path)), "val")
