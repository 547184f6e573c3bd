"""Input-pipeline throughput: training samples per second from one loader worker at 1024x2048.

A GPU step of the paper model takes a fraction of a second, so the loader must deliver
`per-GPU batch / step time` samples per second. This script measures what one worker delivers
for the stage-1 pipeline (shortest-edge resize from the recipe's list, flip, random 512x1024 crop,
SSD colour) and the stage-3 pipeline (full 1024x2048 image, colour, flip), reading synthetic
Cityscapes-DPS files written once at full resolution. Divide the needed rate by the printed one
to size `data.num_workers` per GPU.

    python benchmarks/data_pipeline.py [--frames 6] [--samples 12]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = {
    # name: overrides on top of the stage's config
    "stage1 (ps, crop 512x1024)": ("configs/cityscapes/stage1_ps_crop.yaml", []),
    "stage3 (dps, full image)": ("configs/cityscapes/stage3_dps.yaml", []),
}


def measure(config: str, root: Path, samples: int, extra: list[str]) -> tuple[float, float]:
    """(samples per second, mean ms per sample) of dataset[i] with augmentation, one process."""
    from panopticdepth.config import load_config
    from panopticdepth.data.build import build_dataset

    cfg = load_config(
        REPO / config,
        [f"data.root={root}", "data.dataset=synthetic", "model.backbone.pretrained=none", *extra],
    )
    dataset = build_dataset(cfg.data, "train", train=True)
    dataset[0]  # warm-up: imports, first allocations
    t0 = time.perf_counter()
    for i in range(samples):
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(i // len(dataset))
        dataset[i % len(dataset)]
    dt = time.perf_counter() - t0
    return samples / dt, 1000 * dt / samples


def main() -> None:
    import torch

    from panopticdepth.data.synthetic.writer import write_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=6, help="synthetic frames written at 1024x2048")
    parser.add_argument("--samples", type=int, default=12, help="samples drawn per case")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one loader worker = one thread
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        write_dataset(root, "train", args.frames, height=1024, width=2048, seed=0)
        print(f"wrote {args.frames} synthetic 1024x2048 frames in {time.perf_counter() - t0:.1f} s")
        print("| pipeline | samples/s per worker | ms per sample |\n|---|---|---|")
        for name, (config, extra) in CASES.items():
            rate, ms = measure(config, root, args.samples, extra)
            print(f"| {name} | {rate:.2f} | {ms:.0f} |")


if __name__ == "__main__":
    main()
