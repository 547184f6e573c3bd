"""Seconds per training iteration and peak memory on the CPU (issue 6 benchmark).

Cases: the paper's R-50 DPS model (deformable convs, 256 channels) at 512x1024 with batch 1 and 2,
and the small CPU config (configs/synthetic/small_cpu.yaml) at its demo size. One iteration =
preprocess + forward + targets + losses + backward + value clipping + Adam step, exactly the
engine's step. Each case runs in a fresh process so that the peak resident memory is its own.

    OMP_NUM_THREADS=2 python benchmarks/train_step.py [--iters 3] [--threads 2] [--cases r50-b1 small]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = {
    # name: (config file or None = defaults, overrides, height, width, batch)
    "r50-512x1024-b1": (None, [], 512, 1024, 1),
    "r50-512x1024-b2": (None, [], 512, 1024, 2),
    "small-128x256-b4": ("configs/synthetic/small_cpu.yaml", [], 128, 256, 4),
    "small-256x512-b4": ("configs/synthetic/small_cpu.yaml", [], 256, 512, 4),
}


def run_case(name: str, iters: int, threads: int) -> dict:
    import torch

    from panopticdepth.config import load_config
    from panopticdepth.data.sample import make_sample
    from panopticdepth.data.synthetic.writer import generate
    from panopticdepth.modeling import build_model
    from panopticdepth.modeling.preprocess import preprocess
    from panopticdepth.training.engine import LossModule, default_criterion
    from panopticdepth.training.solver import build_lr_scheduler, build_optimizer, clip_gradients

    torch.set_num_threads(threads)
    cfg_file, overrides, h, w, batch = CASES[name]
    cfg = load_config(REPO / cfg_file if cfg_file else None, [*overrides, "model.backbone.pretrained="])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    model.train()
    opt = build_optimizer(model, cfg.solver)
    sched = build_lr_scheduler(opt, cfg.solver)
    step_module = LossModule(model, default_criterion, cfg, torch.device("cpu"))
    frames = [generate(0, i, h, w) for i in range(batch)]
    samples = [
        make_sample(f.image, f.panoptic.astype("int64"), f.depth, {"image_id": str(i)})
        for i, f in enumerate(frames)
    ]

    def step() -> None:
        x, _ = preprocess([s["image"] for s in samples], cfg.model)
        losses = step_module(x, samples, (int(x.shape[-2]), int(x.shape[-1])))
        sum(losses.values()).backward()
        clip_gradients(model.parameters(), cfg.solver.clip_value)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()

    step()  # warm-up (allocator, first-call overheads)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    sec = (time.perf_counter() - t0) / iters
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"case": name, "batch": batch, "size": f"{h}x{w}", "sec_per_iter": sec, "peak_rss_mb": peak_mb}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    p.add_argument("--cases", nargs="*", default=list(CASES))
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_case(args.one, args.iters, args.threads)))
        return
    rows = []
    for name in args.cases:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            name,
            "--iters",
            str(args.iters),
            "--threads",
            str(args.threads),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PANOPTICDEPTH_PROGRESS": "0"}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
        if out.returncode != 0:
            print(f"{name}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(
        f"{'case':<20} {'batch':>5} {'size':>9} {'s/iter':>8} {'peak RSS MB':>12}   ({args.threads} threads)"
    )
    for r in rows:
        sec, mb = r["sec_per_iter"], r["peak_rss_mb"]
        print(f"{r['case']:<20} {r['batch']:>5} {r['size']:>9} {sec:>8.2f} {mb:>12.0f}")


if __name__ == "__main__":
    main()
