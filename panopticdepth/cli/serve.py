"""`panopticdepth serve`: a local web page for a model directory (upload, views, 3D point cloud)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from .common import add_config_arguments

logger = logging.getLogger(__name__)


def add_server_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by `serve` and `demo --serve`."""
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 picks a free one)")
    p.add_argument(
        "--intrinsics",
        metavar="SPEC",
        help="camera for the 3D view and the PLY: 'fx,fy,cx,cy' or a Cityscapes camera JSON "
        "(default: the Cityscapes camera scaled to the image, as predict --pointcloud)",
    )
    p.add_argument(
        "--max-display-size",
        type=int,
        default=1024,
        metavar="PX",
        help="longest side of the pictures and 3D grid on the page (default 1024); inference and downloads "
        "always use the full image",
    )
    p.add_argument(
        "--max-upload-mb", type=float, default=50.0, metavar="MB", help="largest accepted file (default 50)"
    )
    p.add_argument(
        "--max-megapixels",
        type=float,
        default=40.0,
        metavar="MP",
        help="largest accepted image; larger ones are refused with a message, never resized (default 40)",
    )
    p.add_argument("--no-browser", action="store_true", help="do not try to open a web browser")


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "serve",
        help="open a local web page to run a model on images and explore the result in 3D",
        description=(
            "Serve a page on which you drop or pick an image and see the panoptic overlay, the depth map, "
            "the segment list and an interactive 3D point cloud, with downloads of the PNGs, npz and PLY. "
            "Works offline; needs only the standard library and the core install."
        ),
    )
    p.add_argument(
        "--weights", required=True, metavar="DIR", help="model directory (model.safetensors + config.yaml)"
    )
    p.add_argument("--examples", metavar="DIR", help="folder of example images shown on the page")
    add_server_arguments(p)
    p.add_argument(
        "--bf16", action="store_true", help="bfloat16 autocast for the network (faster on CPUs with bf16)"
    )
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    add_config_arguments(p)
    p.set_defaults(func=run)
    return p


def serve_model(
    predictor: Any, args: argparse.Namespace, model_name: str, examples: str | Path | None = None
) -> int:
    """Run the server for `predictor` until Ctrl-C (shared by `serve` and `demo --serve`)."""
    from ..app import make_server
    from ..errors import PanopticDepthError

    if args.intrinsics:  # fail early on a bad camera spec
        from ..io.pointcloud import parse_intrinsics

        parse_intrinsics(args.intrinsics, 1, 1)
    if examples is not None and not Path(examples).is_dir():
        raise PanopticDepthError(f"{examples}: --examples must be a folder of images")
    try:
        server = make_server(
            predictor,
            host=args.host,
            port=args.port,
            examples=examples,
            model_name=model_name,
            intrinsics=args.intrinsics,
            max_display_side=args.max_display_size,
            max_upload_mb=args.max_upload_mb,
            max_megapixels=args.max_megapixels,
        )
    except OSError as err:
        raise PanopticDepthError(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}") from None
    print(f"panopticdepth: serving {model_name} on {server.url}  (Ctrl-C to stop)", flush=True)
    if not args.no_browser:
        import webbrowser

        try:
            webbrowser.open(server.url)
        except Exception:  # no browser on a headless machine: the URL is printed above
            pass
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        logger.info("stopping the server")
    finally:
        server.server_close()
        server.service.close()
    return 0


def run(args: argparse.Namespace) -> int:
    from ..errors import PanopticDepthError
    from ..modeling.predictor import Predictor

    weights = Path(args.weights)
    if not weights.is_dir():
        raise PanopticDepthError(
            f"{weights}: --weights must be a model directory (model.safetensors + config.yaml)"
        )
    if args.examples and not Path(args.examples).is_dir():
        raise PanopticDepthError(f"{args.examples}: --examples must be a folder of images")
    predictor = Predictor.from_dir(
        weights,
        config_path=args.config,
        overrides=list(args.overrides or []),
        device=args.device,
        channels_last=args.channels_last,
        bf16=args.bf16,
        with_instance_masks=False,
        with_sem_seg=False,
    )
    name = weights.resolve().name
    if name == "model":  # runs/<name>/model: the run's name says more
        name = f"{weights.resolve().parent.name}/model"
    return serve_model(predictor, args, name, args.examples)
