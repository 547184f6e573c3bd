"""Output paths checked up front, and errors from DataLoader workers shown as one line."""

from __future__ import annotations

import tempfile

import pytest
import torch

from panopticdepth.errors import DataError, PanopticDepthError, user_message
from panopticdepth.training.output_dir import check_output_dir, clear_run_files, run_files
from panopticdepth.utils.files import ensure_output_dir, ensure_output_file


@pytest.mark.parametrize(
    ("make", "target", "match"),
    [
        (lambda t: (t / "f").write_text("x"), "f", "must be a folder"),
        (lambda t: (t / "f").write_text("x"), "f/sub", "cannot create"),
    ],
    ids=["is-file", "under-file"],
)
def test_output_dir_problems(tmp_path, make, target, match):
    make(tmp_path)
    with pytest.raises(PanopticDepthError, match=match):
        ensure_output_dir(tmp_path / target)


def test_output_dir_not_writable(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(
        PanopticDepthError, match="cannot create or write into the --output folder .Permission denied"
    ):
        ensure_output_dir(tmp_path / "out")


def test_output_dir_created_and_probe_removed(tmp_path):
    out = ensure_output_dir(tmp_path / "a" / "b")
    assert out.is_dir() and list(out.iterdir()) == []


@pytest.mark.parametrize(
    ("target", "match"),
    [("", "must name a file, but it is a folder"), ("f/x.json", "folder of the --json file")],
    ids=["folder", "parent-is-file"],
)
def test_output_file_problems(tmp_path, target, match):
    (tmp_path / "f").write_text("x")
    with pytest.raises(PanopticDepthError, match=match):
        ensure_output_file(tmp_path / target, "--json")


def test_output_file_parent_created(tmp_path):
    path = ensure_output_file(tmp_path / "new" / "m.json", "--json")
    assert path.parent.is_dir() and not path.exists()


def test_used_output_dir(tmp_path):
    assert check_output_dir(tmp_path / "new") == []
    (tmp_path / "notes.txt").write_text("x")
    assert check_output_dir(tmp_path) == []  # unrelated files do not make a folder used
    (tmp_path / "checkpoints" / "iter_0000005").mkdir(parents=True)
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    (tmp_path / ".model.tmp-123").mkdir()
    with pytest.raises(PanopticDepthError, match="holds an earlier training run"):
        check_output_dir(tmp_path)
    assert check_output_dir(tmp_path, resume=True) == run_files(tmp_path)
    assert check_output_dir(tmp_path, overwrite=True) == ["metrics.jsonl", "checkpoints", ".model.tmp-123"]
    with pytest.raises(PanopticDepthError, match="pass one"):
        check_output_dir(tmp_path, resume=True, overwrite=True)
    assert clear_run_files(tmp_path) == ["metrics.jsonl", "checkpoints", ".model.tmp-123"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


class _Broken(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i):
        raise DataError(f"/data/frame_{i}.png: unreadable or truncated image")


def test_worker_error_becomes_its_own_message():
    loader = torch.utils.data.DataLoader(_Broken(), num_workers=1, batch_size=None)
    with pytest.raises(DataError) as info:
        next(iter(loader))
    assert "Original Traceback" in str(info.value)  # what torch hands back
    assert user_message(info.value) == "/data/frame_0.png: unreadable or truncated image"
    plain = DataError("a.png: bad")
    assert user_message(plain) == "a.png: bad"
