"""torchrun with 2 CPU processes (gloo): both ranks end equal, and equal to a single-process run that
averages the two ranks' gradients (DDP's documented semantics), computed here independently.

The file doubles as the worker script: `torchrun ... test_distributed.py OUT_DIR`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
MAX_ITER = 4
IMS_PER_BATCH = 4  # 2 per rank


def _cfg():
    from tests.training.test_engine import tiny_cfg

    return tiny_cfg(MAX_ITER, checkpoint_period=2, log_period=1)


def _worker(out: Path) -> None:
    from panopticdepth.training.distributed import init_distributed, shutdown_distributed
    from panopticdepth.training.engine import Trainer
    from tests.training.test_engine import StandInDataset, StandInNet, stand_in_criterion

    info = init_distributed("cpu")
    cfg = _cfg()
    cfg.solver.ims_per_batch = IMS_PER_BATCH
    cfg.train.tensorboard = False  # keeps the two worker start-ups short
    torch.manual_seed(cfg.train.seed)
    data = StandInDataset()
    trainer = Trainer(
        cfg, out, model=StandInNet(), criterion=stand_in_criterion, train_dataset=data, dist_info=info
    )
    trainer.train()
    torch.save(trainer.model.state_dict(), out / f"rank{info.rank}.pt")
    (out / f"rank{info.rank}_log.json").write_text(json.dumps(data.log))
    shutdown_distributed(exit_code=0)


def _reference(logs: list[list[list[int]]]) -> dict[str, torch.Tensor]:
    """Single process: per-rank gradients averaged, value clipping, Adam with coupled L2 by hand."""
    from panopticdepth.modeling.preprocess import preprocess
    from tests.training.test_engine import StandInDataset, StandInNet, stand_in_criterion

    cfg = _cfg()
    torch.manual_seed(cfg.train.seed)
    model = StandInNet()
    data = StandInDataset()
    params = dict(model.named_parameters())
    state = {k: (torch.zeros_like(p), torch.zeros_like(p)) for k, p in params.items()}
    per_rank = IMS_PER_BATCH // 2
    for t in range(MAX_ITER):
        grads = []
        for log in logs:
            samples = []
            for epoch, index in log[t * per_rank : (t + 1) * per_rank]:
                data.set_epoch(epoch)
                samples.append(data[index])
            batch, _ = preprocess([s["image"] for s in samples], cfg.model)
            losses = stand_in_criterion(samples, model(batch), tuple(batch.shape[-2:]), model, cfg)
            model.zero_grad()
            sum(losses.values()).backward()
            grads.append({k: p.grad.clone() for k, p in params.items()})
        warm = 0.001 * (1 - t / 2) + t / 2 if t < 2 else 1.0
        lr = cfg.solver.base_lr * warm * (1 - t / MAX_ITER) ** 0.9
        with torch.no_grad():
            for k, p in params.items():
                g = ((grads[0][k] + grads[1][k]) / 2).clamp(-35, 35)
                wd = 0.0 if k == "backbone.1.weight" else 1e-4  # GroupNorm gamma: no decay
                g = g + wd * p
                m, v = state[k]
                m.mul_(0.9).add_(g, alpha=0.1)
                v.mul_(0.999).addcmul_(g, g, value=0.001)
                m_hat = m / (1 - 0.9 ** (t + 1))
                v_hat = v / (1 - 0.999 ** (t + 1))
                p.sub_(lr * m_hat / (v_hat.sqrt() + 1e-8))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_two_process_training_matches_gradient_averaging(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PANOPTICDEPTH_PROGRESS": "0"}
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", str(Path(__file__)), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    w0 = torch.load(tmp_path / "rank0.pt")
    w1 = torch.load(tmp_path / "rank1.pt")
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    logs = [json.loads((tmp_path / f"rank{r}_log.json").read_text()) for r in range(2)]
    assert len(logs[0]) == len(logs[1]) == MAX_ITER * 2
    # the two ranks read disjoint images within the first epoch (6 images, 4 per iteration)
    assert not {tuple(x) for x in logs[0][:3]} & {tuple(x) for x in logs[1][:3]}
    ref = _reference(logs)
    for k in ref:
        torch.testing.assert_close(w0[k], ref[k], rtol=1e-5, atol=1e-6, msg=k)
    # changes really happened (the test can fail)
    from tests.training.test_engine import StandInNet

    torch.manual_seed(0)
    init = StandInNet().state_dict()
    assert not torch.allclose(init["sem_head.weight"], w0["sem_head.weight"])
    # rank 0 alone wrote the outputs
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == list(range(1, MAX_ITER + 1))
    assert (tmp_path / "model" / "model.safetensors").is_file()


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    _worker(Path(sys.argv[1]))
