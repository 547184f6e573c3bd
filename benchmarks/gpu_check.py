"""One-GPU check of the cluster training path, printed as a table (about 5 minutes on one GPU).

1. Training: the paper's R-50 DPS model (deformable convolutions on) on synthetic 512x1024
   scenes, 4 images per GPU, SyncBN in a one-rank NCCL process group, 30 iterations each in fp32,
   bf16 and fp16 (with GradScaler): finite losses, seconds per iteration (mean of the last 20),
   peak GPU memory.
2. Inference at 1024x2048: network and network + post-processing in ms, fp32 and bf16.
3. `panopticdepth evaluate --weights --device cuda` on a few synthetic 1024x2048 frames.

    python benchmarks/gpu_check.py [--out gpu_check.md]
    python benchmarks/gpu_check.py --device cpu --smoke     # the same code path, tiny, on a CPU

The smoke mode (tests/benchmarks/test_gpu_check.py) keeps the script working between GPU runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def _init_one_rank_group(device: torch.device) -> None:
    """A one-rank NCCL group, so that SyncBatchNorm and the collectives run as on a cluster."""
    import torch.distributed as dist

    if device.type != "cuda" or dist.is_initialized():
        return
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("nccl", rank=0, world_size=1, device_id=device)


def train_case(args, data_root: Path, out: Path, amp: str) -> dict:
    from panopticdepth.config import load_config
    from panopticdepth.training.distributed import DistInfo
    from panopticdepth.training.engine import Trainer, TrainingDiverged

    device = torch.device(args.device)
    overrides = [
        f"data.root={data_root}",
        "data.dataset=synthetic",
        f"data.num_workers={args.workers}",
        "data.augmentation.color=true",
        f"solver.max_iter={args.iters}",
        f"solver.ims_per_batch={args.batch}",
        "solver.warmup_iters=10",
        f"solver.amp={amp}",
        "model.backbone.norm=SyncBN",
        "model.backbone.freeze_at=0",
        "model.backbone.pretrained=none",
        "model.heads.deform_impl=torchvision",
        "train.checkpoint_period=0",
        "train.eval_period=0",
        "train.tensorboard=false",
        "train.log_period=1",
        f"train.device={args.device}",
        *args.model_overrides,
    ]
    cfg = load_config(None, overrides)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    row = {"amp": amp, "status": "ok"}
    try:
        Trainer(cfg, out, dist_info=DistInfo(device=device)).train()
    except TrainingDiverged as err:
        row["status"] = f"diverged: {err}"
    except Exception as err:  # noqa: BLE001 - the table reports every case
        row["status"] = f"{type(err).__name__}: {err}"[:200]
        logging.getLogger(__name__).error("training with amp=%s failed", amp, exc_info=err)
        return row
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steady = [r["time"] for r in rows[-min(20, len(rows)) :]]
    row["s_per_iter"] = statistics.mean(steady)
    row["last_loss"] = rows[-1]["total_loss"]
    row["finite"] = all(torch.isfinite(torch.tensor(r["total_loss"])) for r in rows)
    row["peak_gib"] = _peak_gib(device)
    row["model_dir"] = str(out / "model")
    return row


def inference_rows(args, model_dir: str, image) -> list[dict]:
    from panopticdepth.modeling.postprocess import postprocess
    from panopticdepth.modeling.predictor import Predictor
    from panopticdepth.modeling.preprocess import preprocess

    device = torch.device(args.device)
    rows = []
    for bf16 in (False, True):
        predictor = Predictor.from_dir(model_dir, device=device, bf16=bf16, with_instance_masks=False,
                                       with_sem_seg=False)  # fmt: skip
        x = torch.from_numpy(image).permute(2, 0, 1).contiguous().to(device)
        net_ms, total_ms = [], []
        for i in range(args.inference_runs + 2):
            with torch.inference_mode():
                _sync(device)
                t0 = time.perf_counter()
                batch, sizes = preprocess([x], predictor.cfg)
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
                    outputs = predictor.model(batch)
                _sync(device)
                t1 = time.perf_counter()
                postprocess(outputs, predictor.model, predictor.cfg, sizes, with_instance_masks=False,
                            with_sem_seg=False)  # fmt: skip
                _sync(device)
                t2 = time.perf_counter()
            if i >= 2:  # the first runs pick cuDNN algorithms
                net_ms.append(1000 * (t1 - t0))
                total_ms.append(1000 * (t2 - t0))
        rows.append(
            {"precision": "bf16" if bf16 else "fp32", "network_ms": statistics.median(net_ms),
             "total_ms": statistics.median(total_ms)}
        )  # fmt: skip
    return rows


def evaluate_row(args, model_dir: str, data_root: Path, out: Path) -> dict:
    from panopticdepth.cli.main import main

    t0 = time.perf_counter()
    code = main(["evaluate", "--weights", model_dir, "--data", str(data_root), "--split", "val",
                 "--device", args.device, "--json", str(out)])  # fmt: skip
    seconds = time.perf_counter() - t0
    if code != 0 or not out.is_file():
        return {"status": f"exit {code}", "seconds": seconds}
    summary = json.loads(out.read_text())
    dpq = summary.get("dpq", {}).get("mean", {}).get("dpq")
    return {"status": "ok", "seconds": seconds, "pq": summary.get("pq", {}).get("pq"), "dpq": dpq}


def format_report(env: dict, train: list[dict], infer: list[dict], evaluation: dict) -> str:
    lines = [f"device: {env['device']} | torch {env['torch']} | python {env['python']}", ""]
    lines += ["| training (R-50, deform on, 512x1024, batch 4/GPU, SyncBN) | status | finite | s/iter | "
              "peak GiB | last loss |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in train:
        nan = float("nan")
        lines.append(
            f"| {r['amp']} | {r['status']} | {r.get('finite', '-')} | {r.get('s_per_iter', nan):.3f} | "
            f"{r.get('peak_gib', nan):.2f} | {r.get('last_loss', nan):.3f} |"
        )
    lines += ["", "| inference 1024x2048 | network ms | network + post-processing ms |", "|---|---|---|"]
    for r in infer:
        lines.append(f"| {r['precision']} | {r['network_ms']:.1f} | {r['total_ms']:.1f} |")
    lines += ["", f"evaluate --weights --device: {json.dumps(evaluation)}"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--smoke", action="store_true", help="tiny sizes and iterations (for a CPU test)")
    p.add_argument("--out", help="also write the report to this file")
    p.add_argument("--keep", help="keep the work folder here (default: a temporary folder)")
    args = p.parse_args(argv)
    args.iters, args.batch, args.size, args.infer_size, args.workers = 30, 4, (512, 1024), (1024, 2048), 6
    args.frames, args.eval_frames, args.inference_runs, args.model_overrides = 8, 4, 5, []
    if args.smoke:
        args.iters, args.batch, args.size, args.infer_size, args.workers = 2, 2, (64, 128), (64, 128), 0
        args.frames, args.eval_frames, args.inference_runs = 2, 1, 1
        args.model_overrides = ["model.backbone.name=resnet18", "model.fpn.out_channels=32",
                                "model.heads.convs_dim=32", "model.heads.norm_groups=8"]  # fmt: skip
    return args


def main(argv: list[str] | None = None) -> str:
    from panopticdepth.data.synthetic.writer import generate, write_dataset

    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from panopticdepth.utils.device import resolve_device

    # `cuda` -> `cuda:0`: NCCL's device_id and the trainer's collectives compare indexed devices
    device = resolve_device(args.device)
    args.device = str(device)
    _init_one_rank_group(device)
    env = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    with tempfile.TemporaryDirectory(dir=args.keep) as tmp:
        work = Path(tmp)
        h, w = args.size
        write_dataset(work / "data", "train", args.frames, height=h, width=w, seed=0)
        ih, iw = args.infer_size
        write_dataset(work / "data", "val", args.eval_frames, height=ih, width=iw, seed=1)
        amps = ["none", "bf16", "fp16"] if device.type == "cuda" else ["none", "bf16"]
        train = [train_case(args, work / "data", work / f"train_{amp}", amp) for amp in amps]
        model_dir = next((r["model_dir"] for r in train if "model_dir" in r), None)
        infer, evaluation = [], {"status": "no trained model"}
        if model_dir is not None:
            infer = inference_rows(args, model_dir, generate(2, 0, ih, iw).image)
            evaluation = evaluate_row(args, model_dir, work / "data", work / "eval.json")
    report = format_report(env, train, infer, evaluation)
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")
    return report


if __name__ == "__main__":
    main()
