"""`panopticdepth predict`: panoptic segmentation + depth for images, folders, sequences and videos.

Per input frame, in `--output`:

* `<stem>_panoptic.png`: official RGB prediction format (R = class id of the model's label space,
  G = instance id, B = 0); with `--format semkitti` `<stem>_cat.png` + `<stem>_ins.png` instead
  (SemKITTI-DVPS, `_leftImg8bit` dropped from the stem);
* `<stem>_depth.png`: uint16 metres * 256 (not written for a model without depth);
* with `--raw`, `<stem>.npz`: `panoptic` int32 (H, W) = train id * 1000 + instance (instance 0
  for stuff; 32000 = VOID, segmentation-only models), `depth` float32 (H, W) metres (absent without
  depth), `segments` a structured array with fields `id` int32 (panoptic id), `category` int32
  (train id), `score` float32, `is_thing` bool, `area` int64 (pixels);
* with `--vis`, `<stem>_vis.png` (panel); with `--pointcloud`, `<stem>.ply` (coloured points).

With `--format coco-panoptic` the panoptic result goes to `panoptic.json` + `panoptic/<image_id>.png`
instead of `<stem>_panoptic.png`: the COCO-panoptic files of Cityscapes' panoptic evaluation, with
Cityscapes label ids as categories (`panopticdepth.io.coco_panoptic`); the other files are unchanged.

Frames of a video get the stem `<videostem>_<frame:06d>`. Within a video or a frame folder, thing
instance ids follow the objects from frame to frame (`modeling/tracking.py`; `--no-track` turns it
off) in every format; `--vis-video` writes `<sequence>_vis.mp4` of the panels (`cli/video.py`).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path
from typing import Any

from ..label_space import CITYSCAPES, LabelSpace
from .common import add_config_arguments
from .video import PanelVideos, SequenceTracking, add_tracking_arguments

logger = logging.getLogger(__name__)

_OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+=")
SEGMENT_DTYPE = [("id", "<i4"), ("category", "<i4"), ("score", "<f4"), ("is_thing", "?"), ("area", "<i8")]


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "predict",
        help="predict panoptic segmentation and depth for images or videos",
        description=(
            "Run a model directory (written by 'convert' or 'train') on images, folders, image "
            "sequences or video files; write the official panoptic PNG and the uint16 depth PNG per frame."
        ),
    )
    p.add_argument(
        "--weights", required=True, metavar="DIR", help="model directory (model.safetensors + config.yaml)"
    )
    p.add_argument(
        "--input", required=True, nargs="+", metavar="PATH", help="images, folders, globs or videos"
    )
    p.add_argument("--output", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--format",
        choices=("dvps", "semkitti", "coco-panoptic"),
        default="dvps",
        help="panoptic output: dvps = <stem>_panoptic.png (R = class id of the model's label space, "
        "G = instance); semkitti = <stem>_cat.png + <stem>_ins.png (SemKITTI-DVPS); coco-panoptic = "
        "panoptic.json + panoptic/<image_id>.png for 'evaluate --dataset cityscapes-panoptic'",
    )
    p.add_argument("--raw", action="store_true", help="also write <stem>.npz (panoptic ids, depth, segments)")
    p.add_argument("--vis", action="store_true", help="also write a visualisation panel <stem>_vis.png")
    p.add_argument("--pointcloud", action="store_true", help="also write a coloured point cloud <stem>.ply")
    p.add_argument(
        "--intrinsics",
        metavar="SPEC",
        help="camera for --pointcloud: 'fx,fy,cx,cy' or a Cityscapes camera JSON (default: from the size)",
    )
    p.add_argument(
        "--bf16", action="store_true", help="bfloat16 autocast for the network (faster on CPUs with bf16)"
    )
    p.add_argument(
        "--channels-last", action="store_true", help="channels_last memory format (faster on the CPU)"
    )
    p.add_argument(
        "--batch-size", type=int, default=1, metavar="N", help="images per forward pass (default 1)"
    )
    p.add_argument(
        "--device",
        default="auto",
        help="auto (a CUDA GPU when there is one, else the CPU), cpu, cuda or cuda:N (default auto)",
    )
    p.add_argument(
        "--skip-errors",
        action="store_true",
        help="exit 0 even if some inputs fail (they are still listed); without it, any failure exits 1 "
        "after every other input is written",
    )
    add_tracking_arguments(p, panels=True)
    add_config_arguments(p)
    p.set_defaults(func=run)
    return p


def segments_array(segments: list) -> Any:
    """Segment list -> structured numpy array (layout `SEGMENT_DTYPE`)."""
    import numpy as np

    rows = [(s.id, s.category, s.score, s.is_thing, s.area) for s in segments]
    return np.array(rows, dtype=SEGMENT_DTYPE)


def write_outputs(
    out_dir: Path, stem: str, image_rgb, result, args: argparse.Namespace, space: LabelSpace = CITYSCAPES
) -> None:
    """All files of one frame (atomic writes); class ids are those of the model's label space."""
    import numpy as np

    from ..io.formats import LABEL_DIVISOR, write_depth, write_panoptic_rgb
    from ..io.semkitti import write_semkitti_prediction
    from ..utils.files import atomic_path

    panoptic = result.panoptic.cpu().numpy().astype(np.int32)
    depth = None if result.depth is None else result.depth.float().cpu().numpy().astype(np.float32)
    fmt = getattr(args, "format", "dvps")
    if fmt == "dvps":
        write_panoptic_rgb(
            out_dir / f"{stem}_panoptic.png", space.panoptic_to_dataset(panoptic, LABEL_DIVISOR)
        )
    elif fmt == "semkitti":
        write_semkitti_prediction(out_dir, stem, panoptic, space)
        stem = stem.removesuffix("_leftImg8bit")
    if depth is not None:
        write_depth(out_dir / f"{stem}_depth.png", depth)
    if args.raw:
        arrays = {"panoptic": panoptic, "segments": segments_array(result.segments)}
        if depth is not None:
            arrays["depth"] = depth
        with atomic_path(out_dir / f"{stem}.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)
    if args.vis:
        from ..visualization import save_panel

        save_panel(out_dir / f"{stem}_vis.png", image_rgb, result, label_space=space)
    if args.pointcloud:
        if depth is None:
            logger.warning("%s: the model predicts no depth; no point cloud written", stem)
        else:
            from ..io.pointcloud import parse_intrinsics, write_pointcloud_ply

            h, w = panoptic.shape
            intrinsics = parse_intrinsics(args.intrinsics, h, w)
            write_pointcloud_ply(out_dir / f"{stem}.ply", image_rgb, depth, panoptic, intrinsics)


def _split_overrides(inputs: list[str], overrides: list[str]) -> tuple[list[str], list[str]]:
    """`--input a.png model.x=1` puts the override into --input (nargs='+'): move it back."""
    kept = []
    for item in inputs:
        if _OVERRIDE.match(item) and not Path(item).exists():
            overrides.append(item)
        else:
            kept.append(item)
    return kept, overrides


def _where(frame: Any) -> str:
    return str(frame.source) if frame.frame is None else f"{frame.source} (frame {frame.frame})"


def run(args: argparse.Namespace) -> int:
    from ..errors import PanopticDepthError, user_message
    from ..io.inputs import count_frames, iter_frames, resolve_inputs
    from ..modeling.predictor import Predictor
    from ..utils.files import ensure_output_dir, remove_stale_temporaries
    from ..utils.progress import progress

    if args.batch_size < 1:
        raise PanopticDepthError(f"--batch-size must be >= 1, got {args.batch_size}")
    weights = Path(args.weights)
    if not weights.is_dir():
        raise PanopticDepthError(
            f"{weights}: --weights must be a model directory (model.safetensors + config.yaml)"
        )
    inputs, overrides = _split_overrides(args.input, list(args.overrides or []))
    items = resolve_inputs(inputs)
    if args.pointcloud and args.intrinsics:  # fail early on a bad camera spec
        from ..io.pointcloud import parse_intrinsics

        parse_intrinsics(args.intrinsics, 1, 1)
    out_dir = ensure_output_dir(args.output)  # before the model loads: a bad path fails at once
    predictor = Predictor.from_dir(
        weights,
        config_path=args.config,
        overrides=overrides,
        device=args.device,
        channels_last=args.channels_last,
        bf16=args.bf16,
        with_instance_masks=False,
        with_sem_seg=False,
    )
    if args.format == "coco-panoptic" and predictor.label_space.name != "cityscapes":
        raise PanopticDepthError(
            f"{weights}: --format coco-panoptic writes Cityscapes label ids; this model's label space is "
            f"{predictor.label_space.describe()} (use --format dvps or semkitti)"
        )
    for stale in remove_stale_temporaries(out_dir):
        logger.info("removed %s, left by an interrupted run", stale.name)
    try:
        total = count_frames(items)
    except PanopticDepthError:  # an unreadable video: reported when it is read
        total = None
    bar = progress(total=total, desc="predict", unit="img")
    coco = _coco_writer(out_dir, args)
    pending = []
    done = 0
    failures: list[str] = []
    # Video: batched inference, then tracking and panel videos in frame order.
    track, videos = (
        SequenceTracking.from_args(args),
        PanelVideos.from_args(out_dir, args, predictor.label_space),
    )

    def failed(where: str, err: BaseException) -> None:
        text = user_message(err) if isinstance(err, PanopticDepthError) else f"{type(err).__name__}: {err}"
        line = text if text.startswith(where) else f"{where}: {text}"
        logger.warning("skipped %s", line)
        failures.append(line)

    def write(frames: list, results: list) -> None:
        nonlocal done
        for frame, result in zip(frames, results):
            try:
                result = track(frame.sequence, result)
                write_outputs(out_dir, frame.stem, frame.image, result, args, predictor.label_space)
                videos.add(frame, result)
                if coco is not None:
                    coco.add(frame.stem, result.panoptic.cpu().numpy())
                done += 1
            except (PanopticDepthError, OSError, ValueError) as err:
                failed(_where(frame), err)

    def flush() -> None:
        try:
            track.prepare(predictor, [f.sequence for f in pending])
            results = predictor.predict_batch([f.image for f in pending], batch_size=args.batch_size)
            write(pending, results)
        except (PanopticDepthError, RuntimeError, ValueError) as err:
            if len(pending) == 1:
                failed(_where(pending[0]), err)
            else:  # find the frame at fault; the others are still written
                for frame in pending:
                    try:
                        write([frame], predictor.predict_batch([frame.image]))
                    except (PanopticDepthError, RuntimeError, ValueError) as one_err:
                        failed(_where(frame), one_err)
        bar.update(len(pending))
        pending.clear()

    for frame in iter_frames(items, on_error=lambda path, err: failed(str(path), err)):
        pending.append(frame)
        if len(pending) >= args.batch_size:
            flush()
    if pending:
        flush()
    videos.close()
    bar.close()
    if coco is not None:
        logger.info("wrote %s", coco.close())
    logger.info("wrote predictions for %d frame(s) to %s", done, out_dir)
    if failures:
        print(
            f"panopticdepth predict: {len(failures)} input(s) failed, {done} frame(s) written:",
            file=sys.stderr,
        )
        for line in failures:
            print(f"  {line}", file=sys.stderr)
        return 0 if args.skip_errors and done > 0 else 1
    return 0


def _coco_writer(out_dir: Path, args: argparse.Namespace):
    """The COCO-panoptic writer of `--format coco-panoptic` (None for the dvps format)."""
    if getattr(args, "format", "dvps") != "coco-panoptic":
        return None
    from ..io.coco_panoptic import CocoPanopticWriter

    return CocoPanopticWriter(out_dir)
