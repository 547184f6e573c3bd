"""SIGTERM / SIGINT during training save a checkpoint and exit; a corrupt newest checkpoint on
--resume is named and the previous one is used."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from panopticdepth.errors import CheckpointError

from .test_engine import make_trainer, read_metrics, stand_in_criterion, tiny_cfg

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_a_checkpoint_after_the_current_step(tmp_path, sig):
    calls = {"n": 0}

    def signalled_in_step_3(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), sig)  # arrives in the middle of the step
        return stand_in_criterion(*args)

    cfg = tiny_cfg(50, checkpoint_period=0, tensorboard=False)
    trainer = make_trainer(cfg, tmp_path, criterion=signalled_in_step_3)
    result = trainer.train()
    assert result.reason == "interrupted" and result.iteration == 3
    assert trainer.stop_signals.exit_code == 128 + sig
    assert trainer.last_checkpoint == tmp_path / "checkpoints" / "iter_0000003"
    assert (tmp_path / "checkpoints" / "last_checkpoint").read_text().strip() == "iter_0000003"
    assert not (tmp_path / "model").exists()  # not finished: no final model
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    resumed = make_trainer(tiny_cfg(5, checkpoint_period=0, tensorboard=False), tmp_path, resume=True)
    assert resumed.start_iter == 3
    assert resumed.train().reason == "completed"
    assert [r["iteration"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4, 5]


def test_sigterm_to_a_real_training_process(tmp_path):
    from panopticdepth.data.synthetic import write_dataset

    write_dataset(tmp_path / "data", "train", 2, height=32, width=64, seed=1)
    run = tmp_path / "R"
    args = ["--config", str(REPO / "configs" / "synthetic" / "small_cpu.yaml"), "--output", str(run),
            f"data.root={tmp_path / 'data'}", "solver.max_iter=500", "solver.ims_per_batch=1",
            "train.log_period=1", "train.checkpoint_period=0", "train.tensorboard=false",
            "train.device=cpu", "data.num_workers=1", "model.fpn.out_channels=16",
            "model.heads.convs_dim=16", "model.heads.norm_groups=4", "model.heads.num_convs=1"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PANOPTICDEPTH_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "panopticdepth.cli.main", "train"]
    proc = subprocess.Popen([*cmd, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 240
        metrics = run / "metrics.jsonl"
        while not (metrics.is_file() and metrics.read_text().count("\n") >= 1):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    last = (run / "checkpoints" / "last_checkpoint").read_text().strip()
    done = int(last.removeprefix("iter_"))
    assert done >= 1 and (run / "checkpoints" / last / "training_state.pt").is_file()
    assert "--resume" in err and not (run / "model").exists()
    res = subprocess.run([*cmd, "--output", str(run), "--resume", f"solver.max_iter={done + 1}"],
                         capture_output=True, text=True, env=env, timeout=240)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert f"trained to iteration {done + 1} (completed)" in res.stdout


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def test_corrupt_newest_checkpoint_falls_back_with_a_warning(tmp_path, caplog):
    make_trainer(tiny_cfg(6, tensorboard=False), tmp_path).train()  # checkpoints at 4 and 6 kept
    _truncate(tmp_path / "checkpoints" / "iter_0000006" / "training_state.pt")
    with caplog.at_level(logging.WARNING, logger="panopticdepth"):
        resumed = make_trainer(tiny_cfg(6, tensorboard=False), tmp_path, resume=True)
    assert resumed.start_iter == 4
    assert resumed.last_checkpoint == tmp_path / "checkpoints" / "iter_0000004"
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "iter_0000006/training_state.pt" in warned and "previous checkpoint" in warned


def test_no_readable_checkpoint_names_the_newest_file(tmp_path):
    make_trainer(tiny_cfg(6, tensorboard=False), tmp_path).train()
    _truncate(tmp_path / "checkpoints" / "iter_0000006" / "model.safetensors")
    _truncate(tmp_path / "checkpoints" / "iter_0000004" / "training_state.pt")
    with pytest.raises(CheckpointError, match=r"iter_0000006/model\.safetensors.*no older readable"):
        make_trainer(tiny_cfg(6, tensorboard=False), tmp_path, resume=True)
