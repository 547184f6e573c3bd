"""`panopticdepth evaluate`: DPQ / DVPQ / PQ and depth metrics, from files or from a model.

Files: `--gt DIR --pred DIR [--dataset cityscapes-dps|semkitti-dps|cityscapes-panoptic]`.
Model: `--config CFG --weights W --data DIR` runs the predictor on a dataset split and evaluates.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..errors import DataError, PanopticDepthError
from ..ids import LABEL_DIVISOR, VOID_ID
from .common import add_config_arguments
from .video import SequenceTracking, add_tracking_arguments

logger = logging.getLogger(__name__)

DATASETS = ("cityscapes-dps", "semkitti-dps", "cityscapes-panoptic")
MODEL_ONLY_DATASETS = ("custom", "synthetic")  # scored through a model (--weights), not from files


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like '1' or '1,2,3,4', got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("window sizes must be >= 1")
    return values


def _float_list(text: str) -> tuple[float, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        values = tuple(float(x) for x in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like '0.5,0.25,0.1', got {text!r}") from None
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError("depth thresholds must be positive")
    return values


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "evaluate",
        help="DPQ / PQ / depth metrics of prediction files or of a model",
        description=(
            "Evaluate prediction files in the official format against ground truth in the released "
            "layout (--gt/--pred), or run a model on a dataset and evaluate it (--weights/--data). "
            "Numbers equal the official evaluators (see docs/evaluation_protocol.md); PQ-type values are "
            "in percent."
        ),
    )
    p.add_argument(
        "--gt", metavar="DIR", help="ground-truth folder (or COCO-panoptic JSON for cityscapes-panoptic)"
    )
    p.add_argument("--pred", metavar="DIR", help="prediction folder (or JSON for cityscapes-panoptic)")
    p.add_argument(
        "--pred-depth", metavar="DIR", help="separate prediction depth folder (default: found beside --pred)"
    )
    p.add_argument(
        "--gt-folder",
        metavar="DIR",
        help="cityscapes-panoptic: GT PNG folder (default: JSON name without .json)",
    )
    p.add_argument("--pred-folder", metavar="DIR", help="cityscapes-panoptic: prediction PNG folder")
    p.add_argument(
        "--dataset",
        choices=(*DATASETS, *MODEL_ONLY_DATASETS),
        help="file layout / official evaluator (default: detected from --gt); with --weights also "
        "custom and synthetic (default: the model config's data.dataset)",
    )
    p.add_argument("--json", metavar="FILE", help="write every number as JSON")
    p.add_argument(
        "--boundary-band",
        type=int,
        default=0,
        metavar="PX",
        help="with --weights: also report depth errors within PX pixels of ground-truth thing "
        "boundaries (paper Figure 3; 0 = off)",
    )
    p.add_argument("--frames", type=_int_list, default=None, metavar="K[,K...]",
                   help="window sizes k for (video) DVPQ; the first is the headline (default 1)")  # fmt: skip
    p.add_argument("--lambdas", type=_float_list, default=None, metavar="L[,L...]",
                   help="depth-error thresholds (default 0.5,0.25,0.1; 'none': PQ only)")  # fmt: skip
    p.add_argument(
        "--workers", type=int, default=None, metavar="N", help="worker processes for reading frames"
    )
    p.add_argument("--max-frames-per-sequence", type=int, default=None, metavar="N",
                   help="use only the first N sorted frames per sequence (official script: 6)")  # fmt: skip
    p.add_argument("--no-depth-metrics", action="store_true", help="skip abs rel / RMSE / ... (faster)")
    p.add_argument("--uint16-depth-wraparound", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--weights", metavar="DIR", help="model folder (model.safetensors + config.yaml)")
    p.add_argument("--data", metavar="DIR", help="dataset root for --weights")
    p.add_argument("--split", default="val", help="dataset split for --weights (default val)")
    p.add_argument(
        "--limit", type=int, default=None, metavar="N", help="evaluate only the first N images (--weights)"
    )
    p.add_argument(
        "--device",
        default="auto",
        help="--weights: auto (a CUDA GPU when there is one, else the CPU), cpu, cuda or cuda:N",
    )
    add_tracking_arguments(p)  # --weights: thing ids tracked through each sequence (DVPQ, k > 1)
    add_config_arguments(p)
    p.set_defaults(func=run)
    return p


def _detect_dataset(gt: str) -> str:
    path = Path(gt)
    if path.suffix == ".json":
        return "cityscapes-panoptic"
    for folder in (path, path / "gt", path / "val"):
        if folder.is_dir():
            names = [n.name for n in folder.iterdir()]
            if any(n.endswith("_gtFine_class.png") for n in names):
                return "semkitti-dps"
            if any(n.endswith("_instanceTrainIds.png") for n in names):
                return "cityscapes-dps"
    return "cityscapes-dps"


def run(args: argparse.Namespace) -> int:
    if args.json:  # a bad --json path fails now, not after the whole evaluation
        from ..utils.files import ensure_output_file

        ensure_output_file(args.json, "--json")
    if args.weights:
        summary = _run_model(args)
    else:
        if not args.gt or not args.pred:
            raise PanopticDepthError("evaluate needs --gt and --pred (files) or --weights and --data (model)")
        summary = _run_files(args)
    from ..evaluation.summary import format_table

    if args.json:
        from ..utils.files import atomic_write_text

        atomic_write_text(args.json, json.dumps(summary, indent=1) + "\n")
        logger.info("wrote %s", args.json)
        if getattr(args, "resolved_config", None) is not None:
            from ..config import save_config

            # the resolved config goes next to the numbers it produced
            save_config(args.resolved_config, Path(args.json).with_suffix(".config.yaml"))
    print(format_table(summary) if "dpq" in summary else _format_panoptic(summary))
    return 0


def _eval_settings(args: argparse.Namespace):
    cfg = None
    if getattr(args, "config", None) or getattr(args, "overrides", None):
        from .common import resolve_config

        cfg = resolve_config(args)
    lambdas = args.lambdas
    if lambdas is None:
        lambdas = tuple(cfg.eval.depth_thresholds) if cfg is not None else (0.5, 0.25, 0.1)
    workers = args.workers if args.workers is not None else (cfg.eval.workers if cfg is not None else 1)
    frames = args.frames
    if frames is None:
        frames = tuple(cfg.eval.frames) if cfg is not None else (1,)
    args.frames = tuple(frames)
    return cfg, tuple(lambdas), max(1, int(workers))


def _run_files(args: argparse.Namespace) -> dict:
    dataset = args.dataset or _detect_dataset(args.gt)
    if dataset == "synthetic":
        dataset = "cityscapes-dps"  # the synthetic scenes are written in the Cityscapes-DPS layout
    elif dataset in MODEL_ONLY_DATASETS:
        raise PanopticDepthError(f"--dataset {dataset} needs --weights and --data (scores a model on it)")
    _, lambdas, workers = _eval_settings(args)
    if dataset == "cityscapes-panoptic":
        from ..evaluation.cityscapes_panoptic import evaluate_coco_panoptic

        return evaluate_coco_panoptic(args.gt, args.pred, args.gt_folder, args.pred_folder)
    from ..evaluation.folders import evaluate_folders

    ev = evaluate_folders(
        args.gt,
        args.pred,
        dataset=dataset,
        frames=args.frames,
        lambdas=lambdas,
        workers=workers,
        pred_depth_dir=args.pred_depth,
        max_frames_per_sequence=args.max_frames_per_sequence,
        depth_metrics=not args.no_depth_metrics,
        wrap_uint16_depth=args.uint16_depth_wraparound,
    )
    return ev.summary()


def _run_model(args: argparse.Namespace) -> dict:
    """Inference + evaluation (dataset Samples through the Predictor): predictions are never written to
    disk."""
    import numpy as np

    if not args.data:
        raise PanopticDepthError("evaluate --weights needs --data DIR (dataset root)")
    from ..checkpoint.model_dir import load_model_dir
    from ..config.labels import model_label_space
    from ..data.build import build_dataset
    from ..evaluation import DPSEvaluator
    from ..evaluation.protocol import protocol_for, protocol_ids
    from ..modeling.predictor import Predictor
    from ..utils.arrays import to_numpy
    from ..utils.progress import progress

    # load_model_dir rather than Predictor.from_dir: the data section of the config is needed.
    model, cfg = load_model_dir(args.weights, config_path=args.config, overrides=args.overrides)
    cfg_source = str(args.config or Path(args.weights) / "config.yaml")
    space = model_label_space(cfg, cfg_source)
    args.resolved_config = cfg
    predictor = Predictor(model, cfg, device=args.device, with_instance_masks=False, with_sem_seg=False)
    data_cfg = cfg.data
    data_cfg.root = args.data
    if args.dataset:
        data_cfg.dataset = args.dataset
    dataset = build_dataset(data_cfg, args.split, train=False, label_space=space, source=cfg_source)
    if data_cfg.dataset == "cityscapes-panoptic":
        return _run_model_cityscapes_panoptic(args, predictor, dataset)
    lambdas = args.lambdas if args.lambdas is not None else tuple(cfg.eval.depth_thresholds)
    if args.frames is None:
        args.frames = tuple(cfg.eval.frames)
    protocol = protocol_for(space)  # SemKITTI data in SemKITTI ids, others in train ids
    ev = DPSEvaluator(
        num_classes=protocol.num_classes,
        thing_ids=protocol.thing_classes,
        lambdas=lambdas,
        frames=args.frames,
        dataset=protocol,
    )
    if args.boundary_band > 0:
        ev.track_boundary_depth(args.boundary_band)
    n = len(dataset) if args.limit is None else min(len(dataset), args.limit)
    max_depth = float(cfg.eval.max_depth)
    track = SequenceTracking.from_args(args)  # frames of a sequence come in order
    for i in progress(range(n), desc="evaluate", unit="image"):
        sample = dataset[i]
        image = sample["image"].permute(1, 2, 0).numpy()
        meta = sample.get("meta", {})
        # Independent synthetic scenes share sequence keys for DVPQ but are not a video.
        tracked = None if meta.get("still") else meta.get("sequence")
        track.prepare(predictor, [tracked])
        result = track(tracked, predictor.predict(np.ascontiguousarray(image)))
        pred = to_numpy(result.panoptic).astype(np.int64)
        # Unassigned pixels (negative or category >= num_classes) are void for the evaluator.
        pred[(pred < 0) | (pred // LABEL_DIVISOR >= cfg.model.num_classes)] = VOID_ID
        pred_depth = None if getattr(result, "depth", None) is None else to_numpy(result.depth)
        gt_depth = None if sample.get("depth") is None else to_numpy(sample["depth"])
        if pred_depth is not None:
            # The official writer truncates metres * 256 of depth clamped to [0, max_depth]
            # (docs/original_implementation.md#depth-png).
            pred_depth = np.floor(np.clip(pred_depth, 0, max_depth) * 256.0) / 256.0
        gt = protocol_ids(space, to_numpy(sample["panoptic"]))
        ev.update(
            protocol_ids(space, pred, prediction=True),
            pred_depth,
            gt,
            gt_depth,
            sequence=meta.get("sequence"),
        )
    if n == 0:
        raise DataError(f"{args.data}: no images in split {args.split!r}")
    return ev.summary()


def _run_model_cityscapes_panoptic(args: argparse.Namespace, predictor, dataset) -> dict:
    """PQ of a model on Cityscapes panoptic data with cityscapesscripts' protocol.

    Each prediction is encoded exactly as `predict --format coco-panoptic` writes it and scored
    against the GT segment PNG and JSON `segments_info` (crowd regions, VOID and the JSON areas as
    cityscapesscripts' `evaluatePanoptic`), in memory, so `--limit` needs no trimmed GT JSON.
    """
    from ..evaluation.cityscapes_panoptic import CocoPanopticPQ
    from ..io.coco_panoptic import cityscapes_categories, panoptic_to_coco
    from ..io.formats import read_image_rgb, read_segment_rgb
    from ..utils.arrays import to_numpy
    from ..utils.progress import progress

    records = dataset.records
    gt_doc = json.loads(Path(records[0].meta["json"]).read_text())
    categories = gt_doc.get("categories") or cityscapes_categories()
    category_ids = [c["id"] for c in cityscapes_categories()]  # train id -> Cityscapes label id
    pq = CocoPanopticPQ(categories)
    n = len(records) if args.limit is None else min(len(records), args.limit)
    for i in progress(range(n), desc="evaluate", unit="image"):
        record = records[i]
        result = predictor.predict(read_image_rgb(record.files["image"]))
        pred_ids, segments = panoptic_to_coco(to_numpy(result.panoptic), category_ids)
        gt_ids = read_segment_rgb(record.files["panoptic"])
        gt_ann = {"segments_info": record.meta["segments_info"]}
        pq.update(gt_ids, pred_ids, gt_ann, {"segments_info": segments}, str(record.files["image"]))
    if n == 0:
        raise DataError(f"{args.data}: no images in split {args.split!r}")
    return pq.summary()


def _format_panoptic(summary: dict) -> str:
    lines = [f"{'':<10}{'PQ':>8}{'SQ':>8}{'RQ':>8}{'N':>5}"]
    for key in ("All", "Things", "Stuff"):
        r = summary[key]
        lines.append(f"{key:<10}{r['pq']:>8.2f}{r['sq']:>8.2f}{r['rq']:>8.2f}{r['n']:>5d}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    from .main import main

    sys.exit(main(["evaluate", *sys.argv[1:]]))
