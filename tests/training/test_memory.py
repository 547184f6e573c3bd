"""The memory estimate of a training step and the CPU check `train` runs before it starts."""

from __future__ import annotations

import pytest

from panopticdepth.config import load_config
from panopticdepth.errors import PanopticDepthError
from panopticdepth.training import memory
from tests.conftest import REPO_ROOT

STAGE1 = REPO_ROOT / "configs" / "cityscapes" / "stage1_ps_crop.yaml"
SMALL = REPO_ROOT / "configs" / "synthetic" / "small_cpu.yaml"
GIB = 2**30


def cfg_of(path, *over):
    return load_config(path, list(over))


@pytest.mark.parametrize(
    ("path", "over", "size", "measured_mb"),
    [
        (SMALL, [], (128, 256), 1076),
        (SMALL, [], (256, 512), 1641),
        (STAGE1, ["solver.ims_per_batch=1"], None, 2967),
    ],
)
def test_estimate_close_to_the_measured_peaks(path, over, size, measured_mb):
    """benchmarks/README.md, training step: peak RSS on the CPU."""
    est = memory.estimate_train_memory(cfg_of(path, *over), image_size=size)
    assert est.total_bytes / 2**20 == pytest.approx(measured_mb, rel=0.15)


def test_micro_batch_follows_accumulation_and_processes():
    cfg = cfg_of(STAGE1)
    params = memory.count_parameters(cfg)
    assert 30e6 < params < 50e6
    full = memory.estimate_train_memory(cfg, parameters=params)
    assert full.micro_batch == 32 and full.image_size == (512, 1024)
    split = memory.estimate_train_memory(cfg_of(STAGE1, "solver.accumulation_steps=32"), parameters=params)
    assert split.micro_batch == 1 and split.total_bytes < full.total_bytes / 10
    two = memory.estimate_train_memory(cfg, 2, parameters=params)
    assert two.micro_batch == 16 and two.processes == 2


def test_stage1_refused_on_24_gib_small_config_passes():
    with pytest.raises(PanopticDepthError) as err:
        memory.check_train_memory(cfg_of(STAGE1), available=24 * GIB)
    text = str(err.value)
    for part in ("24.0 GiB", "GPUs", "solver.accumulation_steps", "512x1024", "--skip-memory-check"):
        assert part in text, part
    assert memory.estimate_train_memory(cfg_of(STAGE1)).total_bytes > 40 * GIB
    est = memory.check_train_memory(cfg_of(SMALL), available=24 * GIB)
    assert est.total_bytes < 2 * GIB
    memory.check_train_memory(cfg_of(STAGE1, "solver.accumulation_steps=32"), available=24 * GIB)


def test_available_memory_is_read():
    avail = memory.available_memory_bytes()
    assert avail is None or avail > 0


def test_train_cli_refuses_before_training_and_can_be_overridden(tmp_path, capsys, monkeypatch):
    from panopticdepth.cli.main import main

    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 24 * GIB)
    out = tmp_path / "run"
    argv = ["train", "--config", str(STAGE1), "--output", str(out), "--no-preflight", "train.device=cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "needs ~" in err and "24.0 GiB" in err and "meant for GPUs" in err
    assert not (out / "config.yaml").exists()
    # With the check skipped, training starts (and here stops on the missing ImageNet weights / data).
    rc = main([*argv, "--skip-memory-check"])
    assert rc != 0
    assert "meant for GPUs" not in capsys.readouterr().err
