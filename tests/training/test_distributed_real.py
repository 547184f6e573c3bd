"""Two `torchrun` processes (gloo) with the real small network, targets and losses.

The two ranks write to different output folders, as two nodes without a shared file system:
* an uninterrupted run with a sharded periodic evaluation, whose merged metrics must equal a
  single-process evaluation of the same checkpoint;
* a run killed after its checkpoint, resumed with `resume=True`: rank 1 has no checkpoint on its
  disk, gets rank 0's state, and both ranks end with the uninterrupted run's weights;
* one process with `solver.accumulation_steps=2` ends with the two-process weights.

The file doubles as the worker script: `torchrun ... test_distributed_real.py ROOT DATA PHASE`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.training.tiny_run import SMALL_CONFIG, TINY_RUN

REPO = Path(__file__).resolve().parents[2]
OVERRIDES = ["solver.max_iter=4", *TINY_RUN]


def _cfg(data_root: Path, *extra: str):
    from panopticdepth.config import load_config

    return load_config(SMALL_CONFIG, [f"data.root={data_root}", *OVERRIDES, *extra])


class _DiesAtCall:
    def __init__(self, at_call: int):
        self.calls, self.at_call = 0, at_call

    def __call__(self, *args):
        from panopticdepth.training.engine import default_criterion

        self.calls += 1
        if self.calls == self.at_call:
            raise KeyboardInterrupt("simulated node failure")
        return default_criterion(*args)


def _worker(root: Path, data_root: Path, phase: str) -> None:
    from panopticdepth.training.distributed import init_distributed, shutdown_distributed
    from panopticdepth.training.engine import Trainer

    info = init_distributed("cpu")
    run = "interrupted" if phase in ("killed", "resumed") else phase
    out = root / run / f"rank{info.rank}"  # no folder is shared between the ranks
    criterion = _DiesAtCall(3) if phase == "killed" else None
    code = 0
    try:
        trainer = Trainer(
            _cfg(data_root), out, criterion=criterion, resume=phase == "resumed", dist_info=info
        )
        trainer.train()
        torch.save(trainer.model.state_dict(), root / f"{phase}_rank{info.rank}.pt")
        (root / f"{phase}_rank{info.rank}.json").write_text(json.dumps({"start": trainer.start_iter}))
    except KeyboardInterrupt:
        code = 130
    shutdown_distributed(exit_code=code)


def _torchrun(root: Path, data_root: Path, phase: str) -> subprocess.CompletedProcess:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PANOPTICDEPTH_PROGRESS": "0"}
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", __file__, str(root), str(data_root), phase]
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from panopticdepth.data.synthetic.writer import write_dataset

    data_root = tmp_path_factory.mktemp("synth")
    write_dataset(data_root, "train", 6, height=64, width=128, seed=3)
    write_dataset(data_root, "val", 3, height=64, width=128, seed=4)
    root = tmp_path_factory.mktemp("runs")
    logs = {}
    for phase in ("full", "killed", "resumed"):
        proc = _torchrun(root, data_root, phase)
        logs[phase] = proc.stdout[-4000:] + proc.stderr[-4000:]
        # torchrun exits 1 when its workers fail, as the "killed" ones do on purpose
        assert (proc.returncode == 0) == (phase != "killed"), logs[phase]
    return root, data_root, logs


def _params(model_or_state) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model_or_state.items() if "running_" not in k and "num_batches" not in k}


def test_ranks_agree_and_only_rank0_writes(runs):
    root, _, _ = runs
    w0, w1 = torch.load(root / "full_rank0.pt"), torch.load(root / "full_rank1.pt")
    for k in _params(w0):
        assert torch.equal(w0[k], w1[k]), k
    assert (root / "full" / "rank0" / "model" / "model.safetensors").is_file()
    assert not (root / "full" / "rank1" / "checkpoints").exists()


def test_sharded_evaluation_equals_a_single_process_pass(runs):
    from panopticdepth.data.build import build_dataset
    from panopticdepth.modeling import build_model
    from panopticdepth.training.checkpointer import load_model_weights
    from panopticdepth.training.periodic_eval import evaluate_model

    root, data_root, _ = runs
    rows = [json.loads(x) for x in (root / "full" / "rank0" / "eval_metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [2, 4]
    cfg = _cfg(data_root)
    model = build_model(cfg.model)
    load_model_weights(model, root / "full" / "rank0" / "checkpoints" / "iter_0000002")
    serial = evaluate_model(model, cfg, build_dataset(cfg.data, "val", train=False))
    assert rows[0]["pq/pq"] == pytest.approx(serial["pq"]["pq"], abs=1e-9)
    assert rows[0]["dpq/mean/dpq"] == pytest.approx(serial["dpq"]["mean"]["dpq"], abs=1e-9)


def test_resume_without_shared_disk_matches_the_uninterrupted_run(runs):
    root, _, logs = runs
    assert not (root / "interrupted" / "rank1" / "checkpoints").exists()  # rank 1 never had one
    assert "rank 0 sends its state" in logs["resumed"]
    for rank in (0, 1):
        assert json.loads((root / f"resumed_rank{rank}.json").read_text())["start"] == 2
    full = torch.load(root / "full_rank0.pt")
    for rank in (0, 1):
        resumed = torch.load(root / f"resumed_rank{rank}.pt")
        for k in _params(full):
            assert torch.equal(full[k], resumed[k]), (rank, k)


def test_accumulation_reproduces_two_processes(runs, tmp_path):
    from panopticdepth.training.engine import Trainer

    root, data_root, _ = runs
    cfg = _cfg(data_root, "solver.accumulation_steps=2", "train.eval_period=0")
    torch.manual_seed(0)
    trainer = Trainer(cfg, tmp_path / "accumulated")
    assert trainer.micro_batch == 1
    trainer.train()
    full = torch.load(root / "full_rank0.pt")
    mine = _params(trainer.model.state_dict())
    changed = 0
    for k, v in mine.items():
        torch.testing.assert_close(v, full[k], rtol=1e-4, atol=1e-6, msg=k)
    from panopticdepth.modeling import build_model

    torch.manual_seed(cfg.train.seed)
    init = build_model(cfg.model).state_dict()
    changed = sum(not torch.allclose(init[k], v) for k, v in mine.items())
    assert changed > len(mine) // 2  # the weights really moved: the comparison can fail


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    _worker(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
