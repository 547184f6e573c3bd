"""The `panopticdepth` command: help texts, unknown commands and bad arguments."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

from panopticdepth.cli.main import SUBCOMMANDS, build_parser, main


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "panopticdepth.cli.main", *args], capture_output=True, text=True, timeout=120
    )


def test_top_level_help_lists_commands():
    res = _run("--help")
    assert res.returncode == 0
    assert "depth" in res.stdout.lower()
    for name in _available():
        assert re.search(rf"^\s+{re.escape(name)}\s", res.stdout, re.MULTILINE), f"{name} not in --help"


def _available() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return [name for name in SUBCOMMANDS if name in sub.choices]


@pytest.mark.parametrize("name", _available())
def test_each_subcommand_explains_itself(name: str, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: panopticdepth " + name)
    # The help describes the command (its parser's description) and every option it documents.
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[name]
    assert sub.description and " ".join(sub.description.split()[:4]) in " ".join(out.split())
    for action in sub._actions:
        for flag in action.option_strings if action.help != argparse.SUPPRESS else ():
            assert flag in out, f"{name} --help does not mention {flag}"


def test_unknown_subcommand_fails_without_traceback():
    res = _run("frobnicate")
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    assert "invalid choice" in res.stderr


def test_no_subcommand_prints_help_and_fails():
    res = _run()
    assert res.returncode != 0
    assert "usage" in res.stdout


def test_bad_override_is_one_line_error():
    res = _run("config", "solver.base_lrr=1")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "solver.base_lrr" in lines[0]


def test_missing_config_file_is_one_line_error(tmp_path):
    res = _run("config", "--config", str(tmp_path / "missing.yaml"))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert "missing.yaml" in res.stderr


def test_config_prints_resolved_values():
    res = _run("config", "model.depth.normalization=T1")
    assert res.returncode == 0
    assert "normalization: T1" in res.stdout


@pytest.mark.parametrize(
    ("json_target", "expect"),
    [("", "must name a file, but it is a folder"), ("f/m.json", "folder of the --json file")],
    ids=["json-is-folder", "json-under-file"],
)
def test_evaluate_json_path_checked_first(tmp_path, json_target, expect):
    (tmp_path / "f").write_text("x")
    res = _run("evaluate", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"),
               "--json", str(tmp_path / json_target))  # fmt: skip
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and expect in lines[0]


def test_evaluate_json_in_missing_folder_is_created(tmp_path, capsys):
    target = tmp_path / "new" / "deeper" / "m.json"
    # the --gt folder is missing: the run fails after the --json check created the folder
    assert main(
        ["evaluate", "--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "p"), "--json", str(target)]
    )
    assert target.parent.is_dir()


def test_synth_reports_the_size_as_given(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "s"), "--num", "1", "--size", "16x40"]) == 0
    out = capsys.readouterr().out
    assert "--size 16x40" in out and "height 16 x width 40" in out


def test_every_command_keeps_freed_memory_in_its_process(monkeypatch, capsys):
    import panopticdepth.cli.main as cli_main

    calls: list[bool] = []
    monkeypatch.setattr(cli_main, "keep_freed_memory", lambda: calls.append(True) or True)
    assert main(["config", "solver.base_lr=1e-4"]) == 0
    assert calls == [True]
    assert "base_lr" in capsys.readouterr().out
