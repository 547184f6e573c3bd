"""benchmarks/ablation.py (Table 3 on synthetic data): variant switches and a tiny end-to-end run."""

from __future__ import annotations

import json

import pytest

from . import load_benchmark


@pytest.fixture(scope="module")
def ablation():
    return load_benchmark("ablation")


def test_variants_set_the_papers_switches(ablation, tmp_path):
    from panopticdepth.demo import DemoSettings, demo_config

    expect = {  # (mode, normalization, instance loss active)
        "A": ("pixel", "none", False),
        "B": ("instance", "none", False),
        "C": ("instance", "T1", False),
        "D": ("instance", "T2", False),
        "E": ("instance", "T1", True),
        "F": ("instance", "T2", True),
    }
    for v, (mode, norm, loss) in expect.items():
        cfg = demo_config(DemoSettings(overrides=ablation.variant_overrides(v, 2)), tmp_path)
        d = cfg.model.depth
        assert (d.mode, d.normalization, cfg.train.loss.instance_depth_loss) == (mode, norm, loss), v
        assert cfg.train.seed == 2 and cfg.data.seed == 2


def test_mean_std(ablation):
    assert ablation.mean_std([1.0, 3.0]) == (2.0, pytest.approx(2**0.5))
    assert ablation.mean_std([4.0]) == (4.0, 0.0)
    assert ablation.mean_std([float("nan"), 2.0]) == (2.0, 0.0)


def test_tiny_run_end_to_end(ablation, tmp_path, capsys, monkeypatch):
    out, report_path = tmp_path / "abl", tmp_path / "r.json"
    argv = ["--iterations", "2", "--seeds", "1", "--variants", "A,F", "--size", "64x128",
            "--num-train", "4", "--num-val", "2", "--out", str(out), "--json", str(report_path)]  # fmt: skip
    report = ablation.main(argv)
    text = capsys.readouterr().out
    assert "| A pixel-wise depth |" in text and "| F T2 + instance loss (mean depth) |" in text
    assert [(r["variant"], r["iterations"]) for r in report["runs"]] == [("A", 2), ("F", 2)]
    for r in report["runs"]:
        assert set(r["metrics"]) >= {"DPQ", "DPQ_th", "DPQ_st", "PQ", "AbsRel", "EdgeAbsRel", "EdgeRMSE"}
        assert r["boundary_depth"]["band"] == 3
    saved = json.loads(report_path.read_text())
    assert set(saved["table"]) == {"A", "F"} and saved["settings"]["train_depth"] == "stereo"
    # A rerun with the same settings reuses the finished runs instead of training again.
    monkeypatch.setattr(ablation, "train_and_evaluate", lambda *a, **k: pytest.fail("trained again"))
    again = ablation.main(argv)
    assert again["runs"] == report["runs"]


def test_first_stage_is_shared_by_the_variants_of_a_seed(ablation, tmp_path, monkeypatch):
    """With --first-stage, each seed trains one panoptic-only half-size stage, and every variant of
    that seed starts from its model folder (so the variants differ only in how they learn depth)."""
    import panopticdepth.demo as demo

    calls = []
    real = demo.train_stage

    def recording(cfg, out_dir, iterations, **kw):
        calls.append((out_dir.parent.name, cfg.model.depth.enabled, iterations, kw.get("weights")))
        return real(cfg, out_dir, iterations, **kw)

    monkeypatch.setattr(demo, "train_stage", recording)
    out = str(tmp_path / "abl")
    argv = ["--iterations", "2", "--first-stage", "3", "--seeds", "1", "--variants", "A,F",
            "--size", "64x128", "--num-train", "4", "--num-val", "2", "--out", out]  # fmt: skip
    report = ablation.main(argv)
    stage1 = [c for c in calls if c[0] == "stage1_seed0"]
    assert [(c[1], c[2], c[3]) for c in stage1] == [(False, 3, None)]  # once, no depth, 3 steps
    model_dir = json.loads((tmp_path / "abl/runs/stage1_seed0/stage1.json").read_text())["model_dir"]
    assert [(c[0], c[1], c[2], str(c[3])) for c in calls[1:]] == [
        ("A_seed0", True, 2, model_dir),
        ("F_seed0", True, 2, model_dir),
    ]
    assert report["settings"]["first_stage"] == 3
    # A rerun with more stage-2 steps trains the variants again but reuses the first stage.
    calls.clear()
    ablation.main([*argv[:1], "3", *argv[2:]])
    assert [c[0] for c in calls] == ["A_seed0", "F_seed0"]
