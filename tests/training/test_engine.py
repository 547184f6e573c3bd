"""Engine on a tiny stand-in network + loss (defined here): outputs, logging, resume, NaN, budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from panopticdepth.config import Config, load_config
from panopticdepth.training.checkpointer import Checkpointer, load_model_weights
from panopticdepth.training.distributed import InfiniteShardedBatchSampler
from panopticdepth.training.engine import Trainer, TrainingDiverged

H, W = 32, 64


class StandInDataset(torch.utils.data.Dataset):
    """Deterministic images whose 'semantic' label is a function of the colour; the horizontal flip
    is drawn per (epoch, index) like the real datasets' augmentation."""

    def __init__(self, n: int = 6, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randint(0, 256, (n, 3, H, W), generator=g, dtype=torch.uint8)
        self.epoch = 0
        self.log: list[tuple[int, int]] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        self.log.append((self.epoch, i))
        img = self.images[i]
        g = torch.Generator().manual_seed(1000 * self.epoch + i)
        if torch.rand((), generator=g) < 0.5:
            img = img.flip(-1)
        sem = (img[0].long() * 3 // 256) + 11 * (img[1] > 128).long()
        depth = 1.0 + img[2].float() / 32.0
        return {"image": img, "semantic": sem, "depth": depth, "meta": {"image_id": f"im{i}"}}


class StandInNet(nn.Module):
    def __init__(self, depth: bool = True):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU())
        self.sem_head = nn.Conv2d(8, 19, 1)
        self.depth_encoder = nn.Conv2d(8, 1, 1) if depth else None

    def forward(self, x: torch.Tensor) -> dict:
        f = self.backbone(x)
        out = {"sem": self.sem_head(f)}
        if self.depth_encoder is not None:
            out["depth"] = F.softplus(self.depth_encoder(f))[:, 0]
        return out


def stand_in_criterion(samples, outputs, padded, model, cfg):
    sem = torch.full((len(samples), *padded), 255, dtype=torch.long)
    dep = torch.zeros((len(samples), *padded))
    for i, s in enumerate(samples):
        h, w = s["semantic"].shape
        sem[i, :h, :w] = s["semantic"]
        dep[i, :h, :w] = s["depth"]
    valid = dep > 0
    return {
        "loss_seg_st": F.cross_entropy(outputs["sem"], sem, ignore_index=255),
        "loss_depth": (outputs["depth"] - dep).abs()[valid].mean(),
    }


def tiny_cfg(max_iter: int = 6, **train) -> Config:
    overrides = [
        f"solver.max_iter={max_iter}",
        "solver.ims_per_batch=2",
        "solver.base_lr=0.01",
        "solver.warmup_iters=2",
        "data.num_workers=0",
        "train.log_period=1",
        "train.checkpoint_period=2",
        "train.keep_checkpoints=2",
        "train.device=cpu",
        "model.pixel_std=[58.0,57.0,57.0]",
    ] + [f"train.{k}={v}" for k, v in train.items()]
    return load_config(None, overrides)


def make_trainer(cfg: Config, out: Path, criterion=stand_in_criterion, **kw) -> Trainer:
    torch.manual_seed(cfg.train.seed)
    return Trainer(cfg, out, model=StandInNet(), criterion=criterion, train_dataset=StandInDataset(), **kw)


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_outputs_metrics_and_checkpoints(tmp_path):
    cfg = tiny_cfg(6)
    trainer = make_trainer(cfg, tmp_path)
    result = trainer.train()
    assert result.iteration == 6 and result.reason == "completed"
    assert load_config(tmp_path / "config.yaml") == cfg
    rows = read_metrics(tmp_path)
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for r in rows:
        t = r["iteration"] - 1
        warm = 0.001 * (1 - t / 2) + t / 2 if t < 2 else 1.0
        assert r["lr"] == pytest.approx(0.01 * warm * (1 - t / 6) ** 0.9, rel=1e-9)
        assert r["total_loss"] == pytest.approx(r["loss_seg_st"] + r["loss_depth"], rel=1e-6)
    # keep the last 2 of iter 2, 4 and the final 6
    names = [p.name for p in Checkpointer(tmp_path).checkpoints()]
    assert names == ["iter_0000004", "iter_0000006"]
    for d in [tmp_path / "model", tmp_path / "checkpoints" / "iter_0000006"]:
        assert (d / "model.safetensors").is_file() and (d / "config.yaml").is_file()
        fresh = StandInNet()
        load_model_weights(fresh, d)
        for k, v in trainer.model.state_dict().items():
            assert torch.equal(v, fresh.state_dict()[k]), k
    assert any((tmp_path / "tensorboard").iterdir())
    assert not list(tmp_path.glob("**/*.tmp*"))


def test_log_period_and_loss_falls(tmp_path):
    cfg = tiny_cfg(40, log_period=10, checkpoint_period=0)
    make_trainer(cfg, tmp_path).train()
    rows = read_metrics(tmp_path)
    assert [r["iteration"] for r in rows] == [1, 10, 20, 30, 40]
    assert rows[-1]["total_loss"] < rows[0]["total_loss"]


class _Killer:
    """Criterion wrapper that 'kills' the process (KeyboardInterrupt) at a given call."""

    def __init__(self, at_call: int):
        self.calls = 0
        self.at_call = at_call

    def __call__(self, *args):
        self.calls += 1
        if self.calls == self.at_call:
            raise KeyboardInterrupt
        return stand_in_criterion(*args)


def test_exact_resume_matches_uninterrupted_run(tmp_path):
    cfg = tiny_cfg(9, checkpoint_period=3, keep_checkpoints=5)  # 6 images, batch 2: crosses epochs
    full = make_trainer(cfg, tmp_path / "a")
    full.train()
    with pytest.raises(KeyboardInterrupt):
        make_trainer(cfg, tmp_path / "b", criterion=_Killer(at_call=8)).train()  # dies in iteration 8
    assert Checkpointer(tmp_path / "b").latest().name == "iter_0000006"
    resumed = make_trainer(cfg, tmp_path / "b", resume=True)
    assert resumed.start_iter == 6
    resumed.train()
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    ra, rb = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [r["iteration"] for r in rb] == list(range(1, 10))
    for x, y in zip(ra, rb):
        assert x["total_loss"] == y["total_loss"] and x["lr"] == y["lr"]
    # the resumed run read exactly the (epoch, index) pairs the uninterrupted one read from batch 6 on
    assert resumed._train_dataset.log == full._train_dataset.log[12:]


def test_nan_stops_with_term_and_iteration(tmp_path):
    def nan_at_3(samples, outputs, padded, model, cfg):
        losses = stand_in_criterion(samples, outputs, padded, model, cfg)
        nan_at_3.calls += 1
        if nan_at_3.calls == 3:
            losses["loss_depth"] = losses["loss_depth"] * float("nan")
        return losses

    nan_at_3.calls = 0
    trainer = make_trainer(tiny_cfg(6), tmp_path, criterion=nan_at_3)
    with pytest.raises(TrainingDiverged, match=r"'loss_depth'.*iteration 3.*iter_0000002"):
        trainer.train()
    assert [p.name for p in Checkpointer(tmp_path).checkpoints()] == ["iter_0000002"]
    assert not (tmp_path / "model").exists()


def test_time_budget_stops_and_saves(tmp_path):
    cfg = tiny_cfg(100000, max_minutes=0.0005, checkpoint_period=0, log_period=1000)
    result = make_trainer(cfg, tmp_path).train()
    assert result.reason == "time_budget" and 0 < result.iteration < 100000
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert Checkpointer(tmp_path).latest().name == f"iter_{result.iteration:07d}"


def test_step_hook_replans_max_iter_live(tmp_path):
    """A step hook may move solver.max_iter: the loop and the LR schedule follow it."""
    cfg = tiny_cfg(6, checkpoint_period=0)
    trainer = make_trainer(cfg, tmp_path)
    seen = []

    def hook(iteration):
        seen.append(iteration)
        if iteration == 2:
            cfg.solver.max_iter = 4

    trainer.step_hooks.append(hook)
    result = trainer.train()
    assert result.iteration == 4 and result.reason == "completed" and seen == [1, 2, 3, 4]
    rows = read_metrics(tmp_path)
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4]
    # The LR of step 3 was set before the hook ran (max_iter 6); step 4 decays towards 4.
    assert rows[2]["lr"] == pytest.approx(0.01 * (1 - 2 / 6) ** 0.9, rel=1e-9)
    assert rows[3]["lr"] == pytest.approx(0.01 * (1 - 3 / 4) ** 0.9, rel=1e-9)


def test_sampler_shards_and_resumes():
    n, world, bs = 7, 2, 3
    streams = []
    for rank in range(world):
        s = InfiniteShardedBatchSampler(n, bs, seed=5, rank=rank, world_size=world)
        it = iter(s)
        streams.append([next(it) for _ in range(6)])
        # starting at batch 4 continues the same stream
        late = iter(InfiniteShardedBatchSampler(n, bs, seed=5, rank=rank, world_size=world, start_batch=4))
        assert [next(late) for _ in range(2)] == streams[rank][4:]
    shard_len = 4  # ceil(7 / 2)
    for epoch in range(2):
        seen = []
        for rank in range(world):
            flat = [p for b in streams[rank] for p in b]
            seen += [i for e, i in flat[epoch * shard_len : (epoch + 1) * shard_len] if e == epoch]
        # one epoch over both ranks covers every index (one repeated as padding)
        assert sorted(set(seen)) == list(range(n)) and len(seen) == 8
    # different epochs are differently shuffled
    e0 = [i for e, i in (p for b in streams[0] for p in b) if e == 0]
    e1 = [i for e, i in (p for b in streams[0] for p in b) if e == 1]
    assert e0 != e1


# ------------------------------------------------------------------ the real pieces, at tiny size
REAL_OVERRIDES = [
    "solver.max_iter=4",
    "solver.ims_per_batch=2",
    "solver.warmup_iters=2",
    "train.log_period=1",
    "train.checkpoint_period=2",
    "train.tensorboard=false",
    "train.device=cpu",
    "data.num_workers=1",
    "model.fpn.out_channels=32",
    "model.heads.convs_dim=32",
    "model.heads.norm_groups=8",
    "model.heads.num_convs=1",
]


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    from panopticdepth.data.synthetic.writer import write_dataset

    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, "train", 3, height=64, width=128, seed=3)
    return root


def test_real_pipeline_cli_resume_and_predict(synth_root, tmp_path):
    """CLI run on synthetic data with the real network/targets/losses; a killed + resumed run ends
    with the same weights; the final folder loads with the predictor."""
    from panopticdepth.cli.main import main
    from panopticdepth.modeling.predictor import Predictor
    from panopticdepth.training import engine

    config = str(Path(__file__).resolve().parents[2] / "configs" / "synthetic" / "small_cpu.yaml")
    args = ["--config", config, f"data.root={synth_root}", *REAL_OVERRIDES]
    assert main(["train", *args, "--output", str(tmp_path / "a")]) == 0
    rows = read_metrics(tmp_path / "a")
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4]
    names = {"loss_pos_th", "loss_pos_st", "loss_seg_th", "loss_seg_st", "loss_depth", "loss_depth_ins"}
    assert names <= set(rows[0]) and all(torch.isfinite(torch.tensor(r["total_loss"])) for r in rows)

    real = engine.default_criterion
    calls = {"n": 0}

    def dies_in_iteration_4(*a):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*a)

    engine.default_criterion = dies_in_iteration_4
    try:
        assert main(["train", *args, "--output", str(tmp_path / "b")]) == 130  # "killed" (Ctrl-C)
    finally:
        engine.default_criterion = real
    assert main(["train", "--output", str(tmp_path / "b"), "--resume"]) == 0  # config.yaml reused
    wa = load_model_weights_dict(tmp_path / "a" / "model")
    wb = load_model_weights_dict(tmp_path / "b" / "model")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert [r["total_loss"] for r in read_metrics(tmp_path / "b")] == [r["total_loss"] for r in rows]

    predictor = Predictor.from_dir(tmp_path / "a" / "model")  # what `predict --weights` does
    for k, v in predictor.model.state_dict().items():
        if k in wa:
            assert torch.equal(v, wa[k]), k


def load_model_weights_dict(directory: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(directory / "model.safetensors"))


def test_bf16_autocast_trains(tmp_path):
    result = make_trainer(tiny_cfg(3, checkpoint_period=0, tensorboard=False), tmp_path).train()
    cfg = tiny_cfg(3, checkpoint_period=0, tensorboard=False)
    cfg.solver.amp = "bf16"
    result_bf16 = make_trainer(cfg, tmp_path / "bf16").train()
    assert result.iteration == result_bf16.iteration == 3
    a, b = result.last_losses["total_loss"], result_bf16.last_losses["total_loss"]
    assert a != b and abs(a - b) < 0.05 * abs(a)  # same run up to bf16 rounding
