"""Learning check (slow) on synthetic SemKITTI-style data: sparse LiDAR-line labels, the SemKITTI
label space and protocol, evaluated on held-out scenes with DVPQ windows k = 1 and 5.

The small CPU config trains on `synth --format semkitti` scenes (labels and depth only on scan
lines) with `train.loss.labeled_pixels_only`, then `evaluate --weights` scores a held-out split
(another seed) under the SemKITTI protocol. PQ and DPQ must be clearly above zero. Set
PANOPTICDEPTH_LEARNING_JSON to keep the summary (benchmarks/README.md records one run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ITERS = int(os.environ.get("PANOPTICDEPTH_LEARNING_ITERS", "300"))
SIZE = "128x412"  # KITTI's aspect ratio at a third of its height


def _cli(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": REPO}
    subprocess.run([sys.executable, "-m", "panopticdepth", *args], check=True, cwd=REPO, env=env)


@pytest.mark.slow
def test_small_config_learns_synthetic_semkitti(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    _cli("synth", "--format", "semkitti", "--out", str(data), "--num", "48", "--size", SIZE, "--seed", "0")
    _cli("synth", "--format", "semkitti", "--out", str(data), "--split", "val", "--num", "12", "--size", SIZE,
         "--seed", "1")  # fmt: skip
    _cli(
        "train", "--config", "configs/synthetic/small_cpu_semkitti.yaml", "--output", str(run),
        f"data.root={data}", "data.num_workers=0", f"solver.max_iter={ITERS}", "train.log_period=10",
        "train.checkpoint_period=0", "train.tensorboard=false", "train.eval_period=0",
    )  # fmt: skip
    labels = (run / "model" / "config.yaml").read_text()
    assert "name: semkitti" in labels and "protocol: semkitti-dps" in labels
    out = tmp_path / "eval.json"
    _cli("evaluate", "--weights", str(run / "model"), "--data", str(data), "--split", "val",
         "--frames", "1,5", "--json", str(out))  # fmt: skip
    summary = json.loads(out.read_text())
    keep = os.environ.get("PANOPTICDEPTH_LEARNING_JSON")
    if keep:
        with open(keep, "w") as f:
            json.dump(summary, f, indent=1)
    assert summary["dataset"] == "semkitti-dps" and summary["window_sizes"] == [1, 5]
    assert summary["pq"]["pq"] > 5.0, summary["pq"]  # k = 1
    assert summary["dpq"]["mean"]["dpq"] > 3.0, summary["dpq"]["mean"]
    assert summary["mean_over_lambdas_k=5"]["dvpq"] > 0.0, summary["mean_over_lambdas_k=5"]
