"""benchmarks/gpu_check.py in its CPU smoke mode: the GPU script's code path stays runnable."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def test_gpu_check_smoke_on_cpu(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = module.main(["--device", "cpu", "--smoke", "--out", str(tmp_path / "report.md")])
    lines = report.splitlines()
    train_rows = [x for x in lines if x.startswith(("| none |", "| bf16 | ok"))]
    assert len(train_rows) == 2 and all("| ok | True |" in x for x in train_rows), report
    assert any(x.startswith("| fp32 |") for x in lines), report  # the inference table
    assert '"status": "ok"' in lines[-1], report
    assert (tmp_path / "report.md").read_text().strip() == report.strip()
