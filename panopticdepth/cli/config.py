"""`panopticdepth config`: print the resolved configuration (defaults <- YAML <- overrides)."""

from __future__ import annotations

import argparse

from .common import add_config_arguments, resolve_config


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "config",
        help="print the resolved configuration",
        description="Print the configuration that a command would use, after the YAML file and overrides.",
    )
    add_config_arguments(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..config import dump_config

    print(dump_config(resolve_config(args)), end="")
    return 0
