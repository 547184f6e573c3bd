"""ONNX Runtime vs PyTorch eager for the network (backbone + heads), CPU, batch 1.

    python benchmarks/onnx_speed.py [--config configs/synthetic/small_cpu.yaml] [--threads 2]

Exports the network once (dynamic size) and prints a table of seconds per forward at a few sizes
(best of N after a warm-up) and the largest absolute difference between the two.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def best_time(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    from panopticdepth.config import load_config
    from panopticdepth.export.onnx import export_onnx, flatten_head_outputs, onnx_session, run_onnx
    from panopticdepth.modeling import build_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/synthetic/small_cpu.yaml")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--sizes", default="128x256,256x512", help="comma-separated HxW list")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        t = time.perf_counter()
        export_onnx(model, cfg.model, path, 256, 512)
        t_export = time.perf_counter() - t
        session = onnx_session(path, threads=args.threads)
        print(f"config {args.config}, {args.threads} threads, export {t_export:.1f} s")
        print(f"{'size':>10} {'eager s':>9} {'onnxrt s':>9} {'speed-up':>9} {'max |diff|':>11}")
        for size in args.sizes.split(","):
            h, w = (int(v) for v in size.split("x"))
            x = torch.randn(1, 3, h, w)
            with torch.no_grad():
                ref = flatten_head_outputs(model(x))
                t_eager = best_time(lambda x=x: model(x), args.repeats)
            got = flatten_head_outputs(run_onnx(session, x))
            t_ort = best_time(lambda x=x: run_onnx(session, x), args.repeats)
            diff = max(float((a - b).abs().max()) for a, b in zip(ref, got))
            print(f"{size:>10} {t_eager:>9.4f} {t_ort:>9.4f} {t_eager / t_ort:>8.2f}x {diff:>11.2e}")


if __name__ == "__main__":
    main()
