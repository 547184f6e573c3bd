"""Resuming a multi-process run: rank 0 decides, the other ranks follow or get the state sent.

Only rank 0 writes checkpoints. Without a shared file system, another node's output folder may lack
the newest checkpoint or hold a different one under the same name (from an older run). So rank 0
picks the checkpoint, every rank compares its own copy with rank 0's by content hash, and when any
rank lacks a matching copy, rank 0 sends the weights and training state to all ranks. Every rank
then starts from the same iteration and the same weights; a rank never guesses on its own.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint.model_dir import WEIGHTS_NAME
from ..errors import CheckpointError
from .checkpointer import STATE_NAME, Checkpointer, load_weights_file
from .distributed import DistInfo, all_gather_object, broadcast_object

log = logging.getLogger(__name__)


@dataclass
class ResumePoint:
    """What every rank resumes from: the weights and the training state of one checkpoint."""

    name: str  # checkpoint folder name, e.g. iter_0000100
    weights: dict[str, torch.Tensor]
    state: dict
    sent_by_rank0: bool  # True when this rank's disk did not hold the same files


def fingerprint(path: Path) -> str | None:
    """SHA-256 over the checkpoint's weights and training state; None when either is missing."""
    digest = hashlib.sha256()
    for name in (WEIGHTS_NAME, STATE_NAME):
        file = path / name
        if not file.is_file():
            return None
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def newest_readable(checkpointer: Checkpointer) -> Path | None:
    """The newest checkpoint whose weights and training state load; an unreadable one is skipped
    with a warning naming it. None when there is none; CheckpointError when none is readable."""
    newest = checkpointer.latest()
    if newest is None:
        return None
    older = [p for p in reversed(checkpointer.checkpoints()) if p.name < newest.name]
    first_error = None
    for ckpt in [newest, *older]:
        try:
            Checkpointer.load_state(ckpt)
            load_weights_file(ckpt)
            return ckpt
        except CheckpointError as err:
            first_error = first_error or err
            log.warning("--resume: %s; trying the previous checkpoint", err)
    raise CheckpointError(
        f"{first_error}; no older readable checkpoint in {checkpointer.dir} "
        "(delete it and start again with --overwrite)"
    )


def agree_on_checkpoint(checkpointer: Checkpointer, info: DistInfo) -> ResumePoint | None:
    """Collective: the checkpoint rank 0 resumes from, on every rank (None = start from scratch).

    A failure on rank 0 (no readable checkpoint) reaches every rank as the same CheckpointError.
    """
    choice = None
    if info.is_main:
        try:
            chosen = newest_readable(checkpointer)
            choice = None if chosen is None else (chosen.name, fingerprint(chosen))
        except CheckpointError as err:
            choice = ("error", str(err))
    choice = broadcast_object(choice, info)
    if choice is None:
        return None
    if choice[0] == "error":
        raise CheckpointError(choice[1])
    name, expected = choice
    local = checkpointer.dir / name
    matches = all_gather_object(fingerprint(local) == expected, info)
    if all(matches):
        return ResumePoint(name, load_weights_file(local), Checkpointer.load_state(local), False)
    missing = [rank for rank, ok in enumerate(matches) if not ok]
    log.warning(
        "rank(s) %s lack checkpoint %s (or hold a different one): rank 0 sends its state to all ranks",
        missing,
        name,
    )
    payload = None
    if info.is_main:
        payload = (load_weights_file(local), Checkpointer.load_state(local))
    weights, state = broadcast_object(payload, info)
    return ResumePoint(name, weights, state, not matches[info.rank])
