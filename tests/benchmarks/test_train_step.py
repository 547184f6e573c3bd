"""benchmarks/train_step.py: variant names map to the config switches; --curve runs and prints."""

from __future__ import annotations

import pytest

from . import load_benchmark


def test_variant_overrides():
    mod = load_benchmark("train_step")
    assert mod.variant_overrides("fp32") == ["solver.amp=none"]
    assert mod.variant_overrides("bf16+cl+fused") == [
        "solver.amp=bf16",
        "train.channels_last=true",
        "solver.fused_optimizer=true",
    ]
    with pytest.raises(SystemExit, match="fp16"):
        mod.variant_overrides("fp16")


def test_curve_smoke(capsys):
    mod = load_benchmark("train_step")
    mod.CASES["tiny"] = ("configs/synthetic/small_cpu.yaml", [], 64, 128, 2)
    mod.curve("tiny", ["fp32", "bf16+cl"], iters=2, threads=1, every=1, pool=3)
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if line.lstrip().startswith(("1-1", "2-2"))]
    assert len(rows) == 2 and all("%" in r for r in rows), out
