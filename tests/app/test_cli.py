"""`panopticdepth serve` and `demo --serve` on the command line (no browser, no served requests)."""

from __future__ import annotations

import argparse
import logging
import socket

import pytest

from panopticdepth.cli import demo as demo_cli
from panopticdepth.cli import serve as serve_cli
from panopticdepth.cli.main import build_parser, main


@pytest.fixture(autouse=True)
def _restore_logging():
    """`main` attaches a handler to the (captured) stderr of the moment: detach it afterwards, so
    that later tests' log records do not go to a closed capture stream."""
    root = logging.getLogger("panopticdepth")
    saved = (list(root.handlers), root.level, root.propagate)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    root.propagate = saved[2]


def test_serve_is_listed_with_its_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--weights", "--host", "--port", "--examples", "--intrinsics", "--max-display-size"):
        assert option in out
    assert "serve" in build_parser().format_help()
    args = build_parser().parse_args(["serve", "--weights", "m"])
    assert (args.host, args.port, args.max_display_size) == ("127.0.0.1", 7860, 1024)


def test_serve_errors_are_messages(tmp_path, tiny_model_dir, capsys):
    assert main(["serve", "--weights", str(tmp_path / "missing")]) == 2
    assert "model directory" in capsys.readouterr().err
    assert main(["serve", "--weights", str(tiny_model_dir), "--examples", str(tmp_path / "nope")]) == 2
    assert "--examples" in capsys.readouterr().err
    with socket.socket() as busy:  # a port someone else holds
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        rc = main(["serve", "--weights", str(tiny_model_dir), "--port", str(port), "--no-browser"])
    assert rc == 2 and "cannot listen" in capsys.readouterr().err


def test_demo_serve_uses_the_model_and_held_out_scenes(tmp_path, tiny_model_dir, monkeypatch):
    from panopticdepth.data.synthetic import write_dataset

    out = tmp_path / "demo"
    write_dataset(out / "data", "val", 3, height=32, width=64, seed=5)
    args = build_parser().parse_args(["demo", "--output", str(out), "--serve", "--port", "0", "--no-browser"])
    assert args.serve and args.port == 0
    seen = {}

    def fake_serve(predictor, a: argparse.Namespace, name: str, examples) -> int:
        seen.update(predictor=predictor, name=name, examples=examples, port=a.port)
        return 0

    monkeypatch.setattr(serve_cli, "serve_model", fake_serve)
    assert demo_cli.serve_demo(args, tiny_model_dir, out) == 0
    names = sorted(p.name for p in seen["examples"].iterdir())
    # Only the val images (no label or depth PNGs), under short names.
    assert names == ["000000_000000_synth_000000.png", "000000_000001_synth_000001.png",
                     "000000_000002_synth_000002.png"]  # fmt: skip
    assert seen["examples"] == out / "examples" and seen["port"] == 0
    assert str(tiny_model_dir) in seen["name"]
    assert seen["predictor"].cfg.depth.enabled
