"""`panopticdepth predict` through the CLI: images, folders, videos, raw outputs, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from panopticdepth.checkpoint.model_dir import save_model_dir
from panopticdepth.cli.main import main
from panopticdepth.config import Config
from panopticdepth.io.formats import read_depth, read_panoptic_rgb, write_image_rgb
from panopticdepth.modeling.network import build_model


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    cfg = Config()
    m = cfg.model
    m.backbone.name = "resnet18"
    m.fpn.out_channels = m.heads.convs_dim = 32
    m.heads.norm_groups = 8
    m.inference.stuff_area_limit = 16
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny") / "model"
    save_model_dir(out, build_model(m), cfg)
    return out


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write_video(path, frames):
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _check_frame(out, stem, shape):
    raw = np.load(out / f"{stem}.npz")
    pan = raw["panoptic"]
    assert pan.dtype == np.int32 and pan.shape == shape
    assert np.array_equal(read_panoptic_rgb(out / f"{stem}_panoptic.png"), pan)
    depth = raw["depth"]
    assert depth.dtype == np.float32 and depth.shape == shape
    np.testing.assert_allclose(read_depth(out / f"{stem}_depth.png"), depth, atol=0.5 / 256 + 1e-6)
    seg = raw["segments"]
    assert seg.dtype.names == ("id", "category", "score", "is_thing", "area")
    ids, counts = np.unique(pan, return_counts=True)
    assert dict(zip(seg["id"].tolist(), seg["area"].tolist())) == dict(zip(ids.tolist(), counts.tolist()))
    assert np.array_equal(seg["category"], seg["id"] // 1000)
    assert np.array_equal(seg["is_thing"], seg["id"] % 1000 > 0)


def test_images_folders_and_video(tiny_model_dir, tmp_path):
    inputs = tmp_path / "in"
    write_image_rgb(inputs / "single.png", _image(37, 53))
    seq = inputs / "seq"
    for k in range(2):
        write_image_rgb(seq / f"frame_{k:03d}.png", _image(40, 48, k))
    frames = [_image(48, 64, 10 + k) for k in range(3)]
    _write_video(inputs / "clip.mp4", frames)
    out = tmp_path / "out"
    argv = ["predict", "--weights", str(tiny_model_dir), "--output", str(out), "--raw", "--batch-size", "2"]
    rc = main([*argv, "--input", str(inputs / "single.png"), str(seq), str(inputs / "clip.mp4")])
    assert rc == 0
    _check_frame(out, "single", (37, 53))
    _check_frame(out, "frame_000", (40, 48))
    _check_frame(out, "frame_001", (40, 48))
    for k in range(3):
        _check_frame(out, f"clip_{k:06d}", (48, 64))
    assert not (out / "clip_000003.npz").exists()


def test_vis_and_pointcloud(tiny_model_dir, tmp_path):
    write_image_rgb(tmp_path / "a.png", _image(32, 40))
    out = tmp_path / "out"
    rc = main(["predict", "--weights", str(tiny_model_dir), "--input", str(tmp_path / "a.png"),
               "--output", str(out), "--vis", "--pointcloud", "--intrinsics", "50,50,20,16"])  # fmt: skip
    assert rc == 0
    assert (out / "a_panoptic.png").is_file() and (out / "a_depth.png").is_file()
    assert (out / "a_vis.png").is_file() and (out / "a.ply").is_file()
    assert not (out / "a.npz").exists()


def test_bad_inputs_are_one_line_errors(tiny_model_dir, tmp_path, capsys):
    rc = main(["predict", "--weights", str(tiny_model_dir), "--input", str(tmp_path / "nope.png"),
               "--output", str(tmp_path / "o")])  # fmt: skip
    assert rc == 2
    assert "nope.png" in capsys.readouterr().err
    rc = main(
        ["predict", "--weights", str(tmp_path), "--input", str(tmp_path), "--output", str(tmp_path / "o")]
    )
    assert rc == 2


def test_device_option(tiny_model_dir, tmp_path, capsys):
    write_image_rgb(tmp_path / "a.png", _image(64, 96))
    args = ["predict", "--weights", str(tiny_model_dir), "--input", str(tmp_path / "a.png")]
    assert main([*args, "--output", str(tmp_path / "o"), "--device", "cpu"]) == 0
    assert (tmp_path / "o" / "a_panoptic.png").is_file()
    capsys.readouterr()
    assert main([*args, "--output", str(tmp_path / "o2"), "--device", "gpu0"]) == 2
    assert "unknown device 'gpu0'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main([*args, "--output", str(tmp_path / "o3"), "--device", "cuda:1"]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err


@pytest.mark.oracle
def test_predict_raw_on_oracle_case(standin_weights, small_case, tmp_path):
    """Runs in every clone: the case is bundled in tests/fixtures/oracle_small."""
    from tests.modeling.test_oracle_end_to_end import convert_case

    model_dir = convert_case(standin_weights, tmp_path)
    out = tmp_path / "pred"
    rc = main(["predict", "--weights", str(model_dir), "--input", str(small_case["dir"] / "input.png"),
               "--output", str(out), "--raw"])  # fmt: skip
    assert rc == 0
    a = small_case["arrays"]
    seg, cat = a["final_panoptic_2ch_segment_id"], a["final_panoptic_2ch_category"]
    expected = cat * 1000 + np.where(seg > 20, seg - 20, 0)
    raw = np.load(out / "input.npz")
    agree = raw["panoptic"] == expected
    assert agree.mean() >= 0.999
    assert np.abs(raw["depth"] - a["final_depth"])[agree].max() < 1e-3
    assert np.array_equal(read_panoptic_rgb(out / "input_panoptic.png"), raw["panoptic"])


def test_input_resolution(tmp_path):
    from panopticdepth.errors import DataError
    from panopticdepth.io.inputs import iter_frames, resolve_inputs

    write_image_rgb(tmp_path / "a" / "x.png", _image(4, 5))
    write_image_rgb(tmp_path / "b" / "x.png", _image(4, 5))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    items = resolve_inputs([str(tmp_path / "*" / "x.png")])
    assert [i.path.parent.name for i in items] == ["a", "b"]
    # The same stem twice: the second gets a suffix instead of overwriting the first.
    assert [f.stem for f in iter_frames(items)] == ["x", "x_1"]
    for bad in (tmp_path / "notes.txt", tmp_path / "empty", tmp_path / "missing.png", tmp_path / "*.jpg"):
        with pytest.raises(DataError, match=str(bad.name).replace("*", r"\*")):
            resolve_inputs([str(bad)])


def test_overrides_after_input_apply(tiny_model_dir, tmp_path):
    write_image_rgb(tmp_path / "a.png", _image(32, 40))
    out = tmp_path / "out"
    rc = main(["predict", "--weights", str(tiny_model_dir), "--output", str(out), "--raw", "--input",
               str(tmp_path / "a.png"), "model.inference.stuff_area_limit=100000000",
               "model.inference.combine_instance_threshold=2.0"])  # fmt: skip
    assert rc == 0
    raw = np.load(out / "a.npz")
    # No thing passes the combine gate and no stuff class has enough pixels: all VOID (32000).
    assert (raw["panoptic"] == 32000).all() and raw["segments"].size == 0


def _predict(model_dir, out, *inputs, extra=()):
    return main(["predict", "--weights", str(model_dir), "--output", str(out),
                 "--input", *map(str, inputs), *extra])  # fmt: skip


@pytest.mark.parametrize("batch", ["1", "4"])
def test_unreadable_file_does_not_stop_the_folder(tiny_model_dir, tmp_path, capsys, batch):
    folder = tmp_path / "in"
    write_image_rgb(folder / "a.png", _image(32, 40, 1))
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    write_image_rgb(folder / "c.png", _image(32, 40, 2))
    (folder / "d.jpg").write_bytes(b"")
    out = tmp_path / "out"
    assert _predict(tiny_model_dir, out, folder, extra=["--batch-size", batch]) == 1
    assert (out / "a_panoptic.png").is_file() and (out / "c_panoptic.png").is_file()
    assert not (out / "b_panoptic.png").exists()
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "2 input(s) failed, 2 frame(s) written" in err
    assert f"{folder / 'b.png'}: unreadable" in err and f"{folder / 'd.jpg'}: unreadable" in err
    assert _predict(tiny_model_dir, out, folder, extra=["--batch-size", batch, "--skip-errors"]) == 0


def test_all_inputs_failing_is_an_error_even_with_skip_errors(tiny_model_dir, tmp_path):
    (tmp_path / "b.png").write_bytes(b"junk")
    assert _predict(tiny_model_dir, tmp_path / "o", tmp_path / "b.png", extra=["--skip-errors"]) == 1


def test_failing_frame_in_a_batch_spares_the_others(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from panopticdepth.modeling.predictor import Predictor

    real = Predictor.predict_batch

    def fails_on_width_13(self, images, batch_size=None):
        if any(img.shape[1] == 13 for img in images):
            raise RuntimeError("shape trouble")
        return real(self, images, batch_size=batch_size)

    monkeypatch.setattr(Predictor, "predict_batch", fails_on_width_13)
    for name, w in (("a", 40), ("b", 13), ("c", 40)):
        write_image_rgb(tmp_path / "in" / f"{name}.png", _image(32, w))
    out = tmp_path / "out"
    assert _predict(tiny_model_dir, out, tmp_path / "in", extra=["--batch-size", "3"]) == 1
    assert sorted(p.name for p in out.glob("*_panoptic.png")) == ["a_panoptic.png", "c_panoptic.png"]
    assert f"{tmp_path / 'in' / 'b.png'}: RuntimeError: shape trouble" in capsys.readouterr().err


@pytest.mark.parametrize("target", ["file", "file/sub"])
def test_output_that_is_a_file_is_one_line_error(tiny_model_dir, tmp_path, capsys, target):
    (tmp_path / "file").write_text("x")
    write_image_rgb(tmp_path / "a.png", _image(16, 16))
    assert _predict(tiny_model_dir, tmp_path / target, tmp_path / "a.png") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(tmp_path / target) in err


def test_leftovers_of_a_killed_run_are_removed(tiny_model_dir, tmp_path):
    import subprocess
    import sys

    pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                             capture_output=True, text=True).stdout)  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f".a_panoptic.{pid}.x1y2z3w4.tmp.png"
    stale.write_bytes(b"half")
    write_image_rgb(tmp_path / "a.png", _image(16, 16))
    assert _predict(tiny_model_dir, out, tmp_path / "a.png") == 0
    assert not stale.exists()
    assert sorted(p.name for p in out.iterdir()) == ["a_depth.png", "a_panoptic.png"]


def test_semkitti_format_writes_semkitti_ids(tiny_model_dir, tmp_path):
    """A model in the SemKITTI label space: `--format semkitti` writes <prefix>_cat/_ins/_depth.png
    with SemKITTI class ids (the raw <prefix>.npz keeps train ids), unassigned pixels as class 19."""
    from panopticdepth.config import load_config, save_config
    from panopticdepth.config.labels import apply_label_space
    from panopticdepth.io.semkitti import read_semkitti_panoptic
    from panopticdepth.label_space import SEMKITTI

    model = tmp_path / "kitti_model"
    model.mkdir()
    (model / "model.safetensors").write_bytes((tiny_model_dir / "model.safetensors").read_bytes())
    cfg = load_config(tiny_model_dir / "config.yaml")
    apply_label_space(cfg, SEMKITTI)  # same class counts, SemKITTI classes
    save_config(cfg, model / "config.yaml")
    write_image_rgb(tmp_path / "000003_000007_leftImg8bit.png", _image(64, 96))
    out = tmp_path / "out"
    args = ["predict", "--weights", str(model), "--input", str(tmp_path / "000003_000007_leftImg8bit.png"),
            "--output", str(out), "--format", "semkitti", "--raw"]  # fmt: skip
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["000003_000007_cat.png", "000003_000007_depth.png", "000003_000007_ins.png", "000003_000007.npz"]
    )
    ids = read_semkitti_panoptic(out / "000003_000007_cat.png", out / "000003_000007_ins.png")
    train = np.load(out / "000003_000007.npz")["panoptic"]
    expected_cat = np.where(train == 32000, 19, SEMKITTI.train_to_id[np.clip(train // 1000, 0, 18)])
    assert np.array_equal(ids // 2**20, expected_cat)
    assert np.array_equal(ids % 2**20, np.where(train == 32000, 0, train % 1000))
