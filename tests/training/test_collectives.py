"""Every tensor the engine hands to a collective lives on the rank's training device.

Runs the real small network, targets and losses for a few iterations as rank 0 of a fake 2-rank
group (tests/training/collective_check.py), with a checkpoint, a sharded periodic evaluation and
a resume, and checks every collective's tensors. The harness itself is shown to catch `.cpu()`.
"""

from __future__ import annotations

import pytest
import torch

from panopticdepth.config import load_config
from panopticdepth.training.distributed import DistInfo, all_reduce_sum
from panopticdepth.training.engine import Trainer
from tests.training.collective_check import FakeCollectives, HostTensorTracker
from tests.training.tiny_run import SMALL_CONFIG, TINY_RUN

TINY = ["solver.max_iter=3", *TINY_RUN]


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    from panopticdepth.data.synthetic.writer import write_dataset

    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, "train", 2, height=64, width=128, seed=3)
    write_dataset(root, "val", 2, height=64, width=128, seed=4)
    return root


def _checked(device: torch.device):
    tracker = HostTensorTracker()
    return tracker, FakeCollectives(tracker, device)


def test_harness_catches_a_host_copy_before_a_collective():
    info = DistInfo(rank=0, world_size=2, device=torch.device("cpu"))
    tracker, fake = _checked(info.device)
    with fake.patches(), tracker:
        on_device = torch.ones(3, device=info.device) * 2
        assert all_reduce_sum(on_device.clone(), info).tolist() == [4.0, 4.0, 4.0]
        with pytest.raises(AssertionError, match="host tensor"):
            all_reduce_sum(on_device.cpu(), info)  # the defect this harness exists for
        with pytest.raises(AssertionError, match="host tensor"):
            all_reduce_sum(torch.cat([on_device, torch.tensor([0.0, 1.0])]), info)
        moved = torch.tensor([1.0]).to(info.device)
        assert all_reduce_sum(moved, info).tolist() == [2.0]


def test_engine_collectives_stay_on_the_device(synth_root, tmp_path):
    cfg = load_config(SMALL_CONFIG, [f"data.root={synth_root}", *TINY])
    info = DistInfo(rank=0, world_size=2, device=torch.device("cpu"))
    tracker, fake = _checked(info.device)
    with fake.patches(), tracker:
        result = Trainer(cfg, tmp_path / "run", dist_info=info).train()
        assert result.iteration == 3
        resumed = Trainer(cfg, tmp_path / "run", dist_info=info, resume=True)
        assert resumed.start_iter == 3
    assert fake.calls.count("all_reduce") >= 3 + 2  # one per step, plus the evaluations' merges
    assert "all_gather_object" in fake.calls and "broadcast_object_list" in fake.calls
    assert (tmp_path / "run" / "eval_metrics.jsonl").is_file()
