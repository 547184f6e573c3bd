"""`panopticdepth export`: the network (backbone + heads) as an ONNX graph with a dynamic image size.

The graph takes the normalised, padded batch `image` (B, 3, H, W), H and W multiples of 32, and
returns the head outputs by name (`center_p3`, ..., `mask_embedding`, `depth_embedding`).
Pre-processing (`panopticdepth.modeling.preprocess`) and post-processing
(`panopticdepth.modeling.postprocess`, fed by `panopticdepth.export.onnx.head_outputs_from_onnx`)
stay in Python.
"""

from __future__ import annotations

import argparse
import logging

from .common import add_config_arguments

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export",
        help="export the network to ONNX (dynamic image size)",
        description=(
            "Export backbone, FPN and heads to ONNX with torch.onnx's dynamo exporter. The input is the "
            "normalised, padded image batch (any height/width multiple of 32); post-processing stays in "
            "Python (see panopticdepth.export.onnx)."
        ),
    )
    add_config_arguments(p)
    p.add_argument(
        "--weights",
        metavar="DIR",
        help="model directory (model.safetensors + config.yaml); without it: random init from --config",
    )
    p.add_argument("--output", required=True, metavar="ONNX", help="output file, e.g. model.onnx")
    p.add_argument("--height", type=int, default=256, help="example height, multiple of 32 (default 256)")
    p.add_argument("--width", type=int, default=512, help="example width, multiple of 32 (default 512)")
    p.add_argument(
        "--opset", type=int, default=None, help="ONNX opset (default 19, the first with DeformConv)"
    )
    p.add_argument("--static", action="store_true", help="fix the image size to --height x --width")
    p.add_argument(
        "--check",
        action="store_true",
        help="run the exported model with onnxruntime, compare with PyTorch and time both",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import time

    import torch

    from ..errors import PanopticDepthError
    from ..export.onnx import DEFAULT_OPSET, export_onnx, flatten_head_outputs, onnx_session, run_onnx

    if args.weights:
        from ..checkpoint.model_dir import load_model_dir

        model, cfg = load_model_dir(args.weights, args.config, args.overrides)
    else:
        from ..modeling.network import build_model
        from .common import resolve_config

        if not args.config:
            raise PanopticDepthError("give --weights DIR (a model directory) or --config YAML")
        cfg = resolve_config(args)
        logger.warning("no --weights: exporting a randomly initialised network")
        model = build_model(cfg.model)
    model.eval()
    opset = args.opset or DEFAULT_OPSET
    t0 = time.perf_counter()
    path = export_onnx(
        model, cfg.model, args.output, args.height, args.width, opset=opset, dynamic=not args.static
    )
    size_mb = path.stat().st_size / 1e6
    print(f"wrote {path} ({size_mb:.1f} MB, opset {opset}) in {time.perf_counter() - t0:.1f} s")
    if args.check:
        x = torch.randn(1, 3, args.height, args.width)
        session = onnx_session(path)
        with torch.no_grad():
            ref = flatten_head_outputs(model(x))
            t_eager = _best_time(lambda: model(x))
        got = flatten_head_outputs(run_onnx(session, x))
        t_ort = _best_time(lambda: run_onnx(session, x))
        err = max(float((a - b).abs().max()) for a, b in zip(ref, got))
        print(f"max |onnxruntime - pytorch| = {err:.2e}")
        size = f"{args.height}x{args.width}"
        print(f"{size}: pytorch eager {t_eager * 1000:.1f} ms, onnxruntime {t_ort * 1000:.1f} ms")
    return 0


def _best_time(fn, repeats: int = 3) -> float:
    import time

    import torch

    best = float("inf")
    with torch.no_grad():
        fn()  # warm-up
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
    return best
