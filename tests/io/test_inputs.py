"""Input reading for predict: EXIF orientation of camera JPEGs is applied, datasets keep pixels."""

from __future__ import annotations

import numpy as np
from PIL import Image

from panopticdepth.io.formats import read_image_rgb
from panopticdepth.io.inputs import is_still_frame, iter_frames, resolve_inputs


def _sideways_jpeg(path):
    """A 20x40 picture stored as 40x20 pixels with EXIF orientation 6 (rotate 90 degrees clockwise)."""
    upright = np.zeros((20, 40, 3), dtype=np.uint8)
    upright[:, :20] = (255, 0, 0)  # left half red, right half blue
    upright[:, 20:] = (0, 0, 255)
    stored = np.rot90(upright, k=1)  # 40x20, as a camera held sideways writes it
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(stored)).save(path, exif=exif, quality=95)
    return upright


def test_predict_inputs_apply_exif_orientation(tmp_path):
    path = tmp_path / "photo.jpg"
    upright = _sideways_jpeg(path)
    assert read_image_rgb(path).shape == (40, 20, 3)  # stored pixels, as datasets read them
    frames = list(iter_frames(resolve_inputs([path])))
    image = frames[0].image
    assert image.shape == upright.shape
    # JPEG is lossy: compare the halves' dominant channel.
    assert image[:, :18, 0].mean() > 200 and image[:, :18, 2].mean() < 60
    assert image[:, 22:, 2].mean() > 200 and image[:, 22:, 0].mean() < 60


def test_a_dataset_split_folder_yields_its_camera_frames_only(tmp_path):
    """Label and depth PNGs beside `*_leftImg8bit.png` frames are not inputs; other folders keep all."""
    from panopticdepth.data.synthetic import write_dataset

    split = write_dataset(tmp_path / "ds", "val", 2, height=16, width=32, seed=0)
    names = [item.path.name for item in resolve_inputs([split])]
    assert len(names) == 2 and all(n.endswith("_leftImg8bit.png") for n in names)
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("a.png", "b_depth.png"):
        (plain / name).write_bytes((split / names[0]).read_bytes())
    assert [item.path.name for item in resolve_inputs([plain])] == ["a.png", "b_depth.png"]


def test_independent_synthetic_scenes_form_no_sequence(tmp_path):
    """`write_dataset` scenes are named like DVPS frames but are not a video: nothing to track;
    moving synthetic sequences and Cityscapes-DVPS-style names keep their sequence key."""
    from panopticdepth.data.base import sequence_fields
    from panopticdepth.data.synthetic import sequence_prefix, synth_prefix, write_dataset

    assert is_still_frame(synth_prefix(7)) and sequence_fields(synth_prefix(7))["still"]
    for name in (sequence_prefix(1, 2), "000003_000000_munster_000105", "synth", "a_b_synth"):
        assert not is_still_frame(name)
    assert sequence_fields(sequence_prefix(1, 2)) == {"sequence": "000001", "frame": 2, "still": False}
    split = write_dataset(tmp_path / "ds", "val", 3, height=16, width=32, seed=0)
    assert [f.sequence for f in iter_frames(resolve_inputs([split]))] == [None, None, None]
