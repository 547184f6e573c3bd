"""Synthetic data generator throughput (one core): render only, and render + PNG writing.

OMP_NUM_THREADS=1 python benchmarks/synth.py [--num 40] [--sizes 256x512,512x1024] [--format semkitti]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from panopticdepth.data.synthetic import generate, generate_semkitti
from panopticdepth.data.synthetic.semkitti import semkitti_prefix, write_semkitti_frame
from panopticdepth.data.synthetic.writer import synth_prefix, write_frame

# --format -> (frame i at a size, write frame i into a folder); semkitti adds the LiDAR sampling.
FORMATS = {
    "cityscapes-dps": (generate, lambda folder, i, f: write_frame(folder, synth_prefix(i), f)),
    "semkitti": (
        generate_semkitti,
        lambda folder, i, f: write_semkitti_frame(folder, semkitti_prefix(0, i), f),
    ),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num", type=int, default=40)
    ap.add_argument(
        "--sizes", default=None, help="default 128x256,256x512,512x1024; semkitti 94x310,376x1241"
    )
    ap.add_argument("--format", choices=sorted(FORMATS), default="cityscapes-dps")
    args = ap.parse_args()
    gen, write = FORMATS[args.format]
    sizes = args.sizes or ("94x310,376x1241" if args.format == "semkitti" else "128x256,256x512,512x1024")
    gen(0, 0, 64, 128)  # warm-up (imports, caches)
    print("img/s from process CPU time (one core; wall time suffers when the machine is shared)")
    print(f"{'size (HxW)':>12} {'render img/s':>13} {'ms/img':>8} {'render+write img/s':>19} {'ms/img':>8}")
    for size in sizes.split(","):
        h, w = (int(x) for x in size.lower().split("x"))
        t0 = time.process_time()
        for i in range(args.num):
            gen(0, i, h, w)
        render_s = (time.process_time() - t0) / args.num
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.process_time()
            for i in range(args.num):
                write(Path(tmp), i, gen(0, i, h, w))
            write_s = (time.process_time() - t0) / args.num
        rs, ws = render_s, write_s
        print(f"{size:>12} {1 / rs:13.1f} {1000 * rs:8.1f} {1 / ws:19.1f} {1000 * ws:8.1f}")


if __name__ == "__main__":
    main()
