"""Summing state vectors (what all_reduce does) equals one pass over all sequences."""

from __future__ import annotations

import numpy as np
import pytest

from panopticdepth.evaluation import DPSEvaluator
from panopticdepth.evaluation.distributed import all_reduce_evaluator

from .test_dpq_reference import CITY, random_frames


def _feed(ev, frames):
    for seq, gt, pred, gd, pdp in frames:
        ev.update(
            pred.reshape(10, 14), pdp.reshape(10, 14), gt.reshape(10, 14), gd.reshape(10, 14), sequence=seq
        )
    return ev


def test_state_vector_sum_equals_single_pass():
    frames = random_frames(np.random.default_rng(3), CITY, n_frames=3, n_seq=4)
    whole = _feed(DPSEvaluator(frames=(1, 2)), frames)
    ranks = [_feed(DPSEvaluator(frames=(1, 2)), [f for f in frames if int(f[0]) % 2 == r]) for r in range(2)]
    reduced = DPSEvaluator(frames=(1, 2))
    reduced.load_state_vector(ranks[0].state_vector() + ranks[1].state_vector())
    got, want = reduced.summary(), whole.summary()
    for key, run in want["runs"].items():
        assert got["runs"][key]["averages"] == pytest.approx(run["averages"], abs=1e-12)
        assert got["runs"][key]["abs_rel_internal"] == pytest.approx(run["abs_rel_internal"], abs=1e-12)
    assert got["depth"] == pytest.approx(want["depth"])
    assert got["num_frames"] == want["num_frames"]


def test_all_reduce_single_rank(tmp_path):
    import torch.distributed as dist

    frames = random_frames(np.random.default_rng(4), CITY, n_frames=2, n_seq=1)
    ev = _feed(DPSEvaluator(), frames)
    before = ev.summary()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        all_reduce_evaluator(ev)
    finally:
        dist.destroy_process_group()
    for lam, vals in before["dpq"].items():
        assert ev.summary()["dpq"][lam] == pytest.approx(vals, abs=1e-12)
