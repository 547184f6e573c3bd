"""Time the DPQ evaluator per 1024x2048 frame against merely decoding the frame's four PNGs.

Synthetic Cityscapes-DVPS frames (GT ids, GT depth, prediction RGB, prediction depth) are written
to a temporary folder; then, per frame:
* decode: read the four PNGs with the same readers the evaluator uses (lower bound);
* protocol: the full protocol in one pass (PQ + lambda 0.5 / 0.25 / 0.1), including decoding;
* + depth metrics: the same plus abs rel / RMSE / SILog / delta;
* workers N: the protocol with N reading processes.
Reference: the official script needs 0.73 s per frame for PQ + three lambdas on a 2-core CPU.

    python benchmarks/evaluate.py [--frames 12] [--height 1024 --width 2048] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from panopticdepth.evaluation.folders import evaluate_folders, list_cityscapes_dps
from panopticdepth.io.formats import write_panoptic_ids, write_panoptic_rgb


def synth_frame(rng: np.random.Generator, h: int, w: int):
    """Street-like layout: sky / building / vegetation / sidewalk / road bands, ~25 things, void hood."""
    y = np.arange(h)[:, None]
    x = np.arange(w)[None, :]
    horizon = int(h * 0.45)
    gt = np.where(y < h * 0.2, 10, np.where(y < horizon, 2, 0)) * 1000 + np.zeros((h, w), np.int64)
    gt[(y >= horizon) & (x < w * 0.15 + (y - horizon))] = 1000  # sidewalk
    gt[(y < horizon) & (y > h * 0.25) & (x > w * 0.7)] = 8000  # vegetation
    gt[(y > h * 0.1) & (y < horizon) & (np.abs(x - w * 0.3) < 4)] = 5000  # pole
    for i in range(25):
        cls = int(rng.choice([11, 13, 13, 13, 14, 15, 17, 18]))
        cy, cx = int(rng.integers(horizon, h - 80)), int(rng.integers(0, w - 40))
        size = int(10 + (cy - horizon) * 0.5)
        gt[cy - size : cy, cx : cx + int(size * 1.6)] = cls * 1000 + i + 1
    gt[int(h * 0.9) :] = 32000  # ego hood
    depth = np.where(y >= horizon, 2.0 + 50.0 * (h - y) / max(h - horizon, 1) + 0 * x, 30.0 + 0 * x)
    depth = np.minimum(depth, 80.0)
    gt_depth = np.round(depth * 256).astype(np.uint16)
    gt_depth[(gt == 10000) | (gt == 32000)] = 0
    pred = gt.copy()
    pred[gt == 32000] = 0
    pred = np.roll(pred, int(rng.integers(-2, 3)), axis=1)
    inst = (pred // 1000 >= 11) & (pred // 1000 <= 18)
    pred = np.where(inst, pred, (pred // 1000) * 1000 + pred // 1000 + 1)  # stuff instance = trainId + 1
    noise = np.exp(rng.normal(0.0, 0.1, (h, w)))
    pred_depth = np.floor(np.clip(depth * noise, 0, 80) * 256).astype(np.uint16)
    return gt, gt_depth, pred, pred_depth


def write_case(root: Path, n: int, h: int, w: int) -> None:
    rng = np.random.default_rng(0)
    (root / "gt").mkdir()
    (root / "pred").mkdir()
    for f in range(n):
        gt, gd, pred, pdp = synth_frame(rng, h, w)
        stem = f"{f // 6:06d}_{f % 6:06d}_bench_000000_{f:06d}"
        write_panoptic_ids(root / "gt" / f"{stem}_gtFine_instanceTrainIds.png", gt)
        Image.fromarray(gd).save(root / "gt" / f"{stem}_depth.png")
        write_panoptic_rgb(root / "pred" / f"{stem}_panoptic.png", pred)
        Image.fromarray(pdp).save(root / "pred" / f"{stem}_depth.png")


def best_of(fn, repeats: int, clock=time.process_time) -> float:
    """Best of `repeats`; CPU time of this process by default (robust on a shared machine)."""
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--height", type=int, default=1024)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_case(root, args.frames, args.height, args.width)
        files = list_cityscapes_dps(root / "gt", root / "pred")
        n = len(files)

        def decode():  # the four PNGs alone, as arrays in their file dtypes
            for f in files:
                for path in (*f.gt_panoptic, f.gt_depth, *f.pred_panoptic, f.pred_depth):
                    np.asarray(Image.open(path))

        def protocol(workers=1, depth_metrics=False):
            return lambda: evaluate_folders(
                root / "gt", root / "pred", workers=workers, depth_metrics=depth_metrics
            )

        wall = time.perf_counter
        rows = [
            ("decode 4 PNGs", "cpu", best_of(decode, args.repeats)),
            ("protocol (PQ + 3 λ)", "cpu", best_of(protocol(), args.repeats)),
            ("protocol + depth metrics", "cpu", best_of(protocol(depth_metrics=True), args.repeats)),
            ("decode 4 PNGs", "wall", best_of(decode, args.repeats, wall)),
            ("protocol (PQ + 3 λ)", "wall", best_of(protocol(), args.repeats, wall)),
        ]
        if args.workers > 1:
            rows.append(
                (
                    f"protocol, {args.workers} workers",
                    "wall",
                    best_of(protocol(args.workers), args.repeats, wall),
                )
            )
        decode_t = {"cpu": rows[0][2], "wall": rows[3][2]}
        print(f"{n} frames of {args.height}x{args.width}; official script: 0.73 s/frame (PQ + 3 λ)")
        print(f"{'what':<28}{'clock':>6}{'s/frame':>10}{'x decode':>10}{'x faster than official':>24}")
        for name, clock, t in rows:
            per = t / n
            print(f"{name:<28}{clock:>6}{per:>10.4f}{t / decode_t[clock]:>10.2f}{0.73 / per:>24.1f}")


if __name__ == "__main__":
    main()
