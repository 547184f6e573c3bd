"""`panopticdepth demo`: synthetic data, CPU training, evaluation, pictures and a point cloud in minutes."""

from __future__ import annotations

import argparse
from pathlib import Path

from .serve import add_server_arguments
from .synth import parse_size

# Held-out val images copied next to the model for `--serve` (the val folder also holds labels).
NUM_SERVE_EXAMPLES = 8


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..demo import DemoSettings

    d = DemoSettings()  # the one place of the demo's defaults
    p = sub.add_parser(
        "demo",
        help="train and evaluate a small model on synthetic scenes in ~10 minutes on a CPU",
        description=(
            "Render a synthetic street-scene dataset (train + held-out val), train the small CPU "
            "config (configs/synthetic/demo_cpu.yaml; its bf16 variant demo_cpu_bf16.yaml on CPUs "
            "with native bf16) within the time budget, evaluate PQ / DPQ / "
            "depth on val, and write metrics.json, visualisation panels and PLY point clouds into --output."
        ),
    )
    p.add_argument(
        "--output", default="demo_output", metavar="DIR", help="output folder (default demo_output)"
    )
    p.add_argument(
        "--minutes",
        type=float,
        default=d.minutes,
        metavar="M",
        help=f"wall-clock budget for the whole run, data to pictures (default {d.minutes:g})",
    )
    p.add_argument(
        "--num-train",
        type=int,
        default=d.num_train,
        metavar="N",
        help=f"synthetic train images (default {d.num_train})",
    )
    p.add_argument(
        "--num-val",
        type=int,
        default=d.num_val,
        metavar="N",
        help=f"held-out val images (default {d.num_val})",
    )
    p.add_argument(
        "--size",
        type=parse_size,
        default=d.size,
        metavar="HxW",
        help=f"image size (default {d.size[0]}x{d.size[1]})",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="dataset seed (val uses a different one)")
    p.add_argument(
        "--num-vis",
        type=int,
        default=d.num_vis,
        metavar="N",
        help=f"val images to visualise (default {d.num_vis})",
    )
    p.add_argument(
        "--config",
        metavar="YAML",
        help="training config (default configs/synthetic/demo_cpu_bf16.yaml on CPUs with AVX-512 or AMX "
        "bf16, else configs/synthetic/demo_cpu.yaml)",
    )
    p.add_argument(
        "--iterations", type=int, default=0, help="train exactly this many iterations (ignores --minutes)"
    )
    p.add_argument(
        "--low-res-share",
        type=float,
        default=d.low_res_share,
        metavar="F",
        help=f"share of the training time spent first on panoptic segmentation at half the image size, "
        f"without the depth branch (default {d.low_res_share:g}; 0 = one full-size stage)",
    )
    p.add_argument(
        "--serve",
        action="store_true",
        help="afterwards, serve the web app on the trained model with held-out scenes as examples",
    )
    add_server_arguments(p)
    p.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides, e.g. solver.base_lr=5e-4"
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..demo import DemoSettings, headline, run_demo
    from ..errors import PanopticDepthError
    from ..evaluation import format_table

    if args.minutes <= 0 and args.iterations <= 0:
        raise PanopticDepthError("--minutes must be > 0 (or give --iterations)")
    settings = DemoSettings(
        output=Path(args.output),
        minutes=args.minutes,
        num_train=args.num_train,
        num_val=args.num_val,
        size=tuple(args.size),
        seed=args.seed,
        num_vis=args.num_vis,
        config=args.config,
        overrides=list(args.overrides),
        iterations=args.iterations,
        low_res_share=args.low_res_share,
    )
    res = run_demo(settings)
    print(format_table(res.summary))
    h = headline(res.summary)
    print()
    print(
        f"held-out synthetic val ({args.num_val} images): PQ {h['PQ']:.1f} (Th {h['PQ_th']:.1f} / "
        f"St {h['PQ_st']:.1f}), mean DPQ {h['DPQ']:.1f} (Th {h['DPQ_th']:.1f} / St {h['DPQ_st']:.1f}), "
        f"depth RMSE {h['RMSE']:.2f} m, AbsRel {h['AbsRel']:.3f}"
    )
    secs = res.seconds
    first = res.low_res_iterations
    stages = f"{first} half-size + {res.iterations} full-size" if first else f"{res.iterations}"
    print(
        f"{stages} iterations; data {secs.get('data', 0):.0f} s, train {secs.get('train', 0):.0f} s, "
        f"evaluation {secs.get('evaluate', 0):.0f} s, total {secs.get('total', 0) / 60:.1f} min"
    )
    out = Path(args.output)
    print(f"metrics: {res.metrics_path}")
    print(f"model:   {res.model_dir}")
    print(f"         (try: panopticdepth predict --weights {res.model_dir} --input IMG --output DIR --vis)")
    print(f"pictures: {out / 'vis'}   point clouds: {out / 'pointclouds'}")
    if args.serve:
        return serve_demo(args, res.model_dir, out)
    return 0


def copy_examples(out: Path, limit: int = NUM_SERVE_EXAMPLES) -> Path:
    """The first held-out val images (never seen in training) into `out/examples/` for the app."""
    import shutil

    from ..data.synthetic.writer import split_dir

    folder = out / "examples"
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(split_dir(out / "data", "val").glob("*_leftImg8bit.png"))[:limit]:
        shutil.copyfile(path, folder / path.name.replace("_leftImg8bit", ""))
    return folder


def serve_demo(args: argparse.Namespace, model_dir: Path | None, out: Path) -> int:
    """Serve the web app on the demo's trained model, with held-out scenes as examples."""
    from ..errors import PanopticDepthError
    from ..modeling.predictor import Predictor
    from .serve import serve_model

    if model_dir is None:
        raise PanopticDepthError("the demo wrote no model directory: nothing to serve")
    predictor = Predictor.from_dir(model_dir, with_instance_masks=False, with_sem_seg=False)
    return serve_model(predictor, args, f"demo ({model_dir})", copy_examples(out))
