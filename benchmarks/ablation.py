"""The paper's depth ablation (Table 3) on synthetic data: variants A-F, same data, same budget.

python benchmarks/ablation.py [--iterations 300] [--first-stage 0] [--seeds 3] [--variants A,B,C,D,E,F]
    [--size 96x192] [--num-train 240] [--num-val 30] [--train-depth stereo|clean] [--out DIR] [--json FILE]

Every run trains the demo's config (`configs/synthetic/demo_cpu.yaml`, its bf16 variant on CPUs
with native bf16; `panopticdepth.demo`'s helpers) for a fixed number of iterations, not a time
budget, so that the variants get the same training under a varying CPU load. With
`--first-stage N`, each seed first trains panoptic segmentation alone for N iterations at half the
image size (the demo's first stage, `low_res_stage_config`; the paper's recipe also learns panoptic
segmentation before depth), and every variant of that seed starts its `--iterations` from those
weights: the variants then differ only in how they learn depth. The train split is rendered once
(with stereo-like noisy depth by default: `data/synthetic/depth_noise.py`, the kind of ground truth
the paper trains on); the held-out val split (other scene seed) always has the exact depth, so every
variant is evaluated against clean ground truth. Seeds change the network's initialisation and the
data order, never the data.

The table in benchmarks/README.md (~100 min on 2 cores with bf16):
    OMP_NUM_THREADS=2 python benchmarks/ablation.py --first-stage 3000 --iterations 1200 --seeds 3 \
        --size 128x256 --num-train 2004 --num-val 60

Variants (Table 3; `model.depth.*`, `train.loss.instance_depth_loss`):
A pixel-wise depth; B instance-wise, no normalisation; C T1 (Eq. 4); D T2 (Eq. 5);
E T1 + instance loss on the minimum depth; F T2 + instance loss on the mean depth.

Printed per variant: DPQ, DPQ_Th, DPQ_St (mean over lambda = 0.5/0.25/0.1), PQ, depth abs_rel and
the abs_rel / RMSE in a band around ground-truth thing boundaries (`depth_metrics.thing_boundary_band`),
each as mean ± sample std over the seeds. Finished runs (and first stages) are kept under OUT/runs/
and are not trained again when the script is rerun with the same settings. On a small CPU shared
with other jobs, run it with OMP_NUM_THREADS=1: two threads that wait on each other made a step ~8x
slower (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

VARIANTS: dict[str, tuple[str, list[str]]] = {
    "A": ("pixel-wise depth", ["model.depth.mode=pixel", "model.depth.normalization=none"]),
    "B": ("instance-wise, no normalisation", ["model.depth.normalization=none"]),
    "C": ("T1", ["model.depth.normalization=T1"]),
    "D": ("T2", ["model.depth.normalization=T2"]),
    "E": ("T1 + instance loss (min depth)", ["model.depth.normalization=T1"]),
    "F": ("T2 + instance loss (mean depth)", ["model.depth.normalization=T2"]),
}
WITH_INSTANCE_LOSS = {"E", "F"}
VAL_SEED_OFFSET = 1_000_003  # as the demo: val scenes never appear in training
COLUMNS = (
    ("DPQ", "DPQ"),
    ("DPQ_th", "DPQ_Th"),
    ("DPQ_st", "DPQ_St"),
    ("PQ", "PQ"),
    ("AbsRel", "abs_rel"),
    ("EdgeAbsRel", "edge abs_rel"),
    ("EdgeRMSE", "edge RMSE m"),
)


def variant_overrides(variant: str, seed: int) -> list[str]:
    """Config overrides of one run: the variant's depth switches plus the seed (init + data order)."""
    _, over = VARIANTS[variant]
    loss = "true" if variant in WITH_INSTANCE_LOSS else "false"
    return [*over, f"train.loss.instance_depth_loss={loss}", f"train.seed={seed}", f"data.seed={seed}"]


def parse_size(text: str) -> tuple[int, int]:
    h, w = (int(x) for x in text.lower().split("x"))
    return h, w


def write_data(root: Path, args: argparse.Namespace) -> None:
    """Render train (noisy or clean depth) and val (clean) once; reuse them when the settings match."""
    from panopticdepth.data.synthetic import write_dataset

    h, w = args.size
    key = {"size": [h, w], "num_train": args.num_train, "num_val": args.num_val,
           "data_seed": args.data_seed, "train_depth": args.train_depth}  # fmt: skip
    marker = root / "ablation_data.json"
    if marker.is_file() and json.loads(marker.read_text()) == key:
        return
    noise = None if args.train_depth == "clean" else args.train_depth
    workers = max(1, min(os.cpu_count() or 1, 4))
    seed = args.data_seed
    write_dataset(root, "train", args.num_train, h, w, seed=seed, depth_noise=noise, workers=workers)
    write_dataset(root, "val", args.num_val, h, w, seed=seed + VAL_SEED_OFFSET, workers=workers)
    marker.write_text(json.dumps(key) + "\n")


def first_stage(seed: int, data_root: Path, out: Path, settings: dict, args: argparse.Namespace) -> Path:
    """The seed's panoptic-only, half-size first stage (shared by all variants): its model folder.

    Trained once per seed and data settings; a finished one (OUT/runs/stage1_seedS/stage1.json) is
    reused by runs that change only the second stage (`--iterations`) or the metric (`--band`)."""
    from panopticdepth.demo import DemoSettings, demo_config, low_res_stage_config, train_stage

    settings = {k: v for k, v in settings.items() if k not in ("iterations", "band")}
    run_dir = out / "runs" / f"stage1_seed{seed}"
    done = run_dir / "stage1.json"
    if done.is_file():
        old = json.loads(done.read_text())
        if old.get("settings") == settings and Path(old["model_dir"]).is_dir():
            return Path(old["model_dir"])
    seeds = [f"train.seed={seed}", f"data.seed={seed}"]
    cfg = demo_config(DemoSettings(output=run_dir, size=args.size, overrides=seeds), data_root)
    stage = low_res_stage_config(cfg, args.size)
    stage.train.log_period = max(args.first_stage // 5, 1)
    t = time.monotonic()
    result, _ = train_stage(stage, run_dir / "train", args.first_stage)
    record = {"settings": settings, "seed": seed, "iterations": result.iteration,
              "train_s": round(time.monotonic() - t, 1), "model_dir": str(result.final_dir)}  # fmt: skip
    done.write_text(json.dumps(record, indent=1) + "\n")
    print(f"first stage, seed {seed}: {result.iteration} steps ({record['train_s']:.0f} s)", flush=True)
    return Path(result.final_dir)


def train_and_evaluate(
    variant: str,
    seed: int,
    data_root: Path,
    run_dir: Path,
    args: argparse.Namespace,
    weights: Path | None = None,
) -> dict:
    """One run: train `args.iterations` steps (from `weights`, a first stage's model folder, when
    given), evaluate the val split; the headline numbers."""
    from panopticdepth.checkpoint.model_dir import load_model_dir
    from panopticdepth.demo import DemoSettings, demo_config, evaluate_and_visualise, headline, train_stage
    from panopticdepth.evaluation import DPSEvaluator

    settings = DemoSettings(output=run_dir, size=args.size, overrides=variant_overrides(variant, seed))
    cfg = demo_config(settings, data_root)
    cfg.train.log_period = max(args.iterations // 5, 1)
    t = time.monotonic()
    result, _ = train_stage(cfg, run_dir / "train", args.iterations, weights=weights)
    train_s = time.monotonic() - t
    model, cfg = load_model_dir(result.final_dir)
    cfg.data.root = str(data_root)
    m = cfg.model
    ev = DPSEvaluator(
        num_classes=m.num_classes,
        thing_ids=range(m.num_classes - m.num_thing_classes, m.num_classes),
        lambdas=tuple(cfg.eval.depth_thresholds),
        dataset="cityscapes-dps",
    ).track_boundary_depth(args.band)
    t = time.monotonic()
    summary, _ = evaluate_and_visualise(model, cfg, run_dir, 0, evaluator=ev)
    row = headline(summary)
    edge = summary["boundary_depth"]
    row["EdgeAbsRel"] = math.nan if edge["abs_rel"] is None else float(edge["abs_rel"])
    row["EdgeRMSE"] = math.nan if edge["rmse"] is None else float(edge["rmse"])
    return {
        "variant": variant,
        "seed": seed,
        "iterations": result.iteration,
        "train_s": round(train_s, 1),
        "eval_s": round(time.monotonic() - t, 1),
        "metrics": row,
        "boundary_depth": edge,
        "last_losses": result.last_losses,
    }


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single seed); NaN runs are left out."""
    v = np.array([x for x in values if not math.isnan(x)], np.float64)
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def aggregate(runs: list[dict], variants: list[str]) -> dict[str, dict[str, tuple[float, float]]]:
    """Per variant and column: (mean, std) over the seeds."""
    out = {}
    for v in variants:
        mine = [r["metrics"] for r in runs if r["variant"] == v]
        out[v] = {key: mean_std([m[key] for m in mine]) for key, _ in COLUMNS}
    return out


def format_table(table: dict[str, dict[str, tuple[float, float]]], seeds: int) -> str:
    """Markdown table: one row per variant, mean ± std over the seeds."""
    head = "| variant | " + " | ".join(name for _, name in COLUMNS) + " |"
    lines = [head, "|---|" + "---|" * len(COLUMNS)]
    for v, cols in table.items():
        cells = []
        for key, _ in COLUMNS:
            mean, std = cols[key]
            digits = 2 if key.startswith(("DPQ", "PQ")) else 3
            cells.append(f"{mean:.{digits}f} ± {std:.{digits}f}")
        lines.append(f"| {v} {VARIANTS[v][0]} | " + " | ".join(cells) + " |")
    lines.append(f"(mean ± sample std over {seeds} seed(s); DPQ/PQ in %, edge = thing-boundary band)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=300, help="training steps per run (all runs)")
    ap.add_argument("--first-stage", type=int, default=0,
                    help="steps of a shared panoptic-only half-size stage per seed (0: none)")  # fmt: skip
    ap.add_argument("--seeds", type=int, default=3, help="seeds per variant: 0..N-1")
    ap.add_argument("--variants", default="A,B,C,D,E,F", help="comma-separated subset of A-F")
    ap.add_argument("--size", type=parse_size, default=(96, 192), metavar="HxW")
    ap.add_argument("--num-train", type=int, default=240)
    ap.add_argument("--num-val", type=int, default=30)
    ap.add_argument("--data-seed", type=int, default=0, help="scene seed of the train split")
    ap.add_argument("--train-depth", choices=("stereo", "clean"), default="stereo",
                    help="depth ground truth used for training (val is always clean)")  # fmt: skip
    ap.add_argument("--band", type=int, default=3, help="thing-boundary band of the edge metric (px)")
    ap.add_argument("--out", type=Path, default=Path("ablation_output"))
    ap.add_argument("--json", type=Path, default=None, help="write all runs and the table here")
    return ap


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    variants = [v.strip().upper() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or args.iterations < 1 or args.seeds < 1 or args.first_stage < 0:
        raise SystemExit(
            f"variants must be among A-F (got {unknown}); --iterations and --seeds >= 1, --first-stage >= 0"
        )
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    data_root = args.out / "data"
    write_data(data_root, args)
    keys = ("iterations", "first_stage", "size", "num_train", "num_val", "data_seed", "train_depth", "band")
    settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items() if k in keys}
    runs = []
    for seed in range(args.seeds):  # seed-major: an interrupted run still covers every variant
        weights = None
        for v in variants:
            run_dir = args.out / "runs" / f"{v}_seed{seed}"
            done = run_dir / "result.json"
            if done.is_file():
                old = json.loads(done.read_text())
                if old.get("settings") == settings:
                    runs.append(old)
                    continue
            if args.first_stage > 0 and weights is None:
                weights = first_stage(seed, data_root, args.out, settings, args)
            run = train_and_evaluate(v, seed, data_root, run_dir, args, weights=weights)
            run["settings"] = settings
            done.write_text(json.dumps(run, indent=1) + "\n")
            runs.append(run)
            m = run["metrics"]
            print(
                f"{v} seed {seed}: DPQ {m['DPQ']:.2f} PQ {m['PQ']:.2f} AbsRel {m['AbsRel']:.3f} "
                f"edge AbsRel {m['EdgeAbsRel']:.3f} ({run['train_s']:.0f} s training)",
                flush=True,
            )
    table = aggregate(runs, variants)
    text = format_table(table, args.seeds)
    print(text)
    report = {
        "settings": settings,
        "table": {v: {k: list(ms) for k, ms in cols.items()} for v, cols in table.items()},
        "runs": runs,
        "machine": {"python": sys.version.split()[0], "platform": platform.platform()},
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, allow_nan=True) + "\n")
    return report


if __name__ == "__main__":
    main()
