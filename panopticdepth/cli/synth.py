"""`panopticdepth synth`: write a synthetic street-scene dataset in the Cityscapes-DPS layout."""

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
        help="write a synthetic street-scene dataset (Cityscapes-DPS layout)",
        description=(
            "Render random 3D street scenes (road, sidewalks, facades, poles, trees, cars, trucks, buses, "
            "persons, riders, two-wheelers) with a Cityscapes-like pinhole camera and write "
            "OUT/video_sequence/SPLIT/<prefix>_{leftImg8bit,gtFine_instanceTrainIds,depth}.png plus "
            "OUT/video_sequence/dvps_cityscapes_SPLIT.json. Frame i is a pure function of (seed, i). "
            "Read it back with data.dataset=synthetic (or cityscapes-dps) data.root=OUT."
        ),
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output dataset root")
    p.add_argument("--split", default="train", help="split folder name (default: train)")
    p.add_argument("--num", type=int, default=60, metavar="N", help="number of frames (default: 60)")
    p.add_argument(
        "--size", type=parse_size, default=(256, 512), metavar="HxW", help="image size (default 256x512)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
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
    v.add_argument("--frame-step", type=int, default=5, metavar="N",
                   help="video frames between written frames (default 5, as Cityscapes-DVPS)")  # fmt: skip
    v.add_argument("--fps", type=float, default=17.0, help="video frame rate in Hz (default 17)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..data.synthetic import write_dataset

    if args.num < 1:
        raise PanopticDepthError(f"--num must be >= 1 (got {args.num})")
    h, w = args.size
    if args.moving:
        if args.depth_noise != "none":
            raise PanopticDepthError("--depth-noise applies to independent scenes, not --moving")
        return _run_moving(args, h, w)
    folder = write_dataset(
        args.out, args.split, args.num, height=h, width=w, seed=args.seed, depth_noise=args.depth_noise
    )
    print(f"wrote {args.num} frames of height {h} x width {w} (--size {h}x{w}) to {folder}")
    return 0


def _run_moving(args: argparse.Namespace, h: int, w: int) -> int:
    from ..data.synthetic import write_sequences

    length = args.sequence_length
    if length < 1 or args.frame_step < 1 or args.fps <= 0:
        raise PanopticDepthError("--sequence-length and --frame-step must be >= 1 and --fps > 0")
    if args.num % length:
        raise PanopticDepthError(f"--num ({args.num}) must be a multiple of --sequence-length ({length})")
    n_seq = args.num // length
    folder = write_sequences(
        args.out, args.split, n_seq, length, height=h, width=w, seed=args.seed,
        frame_step=args.frame_step, fps=args.fps,
    )  # fmt: skip
    print(f"wrote {n_seq} moving sequences of {length} frames ({w}x{h}) to {folder}")
    return 0
