"""Learning check (slow): the full model with a Swin-T backbone, trained from random init on the
synthetic scenes at 128x256, reaches clearly non-zero PQ and DPQ on held-out scenes.

Settings: the small CPU config's heads (64 channels, plain convs) and LR (1e-3) on Swin-T, AdamW
as in the Cityscapes Swin configs (decoupled decay 0.05, none on norms and position biases), batch
2 (a Swin-T step costs ~2.5x an R-18 one), no stochastic depth (nothing pretrained to protect, few
iterations). A randomly initialised transformer learns more slowly than the R-18 config: measured
held-out PQ 5.7 / DPQ 5.1 after 300 iterations (5e-4 and 250 iterations: PQ 1.8 / DPQ 3.1), hence
thresholds of 3 / 2.5, well above a random model's ~0. Figures: benchmarks/README.md.

    PANOPTICDEPTH_SWIN_LEARNING_ITERS=300 pytest -m slow tests/training/test_learning_swin.py -n 0 -s
"""

from __future__ import annotations

import json
import os
import time

import pytest
import torch

from panopticdepth.config import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ITERS = int(os.environ.get("PANOPTICDEPTH_SWIN_LEARNING_ITERS", "300"))


@pytest.mark.slow
def test_swin_t_learns_synthetic_scenes(tmp_path):
    from panopticdepth.data.build import build_dataset
    from panopticdepth.data.synthetic.writer import write_dataset
    from panopticdepth.training.engine import Trainer, evaluate_model

    write_dataset(tmp_path / "data", "train", 24, height=128, width=256, seed=0)
    write_dataset(tmp_path / "data", "val", 12, height=128, width=256, seed=1_000_003)
    cfg = load_config(
        os.path.join(REPO, "configs", "synthetic", "small_cpu.yaml"),
        [
            "model.backbone.name=swin_t",
            "model.backbone.drop_path_rate=0.0",
            # back to "auto": the backbone's own convention (RGB, ImageNet mean/std)
            "model.input_format=auto",
            "model.pixel_mean=[]",
            "model.pixel_std=[]",
            "solver.optimizer=adamw",
            "solver.base_lr=1e-3",
            "solver.weight_decay=0.05",
            "solver.weight_decay_bias=0.05",
            "solver.weight_decay_norm=0.0",
            "solver.weight_decay_norm_bias=0.0",
            "solver.weight_decay_embed=0.0",
            "solver.ims_per_batch=2",
            "solver.warmup_iters=25",
            f"data.root={tmp_path / 'data'}",
            "data.num_workers=0",
            f"solver.max_iter={ITERS}",
            "train.log_period=1",
            "train.checkpoint_period=0",
            "train.tensorboard=false",
        ],
    )
    assert cfg.model.input_normalization()[0] == "RGB"
    torch.set_num_threads(int(os.environ.get("PANOPTICDEPTH_TEST_THREADS", "1")))
    cpu0 = time.process_time()
    trainer = Trainer(cfg, tmp_path / "run")
    trainer.train()
    train_cpu = time.process_time() - cpu0
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == ITERS
    first = sum(r["total_loss"] for r in rows[:20]) / 20
    last = sum(r["total_loss"] for r in rows[-20:]) / 20
    val = build_dataset(cfg.data, "val", train=False)
    summary = evaluate_model(trainer.model, cfg, val)
    pq = summary["pq"]["pq"]
    dpq = summary["dpq"]["mean"]["dpq"]
    pq_th, pq_st = summary["pq"]["pq_th"], summary["pq"]["pq_st"]
    print(
        f"\nSwin-T learning check: {ITERS} iterations, train CPU {train_cpu:.0f} s, loss {first:.2f} -> "
        f"{last:.2f}, held-out PQ {pq:.1f} (th {pq_th:.1f} / st {pq_st:.1f}), DPQ {dpq:.1f}"
    )
    assert last <= 0.6 * first, (first, last)
    assert pq > 3.0, summary["pq"]
    assert dpq > 2.5, summary["dpq"]
