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
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..data.synthetic import write_dataset

    if args.num < 1:
        raise PanopticDepthError(f"--num must be >= 1 (got {args.num})")
    h, w = args.size
    folder = write_dataset(args.out, args.split, args.num, height=h, width=w, seed=args.seed)
    print(f"wrote {args.num} frames of height {h} x width {w} (--size {h}x{w}) to {folder}")
    return 0
