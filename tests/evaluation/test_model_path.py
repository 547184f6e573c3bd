"""`evaluate --weights W --data DIR`: the inference path, with fakes for the model that have its interface.

The real network is not needed to check this command's plumbing: a fake predictor returns the
ground truth (or a class-swapped copy), so the expected PQ is known analytically.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from panopticdepth.cli.main import main
from panopticdepth.config import Config


def _samples(n=3, h=16, w=24):
    out = []
    for i in range(n):
        pan = np.zeros((h, w), np.int64)  # road
        pan[:5] = 10000  # sky
        pan[8:12, 3:9] = 13001  # car
        pan[9:14, 14:18] = 11001 + i  # person
        pan[-1] = 32000
        depth = np.linspace(5, 40, h * w, dtype=np.float32).reshape(h, w)
        depth[:5] = 0
        out.append({
            "image": torch.zeros(3, h, w, dtype=torch.uint8),
            "panoptic": torch.from_numpy(pan),
            "depth": torch.from_numpy(depth),
            "meta": {"sequence": "000000", "frame": i, "image_id": f"f{i}"},
        })  # fmt: skip
    return out


class _FakePredictor:
    def __init__(self, samples, swap_person=False, depth_scale=1.0):
        self.samples, self.i, self.swap, self.scale = samples, 0, swap_person, depth_scale

    def predict(self, image):
        s = self.samples[self.i]
        self.i += 1
        pan = s["panoptic"].clone()
        pan[pan == 32000] = 0  # the model labels every pixel
        if self.swap:
            pan[pan // 1000 == 11] = 12001  # person -> rider
        return SimpleNamespace(panoptic=pan, depth=s["depth"] * self.scale)


@pytest.mark.parametrize(("swap", "scale"), [(False, 1.0), (True, 1.0), (False, 1.3)])
def test_model_path(monkeypatch, tmp_path, swap, scale):
    import panopticdepth.checkpoint.model_dir as model_dir
    import panopticdepth.data.build as build
    import panopticdepth.modeling.predictor as predictor

    samples = _samples()
    cfg = Config()
    monkeypatch.setattr(model_dir, "load_model_dir", lambda *a, **k: (None, cfg))
    monkeypatch.setattr(build, "build_dataset", lambda data_cfg, split, train, **kw: samples)
    monkeypatch.setattr(predictor, "Predictor", lambda model, c, **kw: _FakePredictor(samples, swap, scale))
    out = tmp_path / "r.json"
    args = ["evaluate", "--weights", str(tmp_path), "--data", str(tmp_path), "--json", str(out)]
    assert main([*args, "--boundary-band", "2"]) == 0
    got = json.loads(out.read_text())
    assert (tmp_path / "r.config.yaml").is_file()  # the resolved config beside the numbers
    assert got["boundary_depth"]["band"] == 2 and got["boundary_depth"]["num_pixels"] > 0
    classes = {c["name"]: c for c in got["classes"]}
    # road, sky, car: perfect; person: perfect or all wrong (then a rider FP each frame).
    present = 4 if not swap else 3
    assert got["pq"]["pq"] == pytest.approx(100 * present / 19)
    if swap:
        assert (classes["person"]["fn"], classes["rider"]["fp"]) == (3.0, 3.0)
    # A 30 % depth over-estimate fails every checked pixel at lambda 0.25 and 0.1, none at 0.5.
    expected_05 = got["pq"]["pq"]
    assert got["dpq"]["0.5"]["dpq"] == pytest.approx(expected_05)
    if scale != 1.0:
        assert got["dpq"]["0.1"]["dpq"] < got["pq"]["pq"]
        assert got["depth"]["abs_rel"] == pytest.approx(0.3, abs=0.01)
    else:
        assert got["dpq"]["mean"]["dpq"] == pytest.approx(got["pq"]["pq"])
        assert got["depth"]["abs_rel"] < 0.01  # only the 1/256 m truncation of the written depth


def test_model_path_with_real_pieces(tmp_path):
    """A real (random-init, tiny) model folder and synthetic data, through the CLI."""
    from panopticdepth.checkpoint.model_dir import save_model_dir
    from panopticdepth.config import load_config
    from panopticdepth.data.synthetic import write_dataset
    from panopticdepth.modeling import build_model

    write_dataset(tmp_path / "data", "val", 2, height=64, width=128, seed=3)
    cfg = load_config(
        None,
        [
            "model.backbone.name=resnet18", "model.backbone.stride_in_1x1=false", "model.backbone.norm=BN",
            "model.fpn.out_channels=32", "model.heads.convs_dim=32", "model.heads.num_convs=1",
            "model.heads.norm_groups=8", "model.heads.position_deform=false",
            "model.heads.encoder_deform=false", "model.heads.depth_kernel_deform=false",
            "data.dataset=synthetic",
        ],
    )  # fmt: skip
    torch.manual_seed(0)
    save_model_dir(tmp_path / "model", build_model(cfg.model).eval(), cfg)
    out = tmp_path / "eval.json"
    args = [
        "evaluate",
        "--weights",
        str(tmp_path / "model"),
        "--data",
        str(tmp_path / "data"),
        "--json",
        str(out),
    ]
    assert main(args) == 0
    got = json.loads(out.read_text())
    assert 0.0 <= got["pq"]["pq"] <= 100.0
    assert set(got["dpq"]) >= {"0.5", "0.25", "0.1", "mean"}
    saved = load_config(tmp_path / "eval.config.yaml")
    assert saved.model.backbone.name == "resnet18"
