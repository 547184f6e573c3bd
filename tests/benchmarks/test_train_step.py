"""benchmarks/train_step.py: variant names map to the config switches; --curve runs and prints."""

from __future__ import annotations

import json
import math

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
    assert mod.variant_overrides("bf16+dense") == ["solver.amp=bf16"]  # dense: the depth loss path only
    with pytest.raises(SystemExit, match="fp16"):
        mod.variant_overrides("fp16")


def test_curve_smoke(capsys, tmp_path):
    mod = load_benchmark("train_step")
    mod.CASES["tiny"] = ("configs/synthetic/small_cpu.yaml", [], 64, 128, 2)
    dump = tmp_path / "steps.json"
    mod.curve("tiny", ["fp32", "bf16+cl"], iters=2, threads=1, every=1, pool=3, seed=1, dump=str(dump))
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if line.lstrip().startswith(("1-1", "2-2"))]
    assert len(rows) == 2 and all("%" in r for r in rows), out
    steps = json.loads(dump.read_text())["steps"]
    assert set(steps) == {"fp32", "bf16+cl"} and all(len(v) == 2 for v in steps.values())
    first = steps["fp32"][0]
    assert "loss_depth" in first and all(math.isfinite(x) for x in first.values())
    total = float(out[[i for i, line in enumerate(out) if line.lstrip().startswith("1-1")][0]].split()[1])
    assert sum(first.values()) == pytest.approx(total, rel=1e-3)  # the printed window mean is these terms


def test_compare_with_another_commit(capsys):
    """`REV@fp32` steps the package of commit REV in a child process, in turns with the others,
    and removes its temporary worktree afterwards."""
    import subprocess

    mod = load_benchmark("train_step")
    head = subprocess.run(["git", "-C", str(mod.REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout: no other commit to compare with")
    mod.CASES["tiny"] = ("configs/synthetic/small_cpu.yaml", [], 64, 128, 2)
    mod.compare("tiny", ["HEAD@fp32", "fp32"], iters=2, threads=1)
    out = capsys.readouterr().out
    package = [line for line in out.splitlines() if "HEAD@fp32: the package at" in line]
    assert package and "train_step_HEAD_" in package[0], out  # the worktree's package, not this one
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("HEAD@", "fp32"))}
    assert set(rows) == {"HEAD@fp32", "fp32"}, out
    assert all(float(r[1]) > 0 for r in rows.values())
    listed = subprocess.run(["git", "-C", str(mod.REPO), "worktree", "list"], capture_output=True, text=True)
    assert "train_step_HEAD_" not in listed.stdout
