"""Inference speed: seconds per image (network / post-processing) and peak memory, on the CPU.

    .venv/bin/python benchmarks/inference.py                 # default table (2 threads)
    .venv/bin/python benchmarks/inference.py --quick         # small sizes only
    .venv/bin/python benchmarks/inference.py --cases r50:256x512 --modes fp32,channels_last

R-50 uses the oracle's recipe weights (converted through the real converter) when
../shared/oracle is present, so the post-processing sees as many candidates as the original's
measurement did; otherwise (and for R-18) random init. Peak memory = the process's peak resident
set size during the case (VmHWM, reset per case through /proc/self/clear_refs where allowed).
Reference (original implementation, R-50, depth on, 2 threads, this CPU): 0.58 s at 128x256,
1.27 s at 192x384, 2.39 s at 256x512, ~12.6 s at 512x1024, ~56 s at 1024x2048 (network only).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
ORACLE = Path(os.environ.get("PANOPTICDEPTH_ORACLE", REPO.parent / "shared" / "oracle"))
ORIGINAL_S = {(128, 256): 0.58, (192, 384): 1.27, (256, 512): 2.39, (512, 1024): 12.6, (1024, 2048): 56.0}
DEFAULT_CASES = "r50:128x256,r50:256x512,r50:512x1024,r50:1024x2048,r18:256x512"
QUICK_CASES = "r50:128x256,r50:256x512,r18:256x512"


def _peak_reset() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _build(arch: str):
    from panopticdepth.config import load_config
    from panopticdepth.modeling import build_model

    if arch == "r50" and (ORACLE / "reference_keys.json").is_file():
        from panopticdepth.checkpoint.convert_original import convert_original

        spec = importlib.util.spec_from_file_location("weights_recipe", ORACLE / "weights_recipe.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        weights = mod.make_weights(json.loads((ORACLE / "reference_keys.json").read_text()))
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = Path(tmp) / "recipe.pth"
            torch.save({"model": {k: torch.from_numpy(v) for k, v in weights.items()}}, ckpt)
            model, cfg = convert_original(ckpt, Path(tmp) / "model")
        return model.eval(), cfg, "recipe"
    cfg = load_config(None, [f"model.backbone.name={'resnet50' if arch == 'r50' else 'resnet18'}"])
    torch.manual_seed(0)
    return build_model(cfg.model).eval(), cfg, "random"


def _postprocess_fn():
    try:
        from panopticdepth.modeling.postprocess import postprocess
    except ImportError:
        return None
    return postprocess


def run_case(model, cfg, size: tuple[int, int], mode: str, runs: int) -> dict:
    from panopticdepth.modeling.preprocess import preprocess

    postprocess = _postprocess_fn()
    net = model
    if mode == "channels_last":
        net = copy.deepcopy(model).to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=g)
    batch, sizes = preprocess([image], cfg.model)
    if mode == "channels_last":
        batch = batch.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if mode == "bf16" else contextlib.nullcontext()
    _peak_reset()
    t_net, t_post, cpu_net = [], [], []
    for i in range(runs + 1):  # first run = warm-up
        with torch.inference_mode():
            c0 = time.process_time()
            t0 = time.perf_counter()
            with autocast:
                out = net(batch)
            t1 = time.perf_counter()
            c1 = time.process_time()
            if postprocess is not None:
                postprocess(out, model, cfg.model, sizes)
            t2 = time.perf_counter()
        if i > 0:
            t_net.append(t1 - t0)
            cpu_net.append(c1 - c0)
            t_post.append(t2 - t1)
    return {
        "net": statistics.median(t_net),
        "cpu": statistics.median(cpu_net),
        "post": statistics.median(t_post) if postprocess is not None else float("nan"),
        "peak_mb": _peak_mb(),
    }


def _set_impl(model, impl: str) -> None:
    from panopticdepth.modeling.deform_conv import set_deform_impl

    set_deform_impl(model, impl)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", default=None, help=f"comma list of arch:HxW (default {DEFAULT_CASES})")
    ap.add_argument("--modes", default="fp32,channels_last,bf16", help="fp32, channels_last, bf16")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per case after one warm-up (median)")
    ap.add_argument("--quick", action="store_true", help=f"cases {QUICK_CASES}")
    ap.add_argument("--deform-impl", default=None, help="override model.heads.deform_impl")
    ap.add_argument(
        "--no-proxy",
        action="store_true",
        help="skip the same-machine proxy of the original (fp32 with torchvision's DCN kernel)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cases = args.cases or (QUICK_CASES if args.quick else DEFAULT_CASES)
    models = {}
    rows = []
    header = (
        f"{'arch':5} {'size':>10} {'mode':14} {'network s':>10} {'post s':>8} {'total s':>8} {'post %':>7} "
    )
    header += f"{'peak MB':>8} {'net cpu s':>9} {'tvDCN s':>8} {'original s':>10} {'ratio':>6}"
    print(f"threads={args.threads}  torch {torch.__version__}")
    print(header)
    print("-" * len(header))
    for case in cases.split(","):
        arch, size_s = case.split(":")
        h, w = (int(v) for v in size_s.lower().split("x"))
        if arch not in models:
            models[arch] = _build(arch)
            if args.deform_impl:
                _set_impl(models[arch][0], args.deform_impl)
        model, cfg, weights = models[arch]
        for mode in args.modes.split(","):
            runs = max(1, args.runs if h * w <= 512 * 1024 else min(args.runs, 2))
            r = run_case(model, cfg, (h, w), mode, runs)
            proxy = float("nan")
            if mode == "fp32" and not args.no_proxy:
                _set_impl(model, "torchvision")
                proxy = run_case(model, cfg, (h, w), mode, runs)["net"]
                _set_impl(model, args.deform_impl or cfg.model.heads.deform_impl)
            total = r["net"] + (0.0 if r["post"] != r["post"] else r["post"])
            orig = ORIGINAL_S.get((h, w)) if arch == "r50" else None
            ratio = f"{total / orig:6.2f}" if orig else "     -"
            post_pct = 100 * r["post"] / total if r["post"] == r["post"] else float("nan")
            line = f"{arch:5} {h:>4}x{w:<5} {mode:14} {r['net']:10.3f} {r['post']:8.3f} {total:8.3f} "
            line += f"{post_pct:6.1f}% {r['peak_mb']:8.0f} {r['cpu']:9.3f} {proxy:8.3f} "
            line += f"{orig if orig else '-':>10} {ratio}"
            print(line, flush=True)
            rows.append((arch, h, w, mode, weights, r))
    print(
        "\nratio = our total (network + post-processing) / the original's network-only time (idle machine)."
        "\ntvDCN s = this network with torchvision's deform_conv2d (the original's DCN arithmetic), fp32:"
        "\na same-machine, same-load proxy of the original's network time."
        "\nnet cpu s = process CPU seconds of the network (all threads), less sensitive to other load."
    )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
