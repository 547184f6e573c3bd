"""Evaluate prediction folders against ground-truth folders in the released layouts.

Files are paired by *name* (the frame stem), never by position: a missing or extra prediction file
is an error that lists the files. Within a sequence frames are ordered by stem, which is the
official evaluator's sorted order, so its k-frame windows are reproduced. Unlike the official
Cityscapes script (which hard-codes 6 frames per sequence, docs/evaluation_protocol.md#files-and-pairing)
every frame is used; `max_frames_per_sequence=6` restores the official truncation.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..io.formats import open_png
from ..io.png import read_png_fast
from ..io.semkitti import read_semkitti_panoptic
from ..utils.progress import progress
from .accumulator import DPSEvaluator, FrameRecord

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameFiles:
    stem: str
    sequence: str
    gt_panoptic: tuple[str, ...]  # one path (Cityscapes) or (class, instance) (SemKITTI)
    gt_depth: str | None
    pred_panoptic: tuple[str, ...]
    pred_depth: str | None


def _index(folder: Path, suffix: str, contains: str = "") -> dict[str, str]:
    """stem -> path for files named `<stem><suffix>` (and containing `contains`)."""
    out = {}
    for entry in os.scandir(folder):
        name = entry.name
        if name.endswith(suffix) and contains in name and entry.is_file():
            out[name[: -len(suffix)]] = entry.path
    return out


def _index_prefix(folder: Path, marker: str) -> dict[str, str]:
    """stem -> path for PNG files named `<stem><marker>...png` (SemKITTI depth has a focal suffix)."""
    out = {}
    for entry in os.scandir(folder):
        name = entry.name
        if name.endswith(".png") and marker in name and entry.is_file():
            out[name[: name.index(marker)]] = entry.path
    return out


def _resolve(folder: str | os.PathLike, probe, subdirs: tuple[str, ...]) -> Path:
    """`folder` itself when it holds matching files, else its first sub-folder that does."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a directory")
    if probe(folder):
        return folder
    for sub in subdirs:
        if (folder / sub).is_dir() and probe(folder / sub):
            return folder / sub
    return folder


def _has(suffix: str):
    return lambda d: any(n.endswith(suffix) for n in os.listdir(d))


def _check_pairs(what: str, gt: dict[str, str], pred: dict[str, str], folder: Path) -> None:
    missing = sorted(set(gt) - set(pred))
    extra = sorted(set(pred) - set(gt))
    problems = []
    if missing:
        problems.append(f"missing {what} for {len(missing)} frame(s): {', '.join(missing[:20])}")
    if extra:
        problems.append(
            f"{len(extra)} {what} file(s) without ground truth: " + ", ".join(pred[s] for s in extra[:20])
        )
    if problems:
        raise DataError(f"{folder}: " + "; ".join(problems))


def list_cityscapes_dps(
    gt_dir: str | os.PathLike,
    pred_dir: str | os.PathLike,
    pred_depth_dir: str | os.PathLike | None = None,
    need_depth: bool = True,
) -> list[FrameFiles]:
    """Cityscapes-DVPS: `<stem>_gtFine_instanceTrainIds.png` + `<stem>_depth.png` vs `<stem>_panoptic.png`
    + `<stem>_depth.png`; sequence = first `_` token of the stem
    (docs/evaluation_protocol.md#files-and-pairing)."""
    gt = _resolve(gt_dir, _has("_instanceTrainIds.png"), ("gt", "val"))
    pred = _resolve(pred_dir, _has("_panoptic.png"), ("pred", "pred_panoptic"))
    gt_pan = {s[: s.rindex("_gtFine")] if "_gtFine" in s else s: p
              for s, p in _index(gt, "_instanceTrainIds.png", "gtFine").items()}  # fmt: skip
    if not gt_pan:
        raise DataError(f"{gt}: no *_gtFine_instanceTrainIds.png ground-truth files")
    pred_pan = _index(pred, "_panoptic.png")
    _check_pairs("prediction *_panoptic.png", gt_pan, pred_pan, pred)
    gt_depth = pred_depth = {}
    if need_depth:
        gt_depth = _index(gt, "_depth.png")
        missing = sorted(set(gt_pan) - set(gt_depth))
        if missing:
            raise DataError(f"{gt}: missing ground-truth depth *_depth.png for: {', '.join(missing[:20])}")
        depth_folder = Path(pred_depth_dir) if pred_depth_dir else pred
        pred_depth = {s: p for s, p in _index(depth_folder, "_depth.png").items()}
        _check_pairs("prediction *_depth.png", gt_pan, pred_depth, depth_folder)
    return [
        FrameFiles(
            stem=s,
            sequence=s.split("_")[0],
            gt_panoptic=(gt_pan[s],),
            gt_depth=gt_depth.get(s),
            pred_panoptic=(pred_pan[s],),
            pred_depth=pred_depth.get(s),
        )
        for s in sorted(gt_pan)
    ]


def list_semkitti_dps(
    gt_dir: str | os.PathLike,
    pred_dir: str | os.PathLike,
    pred_depth_dir: str | os.PathLike | None = None,
    need_depth: bool = True,
) -> list[FrameFiles]:
    """SemKITTI-DVPS (docs/evaluation_protocol.md#semkitti): GT class/instance/depth_<focal> vs prediction
    cat/ins + depth."""
    gt = _resolve(gt_dir, _has("_gtFine_class.png"), ("gt", "val"))
    pred = _resolve(pred_dir, _has("_cat.png"), ("pred_panoptic", "pred"))
    gt_cls = _index(gt, "_gtFine_class.png")
    if not gt_cls:
        raise DataError(f"{gt}: no *_gtFine_class.png ground-truth files")
    gt_ins = _index(gt, "_gtFine_instance.png")
    missing = sorted(set(gt_cls) - set(gt_ins))
    if missing:
        raise DataError(f"{gt}: missing *_gtFine_instance.png for: {', '.join(missing[:20])}")
    pred_cat = _index(pred, "_cat.png")
    pred_ins = _index(pred, "_ins.png")
    _check_pairs("prediction *_cat.png", gt_cls, pred_cat, pred)
    _check_pairs("prediction *_ins.png", gt_cls, pred_ins, pred)
    gt_depth = pred_depth = {}
    if need_depth:
        gt_depth = _index_prefix(gt, "_depth")
        missing = sorted(set(gt_cls) - set(gt_depth))
        if missing:
            raise DataError(
                f"{gt}: missing ground-truth depth *_depth_<focal>.png for: {', '.join(missing[:20])}"
            )
        if pred_depth_dir:
            depth_folder = Path(pred_depth_dir)
        else:
            candidates = [
                pred,
                pred / "pred_depth",
                pred.parent / "pred_depth",
                Path(pred_dir) / "pred_depth",
            ]
            depth_folder = next((c for c in candidates if c.is_dir() and _index_prefix(c, "_depth")), pred)
        pred_depth = _index_prefix(depth_folder, "_depth")
        _check_pairs("prediction *_depth.png", gt_cls, pred_depth, depth_folder)
    return [
        FrameFiles(
            stem=s,
            sequence=s.split("_")[0],
            gt_panoptic=(gt_cls[s], gt_ins[s]),
            gt_depth=gt_depth.get(s),
            pred_panoptic=(pred_cat[s], pred_ins[s]),
            pred_depth=pred_depth.get(s),
        )
        for s in sorted(gt_cls)
    ]


def _png(path: str, what: str, channels: int) -> np.ndarray:
    fast = read_png_fast(path)  # 8-bit RGB / 16-bit gray only, else None
    if fast is not None and fast.ndim == (2 if channels == 1 else 3):
        return fast
    img = open_png(path)
    arr = np.asarray(img)
    if channels == 1 and (arr.ndim != 2 or img.mode not in ("I;16", "I;16B", "I;16L", "I")):
        raise DataError(f"{path}: {what} must be a single-channel 16-bit PNG, got mode {img.mode}")
    if channels == 3 and (arr.ndim != 3 or arr.shape[2] < 3):
        raise DataError(f"{path}: {what} must be an RGB PNG, got mode {img.mode}")
    return arr


def decode_rgb_code(codes: np.ndarray) -> np.ndarray:
    """Compact prediction code G * 256 + R -> official id R * 1000 + G
    (docs/evaluation_protocol.md#encodings)."""
    return (codes & 255) * 1000 + (codes >> 8)


def read_frame(files: FrameFiles, dataset: str):
    """(pred code, pred depth raw, gt ids, gt depth raw, pred decoder) in the official encodings.

    Arrays stay in their PNG dtypes (uint16 / uint8): the evaluator's integer paths use them
    directly, and a Cityscapes prediction is kept as the 16-bit code G * 256 + R until its unique
    values are decoded to R * 1000 + G.
    """
    decode = None
    if dataset == "semkitti-dps":
        gt = read_semkitti_panoptic(*files.gt_panoptic)
        pred = read_semkitti_panoptic(*files.pred_panoptic)
    else:
        gt = _png(files.gt_panoptic[0], "panoptic id map", 1)
        rgb = _png(files.pred_panoptic[0], "panoptic prediction", 3)
        pred = np.left_shift(rgb[..., 1], 8, dtype=np.uint16)
        pred |= rgb[..., 0]
        decode = decode_rgb_code
    gt_depth = _png(files.gt_depth, "depth map", 1) if files.gt_depth else None
    pred_depth = _png(files.pred_depth, "depth map", 1) if files.pred_depth else None
    return pred, pred_depth, gt, gt_depth, decode


# Worker-process state: the evaluator settings are sent once, not with every frame.
_WORKER: dict = {}


def _init_worker(settings: dict, dataset: str) -> None:
    _WORKER["ev"] = DPSEvaluator(**settings)
    _WORKER["dataset"] = dataset


def _frame_job(files: FrameFiles) -> FrameRecord:
    ev: DPSEvaluator = _WORKER["ev"]
    pred, pred_depth, gt, gt_depth, decode = read_frame(files, _WORKER["dataset"])
    return ev.compute_frame(
        pred, pred_depth, gt, gt_depth, name=str(files.pred_panoptic[0]), pred_decode=decode
    )


def _decoded(frames: list[FrameFiles], dataset: str, ahead: int = 2) -> Iterator[tuple]:
    """Frames decoded by reader threads, at most `ahead` in flight (bounded memory).

    PNG decoding (zlib, in C with the GIL released) is most of the cost of a frame; overlapping it
    with the pixel pass of the previous frame uses a second core without a second process.
    """
    with ThreadPoolExecutor(ahead) as pool:
        pending: deque = deque()
        for f in frames:
            pending.append(pool.submit(read_frame, f, dataset))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _records(frames: list[FrameFiles], settings: dict, dataset: str, workers: int) -> Iterator[FrameRecord]:
    if workers <= 1:
        _init_worker(settings, dataset)
        ev: DPSEvaluator = _WORKER["ev"]
        for f, (pred, pred_depth, gt, gt_depth, decode) in zip(frames, _decoded(frames, dataset)):
            yield ev.compute_frame(
                pred, pred_depth, gt, gt_depth, name=str(f.pred_panoptic[0]), pred_decode=decode
            )
        return
    chunk = max(1, min(8, len(frames) // (4 * workers)))
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(settings, dataset)) as pool:
        yield from pool.map(_frame_job, frames, chunksize=chunk)


def evaluate_folders(
    gt_dir: str | os.PathLike,
    pred_dir: str | os.PathLike,
    dataset: str = "cityscapes-dps",
    frames: tuple[int, ...] = (1,),
    lambdas: tuple[float, ...] = (0.5, 0.25, 0.1),
    workers: int = 1,
    pred_depth_dir: str | os.PathLike | None = None,
    max_frames_per_sequence: int | None = None,
    depth_metrics: bool = True,
    wrap_uint16_depth: bool = False,
) -> DPSEvaluator:
    """Pixel passes run in `workers` processes; windows are matched in this process, in order."""
    lister = list_semkitti_dps if dataset == "semkitti-dps" else list_cityscapes_dps
    # Depth files are required whenever they are used (the official script always requires them).
    files = lister(gt_dir, pred_dir, pred_depth_dir, need_depth=bool(lambdas) or depth_metrics)
    if max_frames_per_sequence is not None:
        seen: dict[str, int] = {}
        kept = []
        for f in files:
            seen[f.sequence] = seen.get(f.sequence, 0) + 1
            if seen[f.sequence] <= max_frames_per_sequence:
                kept.append(f)
        files = kept
    settings = dict(
        dataset=dataset,
        frames=frames,
        lambdas=lambdas,
        depth_scale=256.0,
        depth_metrics=depth_metrics,
        wrap_uint16_depth=wrap_uint16_depth,
    )
    ev = DPSEvaluator(**settings)
    counts: dict[str, int] = {}
    for f in files:
        counts[f.sequence] = counts.get(f.sequence, 0) + 1
    short = sorted(s for s, n in counts.items() if n < max(frames))
    if short and not ev.protocol.windows_cross_sequences:
        logger.warning("sequences with fewer than %d frames give no %d-frame window: %s", max(frames),
                       max(frames), ", ".join(short[:10]))  # fmt: skip
    logger.info("evaluating %d frames in %d sequences (%s)", len(files), len(counts), dataset)
    records = _records(files, settings, dataset, workers)
    for f, rec in zip(files, progress(records, total=len(files), desc="evaluate", unit="frame")):
        ev.add_frame(rec, f.sequence)
    return ev
