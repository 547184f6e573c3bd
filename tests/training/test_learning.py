"""Learning check (slow): the small CPU config learns the synthetic scenes within a few hundred steps.

Total loss must fall by at least half (mean of the first vs the last 20 logged iterations) and PQ on
held-out scenes (a val split written with another seed, never trained on) must rise well above zero.
Data from the test suite's synthetic generator.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from panopticdepth.config import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ITERS = int(os.environ.get("PANOPTICDEPTH_LEARNING_ITERS", "300"))


@pytest.mark.slow
def test_small_config_learns_synthetic_scenes(tmp_path):
    from panopticdepth.data.build import build_dataset
    from panopticdepth.data.synthetic.writer import write_dataset
    from panopticdepth.training.engine import Trainer, evaluate_model

    write_dataset(tmp_path / "data", "train", 24, height=128, width=256, seed=0)
    write_dataset(tmp_path / "data", "val", 12, height=128, width=256, seed=1)
    cfg = load_config(
        os.path.join(REPO, "configs", "synthetic", "small_cpu.yaml"),
        [
            f"data.root={tmp_path / 'data'}",
            "data.num_workers=0",
            f"solver.max_iter={ITERS}",
            "train.log_period=1",
            "train.checkpoint_period=0",
            "train.tensorboard=false",
        ],
    )
    torch.set_num_threads(int(os.environ.get("PANOPTICDEPTH_TEST_THREADS", "1")))
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.train()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == ITERS
    first = sum(r["total_loss"] for r in rows[:20]) / 20
    last = sum(r["total_loss"] for r in rows[-20:]) / 20
    assert last <= 0.5 * first, (first, last)
    held_out = build_dataset(cfg.data, cfg.data.val_split, train=False)
    assert len(held_out) == 12
    summary = evaluate_model(trainer.model, cfg, held_out)
    # Lower than the old bar on the training images (10): unseen scenes generalise less at 300 steps.
    assert summary["pq"]["pq"] > 5.0, summary["pq"]
