"""The output folder of `train`: one run per folder, never two runs mixed in one.

A folder that already holds a run's files is refused unless the user says what to do with it:
`--resume` continues that run, `--overwrite` deletes its files first. Mixing two runs would let
the older run's higher-numbered checkpoints outrank (and prune) the new ones.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from ..errors import PanopticDepthError

log = logging.getLogger(__name__)

#: What `train` writes into its output folder (hidden `.model.*` leftovers of a crash included).
RUN_FILES = ("config.yaml", "metrics.jsonl", "eval_metrics.jsonl", "checkpoints", "model", "tensorboard")


def run_files(output: str | os.PathLike) -> list[str]:
    """Names of the files and folders in `output` that belong to a training run."""
    output = Path(output)
    if not output.is_dir():
        return []
    found = [name for name in RUN_FILES if (output / name).exists()]
    found += sorted(p.name for p in output.glob(".model.*"))
    return found


def check_output_dir(output: str | os.PathLike, resume: bool = False, overwrite: bool = False) -> list[str]:
    """Refuse an output folder that cannot take this run; returns the earlier run's files.

    * `output` is a file: refused.
    * `resume`: the folder is continued (it may also be new or empty).
    * otherwise a folder holding run files is refused, unless `overwrite` (the caller then deletes
      them with `clear_run_files` before writing anything).
    """
    output = Path(output)
    if resume and overwrite:
        raise PanopticDepthError(
            "--resume continues the run in --output and --overwrite deletes it: pass one"
        )
    if output.exists() and not output.is_dir():
        raise PanopticDepthError(f"{output}: --output must be a folder, but a file of that name exists")
    found = run_files(output)
    if found and not resume and not overwrite:
        raise PanopticDepthError(
            f"{output}: holds an earlier training run ({', '.join(found)}); pass --resume to continue "
            "it, --overwrite to delete it and start again, or choose another --output"
        )
    return found


def clear_run_files(output: str | os.PathLike) -> list[str]:
    """Delete the run files of `output` (nothing else in it); returns their names."""
    output = Path(output)
    removed = run_files(output)
    for name in removed:
        path = output / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    if removed:
        log.warning("--overwrite: deleted the earlier run's %s in %s", ", ".join(removed), output)
    return removed
