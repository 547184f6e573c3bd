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
            "into --output; a folder holding an earlier run is refused unless --resume or --overwrite. "
            "Every training frame's files are checked (partners, headers, sizes) before training "
            "starts. Multi-GPU / multi-node: "
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
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="delete an earlier run's files in --output first (without it, a used folder is refused)",
    )
    p.add_argument(
        "--no-preflight",
        dest="preflight",
        action="store_false",
        help="skip the check of every training frame's files (partners, headers, sizes) before training",
    )
    p.add_argument(
        "--skip-memory-check",
        dest="memory_check",
        action="store_false",
        help="on a CPU, start even when the estimated memory of a training step exceeds the available memory",
    )
    p.set_defaults(func=run)
    return p


def _check_memory(args: argparse.Namespace, cfg, info) -> None:
    """On the CPU, refuse a config whose training step will not fit in memory (before any work)."""
    if not getattr(args, "memory_check", True) or info.device.type != "cpu":
        return
    import logging
    import os

    from ..training.memory import check_train_memory

    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # processes sharing this machine's memory
    est = check_train_memory(cfg, local, world_size=info.world_size)
    logging.getLogger(__name__).info("estimated training memory: %s", est.describe())


def _prepare(args: argparse.Namespace):
    """Config, output-folder and data checks that must pass before any training work starts."""
    from ..config import load_config
    from ..errors import PanopticDepthError
    from ..training.output_dir import check_output_dir
    from .common import resolve_config

    output = Path(args.output)
    check_output_dir(output, resume=args.resume, overwrite=args.overwrite)
    saved = output / "config.yaml"
    if args.resume and args.config is None:
        if not saved.is_file():
            raise PanopticDepthError(
                f"{output}: --resume found no earlier run to continue (no config.yaml); "
                "to start a run there, pass --config"
            )
        cfg = load_config(saved, args.overrides)
    else:
        cfg = resolve_config(args)
    if args.preflight:
        from ..data.preflight import preflight_split

        preflight_split(cfg.data, cfg.data.train_split)
    return cfg


def _claim_output(args: argparse.Namespace) -> None:
    """Main process only: delete the earlier run when asked to, and make sure the folder is writable."""
    from ..training.output_dir import clear_run_files
    from ..utils.files import ensure_output_dir

    if args.overwrite:
        clear_run_files(args.output)
    ensure_output_dir(args.output)


def _report(trainer, result, output: Path) -> int:
    """Print the outcome; exit status 128 + signal number when a signal stopped the run."""
    if result.reason == "interrupted":
        print(
            f"stopped at iteration {result.iteration} by a signal; checkpoint: {trainer.last_checkpoint}; "
            f"continue with: panopticdepth train --output {output} --resume",
            file=sys.stderr,
        )
        return trainer.stop_signals.exit_code
    print(f"trained to iteration {result.iteration} ({result.reason}); final model: {result.final_dir}")
    return 0


def run(args: argparse.Namespace) -> int:
    from ..config import ConfigError
    from ..errors import PanopticDepthError, user_message
    from ..training.distributed import init_distributed, shutdown_distributed
    from ..training.engine import Trainer
    from ..utils.logging import setup_logging

    output = Path(args.output)
    cfg = _prepare(args)
    info = init_distributed(cfg.train.device, cfg.train.dist_timeout_minutes)
    if not info.distributed:
        _check_memory(args, cfg, info)
        _claim_output(args)
        trainer = Trainer(cfg, output, weights=args.weights, resume=args.resume, dist_info=info)
        return _report(trainer, trainer.train(), output)
    # Under torchrun: every rank ends through os._exit after leaving the process group (gloo exit
    # aborts otherwise, ENVIRONMENT.md); errors are printed here because main() never sees them.
    setup_logging(getattr(args, "verbose", 0), info.rank)
    code = 0
    try:
        _check_memory(args, cfg, info)
        if info.is_main:
            _claim_output(args)
        trainer = Trainer(cfg, output, weights=args.weights, resume=args.resume, dist_info=info)
        result = trainer.train()
        code = _report(trainer, result, output) if info.is_main else 0
        if result.reason == "interrupted":
            code = trainer.stop_signals.exit_code
    except (ConfigError, PanopticDepthError, FileNotFoundError) as err:
        print(f"panopticdepth train (rank {info.rank}): error: {user_message(err)}", file=sys.stderr)
        code = 2
    except BaseException:  # noqa: BLE001 - report, then leave the group cleanly
        import traceback

        traceback.print_exc()
        code = 1
    shutdown_distributed(exit_code=code)
    return code
