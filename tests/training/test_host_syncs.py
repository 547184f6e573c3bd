"""How often the host waits for the device: at most 10 times per training step whatever the batch
size, and a fixed number per image in post-processing whatever the number of instances.

Counted with `utils/host_sync.HostSyncCounter` on the CPU (the same calls wait on a GPU).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from panopticdepth.config import load_config
from panopticdepth.modeling import build_model
from panopticdepth.modeling.postprocess import postprocess
from panopticdepth.modeling.preprocess import preprocess
from panopticdepth.training.distributed import DistInfo
from panopticdepth.training.engine import Trainer
from panopticdepth.utils.host_sync import HostSyncCounter, is_host_sync

REPO = Path(__file__).resolve().parents[2]
NARROW = [
    "model.backbone.name=resnet18",
    "model.fpn.out_channels=16",
    "model.heads.convs_dim=16",
    "model.heads.norm_groups=4",
    "model.heads.num_convs=1",
]


def test_counter_sees_the_usual_waits():
    t = torch.arange(6.0)
    with HostSyncCounter() as c:
        t.sum().item()
        int(t[0])
        t[t > 2]
        torch.nonzero(t)
        t.tolist()
        t * 2  # no wait
        t[torch.tensor([1, 2])]  # integer index: no wait
    assert c.count == 5 and c.by_op["item"] == 1
    assert is_host_sync(torch.Tensor.to, (t, "cpu"), {})


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    from panopticdepth.data.synthetic.writer import write_dataset

    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, "train", 4, height=64, width=128, seed=5)
    return root


@pytest.mark.parametrize("batch", [1, 2, 4])
def test_training_step_waits_at_most_ten_times(synth_root, tmp_path, batch, monkeypatch):
    # what an accelerator waits for: the CPU's depth loss compacts its pixels (a wait that is free there)
    monkeypatch.setattr("panopticdepth.training.losses.COMPACT_DEPTH_DEVICES", ())
    cfg = load_config(
        None,
        [f"data.root={synth_root}", "data.dataset=synthetic", "data.num_workers=0",
         f"solver.ims_per_batch={batch}", "train.device=cpu", "train.tensorboard=false",
         "model.backbone.freeze_at=0", "model.heads.deform_impl=torchvision", *NARROW],
    )  # fmt: skip
    trainer = Trainer(cfg, tmp_path, dist_info=DistInfo(world_size=1))
    data = iter(trainer.build_loader(0))
    samples = next(data)
    assert sum(int(s["instance_masks"].shape[0]) for s in samples) > 0  # things in the batch
    replay = iter([samples])
    with HostSyncCounter() as counter:
        trainer._step(replay, lambda: 0.0)
    assert counter.count <= 10, dict(counter.by_op)
    assert counter.count == 2, dict(counter.by_op)  # targets' one transfer + the step's collective


def _peaky_outputs(model, cfg, shift: float):
    """Head outputs of a real network with the centre logits replaced by noise: a larger `shift`
    gives more peaks above the thing threshold, i.e. more instances."""
    torch.manual_seed(0)
    x, sizes = preprocess([torch.randint(0, 256, (3, 128, 256), dtype=torch.uint8)], cfg.model)
    with torch.no_grad():
        out = model(x)
    for lv in out.levels:
        g = torch.Generator().manual_seed(lv.center_logits.shape[-1])
        lv.center_logits.copy_(torch.rand(lv.center_logits.shape, generator=g) * 8.0 + shift)
    return out, sizes


def test_postprocess_waits_are_few_per_image():
    cfg = load_config(None, [*NARROW, "model.inference.combine_overlap_threshold=0.99"])
    model = build_model(cfg.model).eval()
    for shift in (-8.5, 0.0):  # no thing passes the thresholds / many do
        out, sizes = _peaky_outputs(model, cfg, shift)
        with torch.no_grad(), HostSyncCounter() as counter:
            postprocess(out, model, cfg.model, sizes, with_instance_masks=False, with_sem_seg=False)
        assert counter.count <= 20, dict(counter.by_op)


@pytest.mark.parametrize("num_things", [3, 60])
def test_panoptic_merge_waits_do_not_grow_with_instances(num_things):
    from panopticdepth.modeling.panoptic_merge import merge_panoptic

    g = torch.Generator().manual_seed(num_things)
    h, w = 96, 160
    things = torch.zeros(num_things, h, w)
    for i in range(num_things):  # overlapping boxes: some trimmed, some rejected
        y, x = int(torch.randint(0, h - 20, (), generator=g)), int(torch.randint(0, w - 30, (), generator=g))
        things[i, y : y + 20, x : x + 30] = 0.9
    stuff = torch.rand(3, h, w, generator=g)
    device = torch.device("cpu")  # inputs made inside the counter with a device count as device data
    with HostSyncCounter() as counter:
        things, stuff = things.to(device), stuff.to(device)
        ids, classes = torch.full((num_things,), 11, device=device), torch.tensor([0, 2, 8], device=device)
        merged = merge_panoptic(
            things, ids, stuff, classes, num_classes=19, thing_class_ids=range(11, 19), stuff_area_limit=4
        )
    assert merged.accepted_things.numel() >= min(num_things, 10)
    assert counter.count == 3, dict(counter.by_op)  # greedy's one transfer (2 calls) + accepted stuff
