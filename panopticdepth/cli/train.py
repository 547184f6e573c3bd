"""`panopticdepth train`: train or fine-tune a model (single process or under `torchrun`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import add_config_arguments


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train",
        help="train a model (one process, or one per GPU under torchrun)",
        description=(
            "Train PanopticDepth with the original recipe (Adam, warmup + poly LR, value clipping). "
            "Writes config.yaml, metrics.jsonl, TensorBoard scalars, checkpoints/ and the final model/ "
            "into --output. Multi-GPU / multi-node: "
            "torchrun --nproc_per_node N -m panopticdepth.cli.main train ..."
        ),
    )
    add_config_arguments(p)
    p.add_argument("--output", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--weights",
        metavar="DIR",
        help="initialise from a model directory (written by convert or train); depth modules may be "
        "missing (stage 3 starts from a PS model)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in --output (config.yaml there is used without --config)",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..config import ConfigError, load_config
    from ..errors import PanopticDepthError
    from ..training.distributed import init_distributed, shutdown_distributed
    from ..training.engine import Trainer
    from ..utils.logging import setup_logging
    from .common import resolve_config

    output = Path(args.output)
    saved = output / "config.yaml"
    if args.resume and args.config is None and saved.is_file():
        cfg = load_config(saved, args.overrides)
    else:
        cfg = resolve_config(args)
    info = init_distributed(cfg.train.device)
    if not info.distributed:
        result = Trainer(cfg, output, weights=args.weights, resume=args.resume, dist_info=info).train()
        print(f"trained to iteration {result.iteration} ({result.reason}); final model: {result.final_dir}")
        return 0
    # Under torchrun: every rank ends through os._exit after leaving the process group (gloo exit
    # aborts otherwise, ENVIRONMENT.md); errors are printed here because main() never sees them.
    setup_logging(getattr(args, "verbose", 0), info.rank)
    code = 0
    try:
        result = Trainer(cfg, output, weights=args.weights, resume=args.resume, dist_info=info).train()
        if info.is_main:
            print(
                f"trained to iteration {result.iteration} ({result.reason}); final model: {result.final_dir}"
            )
    except (ConfigError, PanopticDepthError, FileNotFoundError) as err:
        print(f"panopticdepth train (rank {info.rank}): error: {err}", file=sys.stderr)
        code = 2
    except BaseException:  # noqa: BLE001 - report, then leave the group cleanly
        import traceback

        traceback.print_exc()
        code = 1
    shutdown_distributed(exit_code=code)
    return code
