"""benchmarks/gpu_check.py in its CPU smoke mode: the GPU script's code path stays runnable."""

from __future__ import annotations

from . import load_benchmark


def test_gpu_check_smoke_on_cpu(tmp_path):
    module = load_benchmark("gpu_check")
    report = module.main(["--device", "cpu", "--smoke", "--out", str(tmp_path / "report.md")])
    lines = report.splitlines()
    train_rows = [x for x in lines if x.startswith(("| none |", "| bf16 | ok"))]
    assert len(train_rows) == 2 and all("| ok | True |" in x for x in train_rows), report
    assert any(x.startswith("| fp32 |") for x in lines), report  # the inference table
    assert '"status": "ok"' in lines[-1], report
    assert (tmp_path / "report.md").read_text().strip() == report.strip()
