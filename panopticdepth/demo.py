"""The end-to-end demo: synthetic data -> training on the CPU -> evaluation -> pictures and 3D points.

`run_demo` needs no dataset and no GPU. Within a wall-clock budget it

1. renders a small synthetic train split and a held-out val split (different seeds, so no val
   scene is ever seen in training) with `panopticdepth.data.synthetic.write_dataset`;
2. trains `configs/synthetic/demo_cpu.yaml` (its bf16 variant on CPUs with native bf16) with the
   library's `Trainer`, in two stages: panoptic segmentation alone at half the image size
   (`low_res_stage_config`, `low_res_share` of the time), then the whole model at full size from
   its weights. A first plan comes from two timed steps; while training, a `SchedulePlanner` per stage
   re-plans the number of iterations (and the LR schedule's warmup + poly decay with it) from the
   measured steady-state step time, so that training ends at its share of the budget;
   `train.max_minutes` is the safety stop;
3. evaluates the trained model on val through `Predictor` + `DPSEvaluator` (PQ, DPQ at
   lambda = 0.5/0.25/0.1, depth RMSE / abs rel) and writes `metrics.json` in the `evaluate --json`
   shape;
4. writes, for a few val images, a panel (input, panoptic, depth, ground truth), the coloured
   panoptic and depth PNGs, a coloured point cloud (PLY) through the synthetic camera and a
   picture of that cloud (oblique and bird's-eye views).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config, load_config
from .errors import PanopticDepthError
from .utils.arrays import to_numpy
from .utils.files import atomic_write_text

logger = logging.getLogger(__name__)

# The small CPU model with a ResNet-10 backbone: ~1.5x the iterations of ResNet-18 in the same
# minutes, learning as much per iteration (benchmarks/README.md, demo configuration trials).
CONFIG_NAME = "synthetic/demo_cpu.yaml"
# The same model with bf16 autocast, channels_last and the fused Adam: ~0.6x the float32 step time
# on CPUs that compute bf16 natively (benchmarks/README.md, training step), slower elsewhere.
BF16_CONFIG_NAME = "synthetic/demo_cpu_bf16.yaml"


@dataclass
class DemoSettings:
    output: Path = Path("demo_output")
    # Whole run: data + training + evaluation + pictures; with Python's start-up it stays under the
    # 10 minutes the README promises (benchmarks/README.md, demo configuration trials, fifth round).
    minutes: float = 9.5
    # 2004 rather than 240 scenes: +1-3 held-out PQ at the same iterations (benchmarks/README.md)
    num_train: int = 2004
    num_val: int = 30
    size: tuple[int, int] = (128, 256)  # (H, W) of the synthetic images
    seed: int = 0
    num_vis: int = 4  # val images that get a panel / PNGs / point cloud
    config: str | None = None  # default: `default_config_name()` under configs/
    overrides: list[str] = field(default_factory=list)
    # Fixed number of iterations (skips the timing-based choice); 0 = fit the budget.
    iterations: int = 0
    # Share of the training time spent on a first, panoptic-only stage at half the image size
    # (`low_res_stage_config`); 0 = one full-size stage. +2.4 to +7 held-out PQ in the same time
    # (benchmarks/README.md, demo configuration trials, two stages).
    low_res_share: float = 0.4


# A half-size step without the depth branch costs about this much of a full-size one (demo config,
# one thread; benchmarks/README.md, two stages): `--iterations N` gives the first stage
# N * low_res_share / LOW_RES_STEP_COST iterations and the second N * (1 - low_res_share).
LOW_RES_STEP_COST = 0.4


@dataclass
class DemoResult:
    summary: dict
    metrics_path: Path
    model_dir: Path | None
    iterations: int
    seconds: dict[str, float]
    files: list[Path]
    low_res_iterations: int = 0  # first-stage iterations (0 = one stage)


def cpu_has_native_bf16(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool:
    """True when the CPU flags list AVX-512 bf16 or AMX bf16 (Linux); False when unknown."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []
    )
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_config_name() -> str:
    """The bf16 variant of the small config where the CPU computes bf16 natively, else float32."""
    return BF16_CONFIG_NAME if cpu_has_native_bf16() else CONFIG_NAME


def find_demo_config(name: str | None = None) -> Path:
    """`configs/<name>` (default `default_config_name()`): packaged as `panopticdepth/configs` (a
    link to the checkout's `configs/`, copied into wheels)."""
    name = name or default_config_name()
    here = Path(__file__).resolve().parent
    for base in (here / "configs", here.parent / "configs"):
        path = base / name
        if path.is_file():
            return path
    raise PanopticDepthError(f"configs/{name} not found beside {here}: reinstall panopticdepth")


def demo_config(settings: DemoSettings, data_root: Path) -> Config:
    """The training config of the demo with the data paths and the demo's engine settings."""
    path = Path(settings.config) if settings.config else find_demo_config()
    if not path.is_file():
        raise PanopticDepthError(f"{path}: config file not found")
    cfg = load_config(path, list(settings.overrides))
    cfg.data.dataset = "synthetic"
    cfg.data.root = str(data_root)
    cfg.data.train_split = "train"
    cfg.data.val_split = "val"
    cfg.train.eval_period = 0  # the demo evaluates once, at the end
    cfg.train.checkpoint_period = 0
    cfg.train.device = "cpu"
    return cfg


def low_res_stage_config(cfg: Config, size: tuple[int, int]) -> Config:
    """The demo's first stage: panoptic segmentation only (no depth branch, as the paper's recipe
    learns panoptic segmentation before depth), on the training images resized to half their size
    (the `ps` pipeline's shortest-edge resize; flips as configured, no crop). The second stage
    starts from its weights with the depth branch added."""
    import copy

    stage = copy.deepcopy(cfg)
    stage.model.depth.enabled = False
    aug = stage.data.augmentation
    aug.pipeline = "ps"
    aug.short_edges = [max(min(size) // 2, 1)]
    aug.max_size = max(max(size), 1)
    aug.scale_range = [1.0, 1.0]
    aug.crop_size = []
    aug.crop_mode = "random"
    return stage


def fit_schedule(cfg: Config, iterations: int) -> None:
    """Set max_iter and scale warmup with it, keeping the config's warmup fraction."""
    old_max = max(int(cfg.solver.max_iter), 1)
    frac = min(cfg.solver.warmup_iters / old_max, 0.5)
    cfg.solver.max_iter = max(int(iterations), 1)
    cfg.solver.warmup_iters = int(round(frac * cfg.solver.max_iter))


class SchedulePlanner:
    """Re-plans `cfg.solver.max_iter` after every step so that training ends at `deadline`.

    The first steps of a run are slower than the steady state (allocator and thread-pool warm-up,
    caches), so a plan made from them leaves much of the budget unused. This hook times each whole
    iteration (data, forward, backward, update, logging) from the trainer's loop, skips the first
    `skip` ones, and takes the median of the last `window`: the iterations that still fit before
    `deadline - finish_s` are added to the current iteration. While warmup is running, the warmup
    length grows with the new total (same fraction) but never shrinks (a slow spike in the first
    steps once ended it at iteration ~40 of a planned ~100); after it, warmup is left alone so the
    LR does not step back into it. Only ever plans whole steps that fit, so the loop ends before the
    deadline when the estimate holds; `train.max_minutes` guards the rest.
    """

    def __init__(
        self,
        cfg: Config,
        deadline: float,
        *,
        finish_s: float = 0.0,
        skip: int = 2,
        window: int = 20,
        clock: Any = time.monotonic,
    ):
        self.solver = cfg.solver
        self.deadline = float(deadline)
        self.finish_s = float(finish_s)
        self.skip = int(skip)
        self.window = int(window)
        self.clock = clock
        self.warmup_fraction = min(self.solver.warmup_iters / max(int(self.solver.max_iter), 1), 0.5)
        self.step_times: list[float] = []
        self.seen = 0
        self._last = clock()

    def start(self) -> None:
        """Call when training starts (the model build and loader set-up are not a step)."""
        self._last = self.clock()

    def step_seconds(self) -> float | None:
        if not self.step_times:
            return None
        return float(np.median(self.step_times[-self.window :]))

    def __call__(self, iteration: int) -> None:
        now = self.clock()
        dt, self._last = now - self._last, now
        self.seen += 1
        if self.seen <= self.skip:
            return
        self.step_times.append(dt)
        # A slowdown shows in the last few steps before it moves the median of the window.
        step = max(self.step_seconds() or 0.0, float(np.median(self.step_times[-3:])))
        left = self.deadline - self.finish_s - now
        fit = int(left / step) if step > 0 and left > 0 else 0
        new_max = iteration + fit
        s = self.solver
        if iteration < s.warmup_iters:
            # Only ever longer: a few slow steps early on must not cut the warmup short.
            s.warmup_iters = max(int(round(self.warmup_fraction * new_max)), s.warmup_iters)
        s.max_iter = max(new_max, iteration)


def train_stage(
    cfg: Config,
    out_dir: Path,
    iterations: int,
    *,
    weights: Path | None = None,
    deadline: float | None = None,
    finish_s: float = 0.0,
) -> tuple[Any, float | None]:
    """Train `cfg` into `out_dir` (cleared first) for `iterations`, re-planned by a
    `SchedulePlanner` to end at `deadline` (a `time.monotonic()` time) when one is given; returns
    the `TrainResult` and the planner's steady-state seconds per step."""
    from .training.engine import Trainer
    from .training.output_dir import clear_run_files

    fit_schedule(cfg, iterations)
    clear_run_files(out_dir)  # a rerun of the demo starts its training afresh, never mixed
    trainer = Trainer(cfg, out_dir, weights=weights)
    planner = None
    cfg.train.max_minutes = 0.0
    if deadline is not None:
        planner = SchedulePlanner(cfg, deadline, finish_s=finish_s)
        trainer.step_hooks.append(planner)
        planner.start()
        # train.max_minutes stops the loop in time should the plan be too long.
        cfg.train.max_minutes = max(deadline - finish_s - time.monotonic(), 1.0) / 60.0
    result = trainer.train()
    return result, None if planner is None else planner.step_seconds()


def _measure_step(cfg: Config, steps: int = 2) -> tuple[float, float, float]:
    """Seconds per training iteration, per val prediction and for writing the final checkpoint and
    model folder, measured on a throwaway model."""
    import io

    import torch

    from .data.build import build_dataset
    from .modeling import build_model
    from .modeling.preprocess import preprocess
    from .training.engine import default_criterion
    from .training.solver import build_optimizer

    state = torch.random.get_rng_state()
    try:
        model = build_model(cfg.model).train()
        opt = build_optimizer(model, cfg.solver)
        ds = build_dataset(cfg.data, cfg.data.train_split, train=True)
        batch_n = cfg.solver.ims_per_batch
        samples = [ds[i % len(ds)] for i in range(batch_n)]
        times = []
        for _ in range(steps + 1):
            t = time.perf_counter()
            batch, _ = preprocess([s["image"] for s in samples], cfg.model)
            out = model(batch)
            losses = default_criterion(samples, out, tuple(batch.shape[-2:]), model, cfg)
            sum(losses.values()).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t)
        # The fastest step: a transient load spike during the measurement must not shrink the
        # schedule (under steady load, train.max_minutes still stops training in time).
        step = float(min(times[1:]))
        model.eval()
        with torch.inference_mode():
            t = time.perf_counter()
            model(preprocess([samples[0]["image"]], cfg.model)[0])
            pred = time.perf_counter() - t
        # The end of training writes a checkpoint (weights + optimizer state) and the model folder.
        t = time.perf_counter()
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, io.BytesIO())
        torch.save(model.state_dict(), io.BytesIO())
        save = time.perf_counter() - t
    finally:
        torch.random.set_rng_state(state)
    return step, pred, save


def visualise_prediction(
    out_dir: Path, stem: str, image: np.ndarray, result: Any, gt: dict, max_depth: float
) -> list[Path]:
    """Panel, coloured panoptic / depth PNGs, PLY point cloud and a picture of the cloud."""
    from .data.classes import TRAIN_ID
    from .data.synthetic.camera import Camera
    from .io.formats import write_image_rgb
    from .io.pointcloud import backproject, write_pointcloud_ply
    from .visualization import colorize_depth, colorize_panoptic, save_panel, save_pointcloud_view

    vis_dir = out_dir / "vis"
    pred = to_numpy(result.panoptic).astype(np.int64)
    pred_depth = to_numpy(result.depth)
    files = [
        save_panel(vis_dir / f"{stem}_panel.png", image, result, gt=gt, title=stem),
        write_image_rgb(vis_dir / f"{stem}_panoptic.png", colorize_panoptic(pred)),
    ]
    if pred_depth is None:
        return files
    files.append(write_image_rgb(vis_dir / f"{stem}_depth.png", colorize_depth(pred_depth)))
    h, w = pred.shape
    cam = Camera.cityscapes_like(h, w, 1.0, 0.0)  # the synthetic camera's intrinsics
    intr = (cam.fx, cam.fy, cam.cx, cam.cy)
    # Sky has no depth in the ground truth (infinitely far): leave it out of the cloud, and the
    # points beyond the evaluation range.
    cloud_depth = np.where(pred // 1000 == TRAIN_ID["sky"], 0.0, pred_depth)
    cloud_depth = np.where(cloud_depth <= max_depth, cloud_depth, 0.0)
    files.append(
        write_pointcloud_ply(out_dir / "pointclouds" / f"{stem}.ply", image, cloud_depth, pred, intr)
    )
    points, valid = backproject(cloud_depth, intr)
    colors = colorize_panoptic(pred, outline=False)[valid]
    title = f"{stem}: predicted depth and panoptic classes in 3D"
    files.append(
        save_pointcloud_view(vis_dir / f"{stem}_cloud.png", points, colors, intr, (h, w), title=title)
    )
    return files


def evaluate_and_visualise(
    model: Any, cfg: Config, out_dir: Path, num_vis: int, evaluator: Any = None
) -> tuple[dict, list[Path]]:
    """Predict every val image, accumulate PQ/DPQ/depth metrics, draw the first `num_vis` images.

    `evaluator`: a `DPSEvaluator` to fill instead of the default one (e.g. with
    `track_boundary_depth`, as `benchmarks/ablation.py` does)."""
    from .data.build import build_dataset
    from .evaluation import DPSEvaluator
    from .modeling.predictor import Predictor
    from .utils.progress import progress

    predictor = Predictor(model, cfg)
    dataset = build_dataset(cfg.data, cfg.data.val_split, train=False)
    m = cfg.model
    ev = evaluator
    if ev is None:
        ev = DPSEvaluator(
            num_classes=m.num_classes,
            thing_ids=range(m.num_classes - m.num_thing_classes, m.num_classes),
            lambdas=tuple(cfg.eval.depth_thresholds),
            dataset="cityscapes-dps",
        )
    max_depth = float(cfg.eval.max_depth)
    files: list[Path] = []
    for i in progress(range(len(dataset)), desc="evaluate", unit="image"):
        sample = dataset[i]
        image = np.ascontiguousarray(sample["image"].permute(1, 2, 0).numpy())
        result = predictor.predict(image)
        pred = to_numpy(result.panoptic).astype(np.int64)
        pred_depth = to_numpy(result.depth)
        gt_pan = to_numpy(sample["panoptic"])
        gt_depth = to_numpy(sample.get("depth"))
        eval_depth = None
        if pred_depth is not None:
            # As `evaluate`: the official writer stores floor(clamp(d, 0, max) * 256)
            # (docs/original_implementation.md#depth-png).
            eval_depth = np.floor(np.clip(pred_depth, 0, max_depth) * 256.0) / 256.0
        meta = sample.get("meta", {})
        ev.update(pred, eval_depth, gt_pan, gt_depth, sequence=meta.get("sequence"))
        if i < num_vis:
            stem = str(meta.get("image_id") or f"val_{i:04d}")
            gt = {"panoptic": gt_pan, "depth": gt_depth}
            files += visualise_prediction(out_dir, stem, image, result, gt, max_depth)
    return ev.summary(), files


def run_demo(settings: DemoSettings) -> DemoResult:
    """Run the whole demo into `settings.output`; returns the metrics summary and the files written."""
    # The budget counts from here, before the first import of torch and torchvision (7-17 s on a
    # slow 2-core machine, benchmarks/README.md, demo budget), which the command's time includes.
    t_start = time.monotonic()
    from .data.synthetic import write_dataset

    budget = float(settings.minutes) * 60.0
    out = Path(settings.output)
    out.mkdir(parents=True, exist_ok=True)
    h, w = settings.size
    if settings.num_train < 1 or settings.num_val < 1:
        raise PanopticDepthError("the demo needs at least one train and one val image")
    seconds: dict[str, float] = {}

    # 1. Data: train and val from different seeds (held-out scenes).
    data_root = out / "data"
    t = time.monotonic()
    workers = max(1, min(os.cpu_count() or 1, 4))
    for split, num, seed in (("train", settings.num_train, settings.seed),
                             ("val", settings.num_val, settings.seed + 1_000_003)):  # fmt: skip
        write_dataset(data_root, split, num, height=h, width=w, seed=seed, workers=workers)
    seconds["data"] = time.monotonic() - t
    logger.info("wrote %d train + %d val synthetic frames (%.0f s)", settings.num_train, settings.num_val,
                seconds["data"])  # fmt: skip

    # 2. Training for what is left of the budget after the evaluation's share: a half-size,
    # panoptic-only first stage for `low_res_share` of it, then the full model at full size.
    cfg = demo_config(settings, data_root)
    share = min(max(float(settings.low_res_share), 0.0), 0.9)
    stage1 = low_res_stage_config(cfg, settings.size) if share > 0 else None
    run_plan: dict[str, float] = {}
    if settings.iterations > 0:
        iterations = (
            settings.iterations if stage1 is None else max(1, round(settings.iterations * (1 - share)))
        )
        iterations1 = max(1, round(settings.iterations * share / LOW_RES_STEP_COST))
    else:
        t = time.monotonic()
        step_s, pred_s, save_s = _measure_step(cfg)
        seconds["calibration"] = time.monotonic() - t
        # Evaluation cost: prediction + post-processing + metrics (~2x the forward), pictures, with
        # room for a machine that slows down meanwhile (3.4-6.9 s for 30 val images and 4 pictures,
        # 18 s on a 3x slower machine; benchmarks/README.md, demo budget).
        reserve = settings.num_val * (3.0 * pred_s + 0.05) + settings.num_vis * 1.5 + 5.0
        remaining = budget - (time.monotonic() - t_start)
        train_budget = max(remaining - reserve, 0.5 * remaining)
        if train_budget < 20 * step_s:
            logger.warning(
                "only ~%d training iterations fit in --minutes %s on this machine (%.1f s each): "
                "expect a poor model; give more minutes, or --size/--num-val smaller",
                max(int(train_budget / step_s), 1), settings.minutes, step_s,
            )  # fmt: skip
        # A first plan from the calibration steps (10 % margin: the loop also loads data and
        # logs); the planners correct it from the steady-state step time as training goes.
        iterations = max(1, int(train_budget * (1 - share) / step_s * 0.9))
        iterations1 = max(1, int(train_budget * share / (step_s * LOW_RES_STEP_COST) * 0.9))
        run_plan = {
            "train_budget_s": train_budget,
            "calibration_step_s": step_s,
            "evaluation_reserve_s": reserve,
            "finish_s": 2.0 * save_s + 1.0,
        }
        logger.info(
            "%.2f s per iteration (batch %d at %dx%d), %.2f s per val forward: ~%d iterations in %.1f min "
            "(re-planned from the steady-state step time while training)",
            step_s, cfg.solver.ims_per_batch, h, w, pred_s, iterations, train_budget / 60,
        )  # fmt: skip
    t = time.monotonic()
    end = t + run_plan["train_budget_s"] if run_plan else None
    finish_s = run_plan.get("finish_s", 0.0)
    weights = None
    low_res_iterations = 0
    if stage1 is not None:
        logger.info("stage 1 of 2: panoptic segmentation at %dx%d, no depth branch", h // 2, w // 2)
        deadline1 = None if end is None else t + share * (end - t)
        first, steady1 = train_stage(
            stage1, out / "train_low_res", iterations1, deadline=deadline1, finish_s=finish_s
        )
        weights = first.final_dir
        low_res_iterations = first.iteration
        if steady1 is not None:
            run_plan["low_res_steady_step_s"] = steady1
        logger.info("stage 2 of 2: the full model at %dx%d, from the stage-1 weights", h, w)
    result, steady = train_stage(
        cfg, out / "train", iterations, weights=weights, deadline=end, finish_s=finish_s
    )
    seconds["train"] = time.monotonic() - t
    if steady is not None:
        run_plan["steady_step_s"] = steady
        logger.info(
            "trained %d iterations in %.0f s of the %.0f s planned (steady state %.3f s per iteration, "
            "first plan %d)",
            result.iteration, seconds["train"], run_plan["train_budget_s"], steady, iterations,
        )  # fmt: skip

    # 3.-4. Evaluation on the held-out scenes, pictures and point clouds.
    from .checkpoint.model_dir import load_model_dir

    t = time.monotonic()
    if result.final_dir is not None:
        model, cfg = load_model_dir(result.final_dir)
        cfg.data.root = str(data_root)
    else:  # pragma: no cover - the trainer always writes model/ on rank 0
        raise PanopticDepthError(f"{out / 'train'}: training wrote no model directory")
    summary, files = evaluate_and_visualise(model, cfg, out, settings.num_vis)
    seconds["evaluate"] = time.monotonic() - t
    seconds["total"] = time.monotonic() - t_start
    metrics_path = out / "metrics.json"
    atomic_write_text(metrics_path, json.dumps(summary, indent=1, allow_nan=True) + "\n")
    run_info = {
        "iterations": result.iteration,
        "low_res_share": share,
        "low_res_iterations": low_res_iterations,
        "stop_reason": result.reason,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "budget_seconds": round(budget, 1) if settings.iterations <= 0 else None,
        "plan": {k: round(v, 4) for k, v in run_plan.items()},
        "size": [h, w],
        "num_train": settings.num_train,
        "num_val": settings.num_val,
        "threads": _threads(),
    }
    atomic_write_text(out / "demo_run.json", json.dumps(run_info, indent=1) + "\n")
    return DemoResult(
        summary, metrics_path, result.final_dir, result.iteration, seconds, files, low_res_iterations
    )


def _threads() -> int:
    import torch

    return int(torch.get_num_threads())


def headline(summary: dict) -> dict[str, float]:
    """The numbers the demo prints last: PQ, mean DPQ (all/things/stuff), depth RMSE and abs rel."""
    mean = summary.get("dpq", {}).get("mean", {})
    depth = summary.get("depth") or {}
    out = {
        "PQ": summary["pq"]["pq"],
        "PQ_th": summary["pq"]["pq_th"],
        "PQ_st": summary["pq"]["pq_st"],
        "DPQ": mean.get("dpq", math.nan),
        "DPQ_th": mean.get("dpq_th", math.nan),
        "DPQ_st": mean.get("dpq_st", math.nan),
        "RMSE": depth.get("rmse", math.nan),
        "AbsRel": depth.get("abs_rel", math.nan),
    }
    return {k: float(v) for k, v in out.items()}


def default_output() -> Path:
    return Path(os.environ.get("PANOPTICDEPTH_DEMO_DIR", "demo_output"))
