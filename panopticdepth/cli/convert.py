"""`panopticdepth convert`: original checkpoint (+ its YAML) -> model directory."""

from __future__ import annotations

import argparse


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "convert",
        help="convert an original PanopticDepth checkpoint into a model directory",
        description=(
            "Read a checkpoint of the original implementation (.pth/.pt torch file with a 'model' "
            "state dict or a bare state dict, or a Detectron2 .pkl of numpy arrays), map every key to "
            "this library's names, check shapes, and write DIR/model.safetensors + DIR/config.yaml. "
            "Without --original-config the released Cityscapes-DPS settings apply."
        ),
    )
    p.add_argument("--original", required=True, metavar="CKPT", help="original checkpoint (.pth, .pt, .pkl)")
    p.add_argument(
        "--original-config",
        metavar="YAML",
        help="the original implementation's config (Detectron2 keys, _BASE_ chains followed)",
    )
    p.add_argument("--output", required=True, metavar="DIR", help="model directory to write")
    p.add_argument("--config", metavar="YAML", help="this library's config applied after --original-config")
    p.add_argument(
        "--unsafe-load",
        action="store_true",
        help="allow arbitrary pickled objects in a .pth or .pkl (reading may run code: only for "
        "files you trust)",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides applied last")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..checkpoint.convert_original import convert_original

    _, cfg = convert_original(
        args.original,
        args.output,
        original_config=args.original_config,
        config_path=args.config,
        overrides=args.overrides,
        unsafe=args.unsafe_load,
    )
    depth = "on" if cfg.model.depth.enabled else "off"
    print(f"wrote {args.output}/model.safetensors and config.yaml ({cfg.model.backbone.name}, depth {depth})")
    return 0
