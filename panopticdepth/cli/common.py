"""Argument helpers shared by subcommands."""

from __future__ import annotations

import argparse

from ..config import Config, load_config


def add_config_arguments(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--config", required=required, metavar="YAML", help="config file (see configs/)")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted config overrides, e.g. model.depth.normalization=T2 solver.base_lr=1e-4",
    )


def resolve_config(args: argparse.Namespace, base: Config | None = None) -> Config:
    return load_config(getattr(args, "config", None), getattr(args, "overrides", None), base=base)
