"""Time `evaluate` per 1024x2048 frame side by side with the official DPQ evaluator, in one run.

Synthetic Cityscapes-DVPS frames (GT ids, GT depth, prediction RGB, prediction depth; 6 frames per
sequence, the official script's assumption) are written to a folder; then, repeated and interleaved
so that both see the same machine load:
* official: PanopticDepth's `eval_cityscapes_dvpq.py` (pass its path with --official), run in a
  child process exactly as its README says: `main(1, pred, gt, t)` for t in -1, 0.5, 0.25, 0.1
  (PQ + three lambdas), each call with its own process pool;
* ours, default: `evaluate_folders(gt, pred)` with every default (PQ + three lambdas in one pass,
  plus the depth metrics), as `panopticdepth evaluate --gt --pred` runs it;
* ours, PQ + 3 lambdas: the same without depth metrics (the official script's work);
* decode floor: only decoding the frame's four PNGs with Pillow, serially and on all cores.
Every row is wall-clock seconds per frame, best of --repeats; the ratio is official / row. Both
evaluators' PQ per lambda are printed (ours also with the uint16 depth wraparound that the official
script gets from Pillow >= 10.3) so that a mismatch would show.

    python benchmarks/evaluate.py --official PATH/eval_cityscapes_dvpq.py [--frames 48]
        [--data DIR (reuse frames written there)] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from panopticdepth.evaluation.folders import evaluate_folders, list_cityscapes_dps
from panopticdepth.io.formats import write_panoptic_ids, write_panoptic_rgb

THRESHOLDS = (-1.0, 0.5, 0.25, 0.1)


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
    """`root/gt` and `root/pred` in the released layout (skipped when already complete)."""
    marker = root / f"frames_{n}_{h}x{w}.done"
    if marker.exists():
        return
    rng = np.random.default_rng(0)
    for sub in ("gt", "pred"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for old in (root / sub).glob("*.png"):
            old.unlink()
    for f in range(n):
        gt, gd, pred, pdp = synth_frame(rng, h, w)
        stem = f"{f // 6:06d}_{f % 6:06d}_bench_000000_{f:06d}"
        write_panoptic_ids(root / "gt" / f"{stem}_gtFine_instanceTrainIds.png", gt)
        Image.fromarray(gd).save(root / "gt" / f"{stem}_depth.png")
        write_panoptic_rgb(root / "pred" / f"{stem}_panoptic.png", pred)
        Image.fromarray(pdp).save(root / "pred" / f"{stem}_depth.png")
    marker.touch()


# Runs in a child process: imports the official script from its folder and calls its `main` once
# per threshold. The script imports `six` only for Python 2 iteration helpers; when `six` is not
# installed, a stand-in with the three Python 3 equivalents it uses is put on the path.
_OFFICIAL_CHILD = textwrap.dedent(
    """
    import importlib.util, json, sys, tempfile, time
    from pathlib import Path
    script, gt, pred = sys.argv[1:4]
    thresholds = [float(t) for t in sys.argv[4:]]
    if importlib.util.find_spec("six") is None:
        shim = Path(tempfile.mkdtemp()) / "six.py"
        shim.write_text(
            "class moves:\\n    zip = zip\\n"
            "def iterkeys(d):\\n    return iter(d.keys())\\n"
            "def iteritems(d):\\n    return iter(d.items())\\n"
        )
        sys.path.insert(0, str(shim.parent))
    sys.path.insert(0, str(Path(script).parent))
    official = __import__(Path(script).stem)
    t0 = time.perf_counter()
    out = {str(t): list(official.main(1, pred, gt, t)["averages"]) for t in thresholds}
    seconds = time.perf_counter() - t0
    print("RESULT " + json.dumps({"seconds": seconds, "pq": out}))
    """
)


def run_official(script: Path, root: Path) -> tuple[float, dict]:
    proc = subprocess.run(
        [sys.executable, "-c", _OFFICIAL_CHILD, str(script), str(root / "gt"), str(root / "pred")]
        + [str(t) for t in THRESHOLDS],
        capture_output=True,
        text=True,
        check=False,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"official evaluator failed:\n{proc.stdout}\n{proc.stderr}")
    doc = json.loads(line[len("RESULT ") :])
    return doc["seconds"], doc["pq"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", type=Path, default=None, help="path of eval_cityscapes_dvpq.py")
    ap.add_argument("--frames", type=int, default=48, help="a multiple of 6 (frames per sequence)")
    ap.add_argument("--height", type=int, default=1024)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", type=Path, default=None, help="folder for the frames (kept for reuse)")
    args = ap.parse_args()
    if args.frames % 6:
        ap.error("--frames must be a multiple of 6: the official script assumes 6 frames per sequence")
    if args.official is not None and not args.official.is_file():
        ap.error(f"{args.official}: not a file")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data if args.data is not None else Path(tmp)
        write_case(root, args.frames, args.height, args.width)
        gt_dir, pred_dir = root / "gt", root / "pred"
        files = list_cityscapes_dps(gt_dir, pred_dir)
        n = len(files)
        paths = [p for f in files for p in (*f.gt_panoptic, f.gt_depth, *f.pred_panoptic, f.pred_depth)]

        def decode_serial():
            for path in paths:
                np.asarray(Image.open(path))

        def decode_all_cores():
            with ThreadPoolExecutor(os.cpu_count()) as pool:
                list(pool.map(lambda p: np.asarray(Image.open(p)), paths))

        ours_pq = {}

        def ours(depth_metrics: bool):
            def call():
                ev = evaluate_folders(root / "gt", root / "pred", depth_metrics=depth_metrics)
                ours_pq.update({k: v["averages"]["pq"] for k, v in ev.summary()["runs"].items()})

            return call

        rows: dict[str, list[float]] = {}
        jobs = [
            ("ours, default (PQ + 3 λ + depth metrics)", ours(True)),
            ("ours, PQ + 3 λ (--no-depth-metrics)", ours(False)),
            ("decode 4 PNGs (Pillow, serial)", decode_serial),
            (f"decode 4 PNGs (Pillow, {os.cpu_count()} threads)", decode_all_cores),
        ]
        official_pq = {}
        for _ in range(args.repeats):
            if args.official is not None:
                seconds, official_pq = run_official(args.official, root)
                rows.setdefault("official (PQ + 3 λ, its process pool)", []).append(seconds)
            for name, fn in jobs:
                t0 = time.perf_counter()
                fn()
                rows.setdefault(name, []).append(time.perf_counter() - t0)
        # The official script subtracts the depth maps in the arrays' own dtype; Pillow >= 10.3 reads
        # 16-bit PNGs as uint16, so there |p - g| wraps around. Ours (signed, the reference numbers)
        # reproduces that only on request; both columns are printed so that either comparison shows.
        ev = evaluate_folders(gt_dir, pred_dir, depth_metrics=False, wrap_uint16_depth=True)
        wrapped = {k: v["averages"]["pq"] for k, v in ev.summary()["runs"].items()}

    official = min(rows["official (PQ + 3 λ, its process pool)"]) / n if official_pq else None
    cpus = os.cpu_count()
    print(f"{n} frames of {args.height}x{args.width}, {cpus} CPUs, best of {args.repeats}, wall clock")
    print(f"{'what':<44}{'s/frame':>9}{'official / this':>17}")
    for name, times in rows.items():
        per = min(times) / n
        ratio = f"{official / per:>17.2f}" if official else f"{'-':>17}"
        print(f"{name:<44}{per:>9.4f}{ratio}")
    if official_pq:
        print("PQ per lambda: official | ours | ours with uint16 wraparound")
        for t in THRESHOLDS:
            key = f"k=1,lambda={t:g}"
            print(f"  {t:>5g}: {official_pq[str(t)][0]:10.6f} | {ours_pq[key]:10.6f} | {wrapped[key]:10.6f}")


if __name__ == "__main__":
    main()
