"""Checkpoint folders: model dirs with training state, pruning, partial loads, RNG round trip."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from panopticdepth.config import Config
from panopticdepth.errors import CheckpointError
from panopticdepth.training.checkpointer import (
    DEPTH_MODULE_PREFIXES,
    Checkpointer,
    load_model_weights,
    rng_state,
    set_rng_state,
)


class _Net(nn.Module):
    def __init__(self, depth: bool):
        super().__init__()
        self.backbone = nn.Conv2d(3, 4, 3)
        self.depth_encoder = nn.Conv2d(4, 2, 1) if depth else None
        self.depth_kernel_head = nn.Linear(4, 3) if depth else None


def test_ps_weights_initialise_a_dps_model(tmp_path):
    ps = _Net(depth=False)
    Checkpointer(tmp_path).save_final(ps, Config())
    dps = _Net(depth=True)
    before = dps.depth_encoder.weight.detach().clone()
    left = load_model_weights(dps, tmp_path / "model", allow_missing=DEPTH_MODULE_PREFIXES)
    assert sorted(left) == sorted(
        ["depth_encoder.weight", "depth_encoder.bias", "depth_kernel_head.weight", "depth_kernel_head.bias"]
    )
    assert torch.equal(dps.backbone.weight, ps.backbone.weight)
    assert torch.equal(dps.depth_encoder.weight, before)
    with pytest.raises(CheckpointError, match="missing keys.*depth_encoder.weight"):
        load_model_weights(_Net(depth=True), tmp_path / "model")  # strict without the allowance
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model_weights(ps, tmp_path / "nowhere")


def test_save_prune_latest_and_state(tmp_path):
    ck = Checkpointer(tmp_path, keep=2)
    net = _Net(depth=False)
    for it in (10, 20, 30):
        ck.save(it, net, Config(), {"iteration": it, "rng": [rng_state()]})
    assert [p.name for p in ck.checkpoints()] == ["iter_0000020", "iter_0000030"]
    assert ck.latest().name == "iter_0000030"
    assert Checkpointer.load_state(ck.latest())["iteration"] == 30
    # an interrupted write (temp folder) is never picked up; a stale marker falls back to a scan
    (ck.dir / ".iter_0000040.tmp-1").mkdir()
    (ck.dir / "last_checkpoint").write_text("iter_0000099\n")
    assert ck.latest().name == "iter_0000030"
    # saving the same iteration again replaces it atomically
    ck.save(30, net, Config(), {"iteration": 31})
    assert Checkpointer.load_state(ck.latest())["iteration"] == 31


def test_rng_round_trip_through_a_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    ck = Checkpointer(tmp_path)
    ck.save(1, _Net(False), Config(), {"rng": [rng_state()]})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    set_rng_state(Checkpointer.load_state(ck.latest())["rng"][0])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
