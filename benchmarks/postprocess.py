"""Post-processing time per image (kernel producer -> masks -> merge -> depth) on synthetic head outputs.

Head outputs have the shapes of a real image (levels p3..p7, 256-d kernels, 1/4-res embeddings)
and a chosen number of thing centres; the network is not run. Prints one row per size:

    .venv/bin/python benchmarks/postprocess.py [--threads 2] [--things 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from panopticdepth.config.model import ModelConfig
from panopticdepth.modeling.kernel_projection import KernelProjection
from panopticdepth.modeling.outputs import HeadOutputs, LevelOutputs
from panopticdepth.modeling.postprocess import postprocess


def synthetic_outputs(h: int, w: int, things: int, gen: torch.Generator) -> HeadOutputs:
    """A scene-like output: `things` boxes (one embedding channel each), 6 stuff bands."""
    h4, w4 = h // 4, w // 4
    emb = torch.full((1, 256, h4, w4), -6.0)
    depth_emb = torch.randn(1, 16, h4, w4, generator=gen)
    for band in range(6):  # stuff channels 200..205: horizontal bands
        emb[0, 200 + band, band * h4 // 6 : (band + 1) * h4 // 6 + 2] = 6.0
    boxes = []
    for i in range(things):
        bh, bw = (
            int(torch.randint(h4 // 16, h4 // 4, (1,), generator=gen)),
            int(torch.randint(w4 // 32, w4 // 6, (1,), generator=gen)),
        )
        y0, x0 = (
            int(torch.randint(0, h4 - bh, (1,), generator=gen)),
            int(torch.randint(0, w4 - bw, (1,), generator=gen)),
        )
        emb[0, i, y0 : y0 + bh, x0 : x0 + bw] = 6.0
        boxes.append((y0 + bh // 2, x0 + bw // 2))
    levels = []
    for stride in (8, 16, 32, 64, 128):
        lh, lw = h // stride, w // stride
        center = torch.full((1, 8, lh, lw), -6.0)
        region = torch.full((1, 19, lh, lw), -4.0)
        kernels = torch.zeros(1, 256, lh, lw)
        for band in range(6):
            rows = slice(band * lh // 6, max((band + 1) * lh // 6, band * lh // 6 + 1))
            region[0, band, rows] = 3.0
            kernels[0, 200 + band, rows] = 1.0
        if stride == 8:
            for i, (cy, cx) in enumerate(boxes):
                y, x = cy * 4 // stride, cx * 4 // stride
                center[0, i % 8, y, x] = 2.0
                kernels[0, :, y, x] = 0.0
                kernels[0, i, y, x] = 1.0
        depth_k = torch.randn(1, 18, lh, lw, generator=gen)
        levels.append(LevelOutputs(center, region, kernels, depth_k))
    return HeadOutputs(levels, emb, depth_emb)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--things", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sizes", default="256x512,512x1024,1024x2048")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    proj = torch.nn.Linear(256, 256)
    proj.weight.data = torch.eye(256)
    proj.bias.data.zero_()
    model = KernelProjection(proj, proj)
    cfg = ModelConfig()
    print(
        f"threads={args.threads} thing centres~{args.things}; wall s/img (min of {args.repeat}) and CPU s/img"
    )
    header = ("size", "inst", "segs", "CLI wall", "CLI cpu", "extras wall", "extras cpu")
    widths = (10, 5, 5, 9, 8, 12, 11)
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, widths)))
    for size in args.sizes.split(","):
        h, w = (int(v) for v in size.split("x"))
        outputs = synthetic_outputs(h, w, args.things, gen)
        row = []
        for extras in (False, True):
            walls, cpus = [], []
            for _ in range(args.repeat):
                t0, c0 = time.perf_counter(), time.process_time()
                with torch.inference_mode():
                    (res,) = postprocess(
                        outputs, model, cfg, [(h, w)], with_instance_masks=extras, with_sem_seg=extras
                    )
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            row += [min(walls), min(cpus)]
        n = int(res.instance_classes.numel())
        cells = [size, str(n), str(len(res.segments))] + [f"{v:.3f}" for v in row]
        print(" ".join(f"{c:>{w}}" for c, w in zip(cells, widths)))


if __name__ == "__main__":
    main()
