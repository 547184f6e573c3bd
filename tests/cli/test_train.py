"""`panopticdepth train` as a user runs it: used output folders, pre-flight data check, bad paths.

The data-loss cases run the real command in a child process, as a user would.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from panopticdepth.cli.main import main
from panopticdepth.data.synthetic import write_dataset

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "synthetic" / "small_cpu.yaml"
FIRST = "000000_000000_synth_000000"
TINY = [
    "solver.ims_per_batch=1",
    "solver.warmup_iters=1",
    "train.log_period=1",
    "train.checkpoint_period=1",
    "train.tensorboard=false",
    "train.device=cpu",
    "data.num_workers=0",
    "data.augmentation.enabled=false",
    "model.fpn.out_channels=16",
    "model.heads.convs_dim=16",
    "model.heads.norm_groups=4",
    "model.heads.num_convs=1",
    "model.depth.kernel_dim=4",
]


def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [ln for ln in err.splitlines() if "error:" in ln]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, "train", 2, height=32, width=64, seed=5)
    return root


@pytest.fixture
def broken_root(data_root, tmp_path) -> Path:
    dst = tmp_path / "ds"
    shutil.copytree(data_root, dst)
    return dst


def _train(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PANOPTICDEPTH_PROGRESS": "0"}
    return subprocess.run([sys.executable, "-m", "panopticdepth.cli.main", "train", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)  # fmt: skip


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _one_line_error(res: subprocess.CompletedProcess) -> str:
    errors = _error_lines(res.stderr)
    assert len(errors) == 1, res.stderr
    return errors[0]


def test_second_run_into_used_folder_is_refused_then_overwritten(data_root, tmp_path):
    run = tmp_path / "R"
    common = ["--config", str(CONFIG), f"data.root={data_root}", *TINY]
    first = _train("--output", str(run), *common, "solver.max_iter=2")
    assert first.returncode == 0, first.stderr
    before = _digest(run)
    assert {"checkpoints/iter_0000002/model.safetensors", "model/model.safetensors"} <= set(before)

    again = _train("--output", str(run), *common, "solver.max_iter=1")
    assert again.returncode == 2
    msg = _one_line_error(again)
    assert str(run) in msg and "--resume" in msg and "--overwrite" in msg
    assert _digest(run) == before  # nothing of the first run touched

    both = _train("--output", str(run), "--resume", "--overwrite", *common)
    assert both.returncode == 2 and "pass one" in _one_line_error(both)
    assert _digest(run) == before

    (run / "notes.txt").write_text("mine")
    new = _train("--output", str(run), "--overwrite", *common, "solver.max_iter=1")
    assert new.returncode == 0, new.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter_0000001", "last_checkpoint"]
    assert (run / "checkpoints" / "last_checkpoint").read_text().strip() == "iter_0000001"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1]
    assert (run / "notes.txt").read_text() == "mine"  # only the run's own files are deleted

    resumed = _train("--output", str(run), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "trained to iteration 1" in resumed.stdout  # the new run, not the deleted one


@pytest.mark.parametrize(
    ("break_it", "expect"),
    [
        (lambda split: (split / f"{FIRST}_depth.png").unlink(), f"{FIRST}_depth.png"),
        (lambda split: (split / f"{FIRST}_leftImg8bit.png").write_bytes(b"not a png"), "unreadable"),
        (
            lambda split: Image.fromarray(np.zeros((32, 64), np.uint8)).save(split / f"{FIRST}_depth.png"),
            "16-bit",
        ),
        (
            lambda split: Image.fromarray(np.zeros((16, 64), np.uint16)).save(
                split / f"{FIRST}_gtFine_instanceTrainIds.png"
            ),
            "does not match",
        ),
    ],
    ids=["missing-partner", "bad-header", "depth-8bit", "size-mismatch"],
)
def test_preflight_stops_train_before_it_starts(broken_root, tmp_path, capsys, break_it, expect):
    (broken_root / "video_sequence" / "dvps_cityscapes_train.json").unlink()
    break_it(broken_root / "video_sequence" / "train")
    out = tmp_path / "out"
    rc = main(["train", "--config", str(CONFIG), "--output", str(out), f"data.root={broken_root}", *TINY])
    assert rc == 2
    (err,) = _error_lines(capsys.readouterr().err)
    assert FIRST in err and expect in err
    assert not out.exists()  # stopped before anything was written


def test_worker_error_is_one_line_naming_the_file(broken_root, tmp_path):
    split = broken_root / "video_sequence" / "train"
    for name in (f"{FIRST}_leftImg8bit.png", "000000_000001_synth_000001_leftImg8bit.png"):
        path = split / name
        path.write_bytes(path.read_bytes()[:200])  # header intact, pixel data truncated
    res = _train("--config", str(CONFIG), "--output", str(tmp_path / "out"), f"data.root={broken_root}",
                 *TINY, "data.num_workers=1", "solver.max_iter=1", "--no-preflight")  # fmt: skip
    assert res.returncode == 2
    msg = _one_line_error(res)
    assert "_leftImg8bit.png: unreadable or truncated image" in msg and "DataLoader" not in msg


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--output", "{file}", "--config", "{config}", "data.root={data}"], "must be a folder"),
        (["--output", "{file}/sub", "--config", "{config}", "data.root={data}"], "cannot create or write"),
        (["--output", "{tmp}/new", "--resume"], "no earlier run to continue"),
    ],
    ids=["output-is-file", "output-under-file", "resume-new-folder"],
)
def test_bad_output_paths_are_one_line_errors(data_root, tmp_path, capsys, args, expect):
    (tmp_path / "f").write_text("x")
    args = [a.format(file=tmp_path / "f", tmp=tmp_path, config=CONFIG, data=data_root) for a in args]
    assert main(["train", *args, *TINY]) == 2
    (err,) = _error_lines(capsys.readouterr().err)
    assert expect in err
