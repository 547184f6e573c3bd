"""`panopticdepth synth`: write a synthetic street-scene dataset in the Cityscapes-DPS (default) or
the SemKITTI-DVPS layout."""

from __future__ import annotations

import argparse
import re

from ..errors import PanopticDepthError


def parse_size(text: str) -> tuple[int, int]:
    """'256x512' -> (256, 512) = (height, width)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or int(m.group(1)) < 8 or int(m.group(2)) < 8:
        raise argparse.ArgumentTypeError(
            f"size must be HEIGHTxWIDTH with both >= 8, e.g. 256x512 (got '{text}')"
        )
    return int(m.group(1)), int(m.group(2))


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "synth",
        help="write a synthetic street-scene dataset (Cityscapes-DPS or SemKITTI-DVPS layout)",
        description=(
            "Render random 3D street scenes (road, sidewalks, facades, poles, trees, cars, trucks, buses, "
            "persons, riders, two-wheelers) with a Cityscapes-like pinhole camera and write "
            "OUT/video_sequence/SPLIT/<prefix>_{leftImg8bit,gtFine_instanceTrainIds,depth}.png plus "
            "OUT/video_sequence/dvps_cityscapes_SPLIT.json. Frame i is a pure function of (seed, i). "
            "Read it back with data.dataset=synthetic (or cityscapes-dps) data.root=OUT. "
            "--format semkitti: a KITTI-like camera (default 376x1241) and labels + depth only on the "
            "points of a 64-line LiDAR, written as OUT/video_sequence/SPLIT/SSSSSS_FFFFFF_"
            "{leftImg8bit,gtFine_class,gtFine_instance,depth_<focal>}.png plus "
            "OUT/video_sequence/dvps_semkitti_SPLIT.json (data.dataset=semkitti-dps)."
        ),
    )
    p.add_argument("--format", choices=FORMATS, default=FORMATS[0],
                   help="output layout (default cityscapes-dps)")  # fmt: skip
    p.add_argument("--out", required=True, metavar="DIR", help="output dataset root")
    p.add_argument("--split", default="train", help="split folder name (default: train)")
    p.add_argument("--num", type=int, default=60, metavar="N", help="number of frames (default: 60)")
    p.add_argument(
        "--size", type=parse_size, default=None, metavar="HxW",
        help="image size (default 256x512; 376x1241 for --format semkitti)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="render in N processes (default 1; the files are the same)")  # fmt: skip
    p.add_argument(
        "--depth-noise",
        choices=("none", "stereo"),
        default="none",
        help="ground-truth depth: exact (none, default) or stereo-like (error ~ Z^2, holes and "
        "outliers at object edges; independent scenes only)",
    )
    v = p.add_argument_group("moving sequences (video: camera driving, things moving, ids kept per sequence)")
    v.add_argument(
        "--moving",
        action="store_true",
        help="write moving sequences instead of independent scenes; --num counts frames (a multiple of N)",
    )
    v.add_argument("--sequence-length", type=int, default=6, metavar="N",
                   help="frames per sequence (default 6, as Cityscapes-DVPS)")  # fmt: skip
    v.add_argument("--frame-step", type=int, default=None, metavar="N",
                   help="video frames between written frames (default 5; semkitti 1)")  # fmt: skip
    v.add_argument("--fps", type=float, default=None,
                   help="video frame rate in Hz (default 17; semkitti 10, the LiDAR's)")  # fmt: skip
    p.set_defaults(func=run)
    return p


FORMATS = ("cityscapes-dps", "semkitti")
# Per format: image size, frame step and frame rate when the options are not given.
FORMAT_DEFAULTS = {"cityscapes-dps": ((256, 512), 5, 17.0), "semkitti": ((376, 1241), 1, 10.0)}


def run(args: argparse.Namespace) -> int:
    from ..data.synthetic import write_dataset, write_semkitti_dataset

    if args.num < 1 or args.workers < 1:
        raise PanopticDepthError(f"--num and --workers must be >= 1 (got {args.num} and {args.workers})")
    fmt = args.format
    size, step, fps = FORMAT_DEFAULTS[fmt]
    h, w = args.size or size
    args.frame_step = step if args.frame_step is None else args.frame_step
    args.fps = fps if args.fps is None else args.fps
    if args.moving:
        if args.depth_noise != "none":
            raise PanopticDepthError("--depth-noise applies to independent scenes, not --moving")
        return _run_moving(args, h, w)
    if fmt == "semkitti":
        if args.depth_noise != "none":
            raise PanopticDepthError("--depth-noise applies to the cityscapes-dps format (dense depth)")
        folder = write_semkitti_dataset(
            args.out, args.split, args.num, height=h, width=w, seed=args.seed, workers=args.workers
        )
    else:
        options = {"seed": args.seed, "depth_noise": args.depth_noise, "workers": args.workers}
        folder = write_dataset(args.out, args.split, args.num, height=h, width=w, **options)
    print(f"wrote {args.num} frames of height {h} x width {w} (--size {h}x{w}) to {folder}")
    return 0


def _run_moving(args: argparse.Namespace, h: int, w: int) -> int:
    from ..data.synthetic import write_semkitti_sequences, write_sequences

    length = args.sequence_length
    if length < 1 or args.frame_step < 1 or args.fps <= 0:
        raise PanopticDepthError("--sequence-length and --frame-step must be >= 1 and --fps > 0")
    if args.num % length:
        raise PanopticDepthError(f"--num ({args.num}) must be a multiple of --sequence-length ({length})")
    n_seq = args.num // length
    write = write_semkitti_sequences if args.format == "semkitti" else write_sequences
    folder = write(
        args.out, args.split, n_seq, length, height=h, width=w, seed=args.seed,
        frame_step=args.frame_step, fps=args.fps, workers=args.workers,
    )  # fmt: skip
    print(f"wrote {n_seq} moving sequences of {length} frames ({w}x{h}) to {folder}")
    return 0
