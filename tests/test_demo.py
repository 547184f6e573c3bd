"""`panopticdepth demo` end to end with a tiny budget: data, training, metrics, pictures, PLY."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

REQUIRED = [
    "panopticdepth.data.synthetic",
    "panopticdepth.data.build",
    "panopticdepth.modeling.network",
    "panopticdepth.modeling.predictor",
    "panopticdepth.training.engine",
    "panopticdepth.training.losses",
    "panopticdepth.training.targets",
    "panopticdepth.evaluation",
    "panopticdepth.checkpoint.model_dir",
]

# A very small network so the test stays in seconds; the pipeline is what is under test.
TINY = [
    "model.backbone.name=resnet18",
    "model.backbone.stride_in_1x1=false",
    "model.fpn.out_channels=32",
    "model.heads.convs_dim=32",
    "model.heads.num_convs=1",
    "model.heads.norm_groups=8",
    "model.heads.position_deform=false",
    "model.heads.kernel_deform=false",
    "model.heads.encoder_deform=false",
    "model.heads.depth_kernel_deform=false",
    "model.depth.kernel_dim=8",
    "solver.ims_per_batch=2",
    "data.num_workers=0",
    "train.tensorboard=false",
]


def _missing() -> list[str]:
    out = []
    for name in REQUIRED:
        try:
            if importlib.util.find_spec(name) is None:
                out.append(name)
        except ModuleNotFoundError:
            out.append(name)
    return out


def test_demo_tiny_budget_end_to_end(tmp_path, capsys) -> None:
    missing = _missing()
    if missing:
        pytest.skip(f"demo dependencies not built yet: {', '.join(missing)}")
    from plyfile import PlyData

    from panopticdepth.cli.main import main

    out = tmp_path / "demo"
    argv = ["demo", "--output", str(out), "--iterations", "2", "--num-train", "4", "--num-val", "2"]
    argv += ["--size", "64x128", "--num-vis", "1", *TINY]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "PQ" in printed and "DPQ" in printed and "AbsRel" in printed

    summary = json.loads((out / "metrics.json").read_text())
    # The shape of `evaluate --json` (contract 7), percentages in [0, 100].
    for key in ("pq", "pq_th", "pq_st"):
        assert 0.0 <= summary["pq"][key] <= 100.0
    for lam in ("0.5", "0.25", "0.1", "mean"):
        for key in ("dpq", "dpq_th", "dpq_st"):
            assert 0.0 <= summary["dpq"][lam][key] <= 100.0
    assert len(summary["classes"]) == 19
    depth = summary["depth"]
    assert math.isfinite(depth["rmse"]) and depth["rmse"] >= 0.0
    assert math.isfinite(depth["abs_rel"]) and depth["abs_rel"] >= 0.0

    run = json.loads((out / "demo_run.json").read_text())
    assert run["iterations"] == 2
    assert (out / "train" / "model" / "model.safetensors").is_file()
    assert len(list((out / "data" / "video_sequence" / "train").glob("*_leftImg8bit.png"))) == 4
    assert len(list((out / "data" / "video_sequence" / "val").glob("*_leftImg8bit.png"))) == 2
    panels = list((out / "vis").glob("*_panel.png"))
    assert len(panels) == 1 and panels[0].stat().st_size > 1000
    assert len(list((out / "vis").glob("*_depth.png"))) == 1
    assert len(list((out / "vis").glob("*_cloud.png"))) == 1
    plys = list((out / "pointclouds").glob("*.ply"))
    assert len(plys) == 1
    vertex = PlyData.read(str(plys[0]))["vertex"]
    assert {"x", "y", "z", "red", "green", "blue", "class", "instance"} <= set(vertex.data.dtype.names)
