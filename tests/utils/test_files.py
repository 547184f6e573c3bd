"""Atomic writes: all or nothing, with ordinary file permissions."""

from __future__ import annotations

import os
import stat

import pytest

from panopticdepth.utils.files import atomic_path, atomic_write_text, remove_stale_temporaries


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("precious")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "out.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_model_directory_files_are_shared_readable(tmp_path):
    """safetensors writes its own 0600 file; model folders must still be readable by a team."""
    import torch

    from panopticdepth.checkpoint.model_dir import save_model_dir
    from panopticdepth.config import Config

    old = os.umask(0o022)
    try:
        save_model_dir(tmp_path / "model", torch.nn.Linear(2, 2), Config())
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "model").iterdir()}
    assert modes == {"model.safetensors": 0o644, "config.yaml": 0o644}


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".a_panoptic.{dead_pid}.k3j_x9q1.tmp.png"
    live = tmp_path / f".b_panoptic.{os.getppid()}.ab12cd34.tmp.png"
    mine = tmp_path / f".c.{os.getpid()}.zz99yy88.tmp.npz"
    other = tmp_path / ".hidden.tmp.png"
    for p in (stale, live, mine, other):
        p.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (live, mine, other))


def test_atomic_temporary_names_carry_the_pid(tmp_path):
    with atomic_path(tmp_path / "x.png") as tmp:
        assert f".x.{os.getpid()}." in tmp.name and tmp.name.endswith(".tmp.png")
        tmp.write_bytes(b"1")
        assert remove_stale_temporaries(tmp_path) == []  # our own, in use
