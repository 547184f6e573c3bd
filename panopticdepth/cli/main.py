"""`panopticdepth` entry point: one command, one subcommand per job.

Each subcommand lives in its own module under `panopticdepth/cli/` exposing
`register(subparsers) -> argparse.ArgumentParser` which sets `func=run` on its parser, where
`run(args) -> int`. Modules import heavy libraries (torch) inside `run`, so `--help` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..config import ConfigError
from ..errors import PanopticDepthError, user_message
from ..utils.logging import setup_logging
from ..utils.malloc import keep_freed_memory

# Order shown in --help. A module is listed only once its subcommand really works.
SUBCOMMANDS = [
    "synth",
    "data",
    "train",
    "evaluate",
    "predict",
    "serve",
    "convert",
    "export",
    "demo",
    "config",
]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="panopticdepth",
        description=(
            "Depth-aware panoptic segmentation (PanopticDepth, CVPR 2022): every pixel gets a class, "
            "an instance id and a metric depth."
        ),
        epilog="Run 'panopticdepth <command> --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"panopticdepth {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"{__package__}.{name}":
                continue  # subcommand not implemented yet: not listed
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    setup_logging(args.verbose)
    keep_freed_memory()  # this process is ours: reuse freed tensors' memory (utils/malloc.py)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, PanopticDepthError, FileNotFoundError, NotADirectoryError) as err:
        print(f"panopticdepth {args.command}: error: {user_message(err)}", file=sys.stderr)
        return 2
    except OSError as err:  # a fault of the machine (permissions, full disk, ...): one line, no traceback
        where = f"{err.filename}: " if err.filename else ""
        why = err.strerror or user_message(err)
        print(f"panopticdepth {args.command}: error: {where}{why}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        logging.getLogger("panopticdepth").warning("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
