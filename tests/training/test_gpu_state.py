"""GPU-specific state handled without a GPU: per-device RNG states and the determinism switch."""

from __future__ import annotations

import logging

import pytest
import torch

from panopticdepth.config.training import TrainConfig
from panopticdepth.training.backends import NONDETERMINISTIC_ON_CUDA, configure_backends
from panopticdepth.training.checkpointer import rng_state, set_rng_state


class _FakeCuda:
    """Records which GPU's RNG state is read and written (8 GPUs 'visible')."""

    def __init__(self, monkeypatch):
        self.read, self.written = [], []
        monkeypatch.setattr(
            torch.cuda, "get_rng_state", lambda device: self.read.append(device) or torch.zeros(4)
        )
        monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: self.written.append(device))


def test_only_the_ranks_own_gpu_state_is_saved_and_restored(monkeypatch):
    fake = _FakeCuda(monkeypatch)
    state = rng_state(torch.device("cuda", 3))
    assert fake.read == [torch.device("cuda", 3)] and "cuda" not in state
    # resumed by a process that sees a single GPU (CUDA_VISIBLE_DEVICES=0): no IndexError
    set_rng_state(state, torch.device("cuda", 0))
    assert fake.written == [torch.device("cuda", 0)]


def test_old_checkpoints_with_every_gpu_state(monkeypatch, caplog):
    fake = _FakeCuda(monkeypatch)
    state = rng_state(None)
    state["cuda"] = [torch.zeros(4), torch.ones(4)]  # written by a process that saw 2 GPUs
    set_rng_state(state, torch.device("cuda", 1))
    assert fake.written == [torch.device("cuda", 1)]
    with caplog.at_level(logging.WARNING):
        set_rng_state(state, torch.device("cuda", 5))  # more GPUs now than then: a warning, no crash
    assert fake.written == [torch.device("cuda", 1)] and "no RNG state" in caplog.text
    set_rng_state(state, torch.device("cpu"))  # a CPU run ignores GPU states


@pytest.fixture
def restore_backends():
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
    )
    yield
    torch.use_deterministic_algorithms(saved[0])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[1], saved[2]
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved[3], saved[4]


def test_deterministic_switch(restore_backends, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.backends.cudnn.allow_tf32 = True
    configure_backends(TrainConfig(deterministic=True), torch.device("cuda", 0))
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    import os

    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert any("deform_conv2d" in item for item in NONDETERMINISTIC_ON_CUDA)


def test_default_lets_cudnn_choose(restore_backends):
    torch.backends.cudnn.benchmark = False
    configure_backends(TrainConfig(), torch.device("cuda", 0))
    assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without a GPU")
def test_trainer_without_distributed_setup_honours_train_device(tmp_path):
    from panopticdepth.training.engine import Trainer
    from panopticdepth.utils.device import DeviceError

    from .test_engine import StandInNet, tiny_cfg

    cfg = tiny_cfg(2)
    cfg.train.device = "cuda"
    with pytest.raises(DeviceError, match="no CUDA GPU"):  # was silently the CPU
        Trainer(cfg, tmp_path, model=StandInNet())
    cfg.train.device = "cpu"
    assert Trainer(cfg, tmp_path, model=StandInNet()).info.device == torch.device("cpu")
