"""`panopticdepth data check DIR`: validate a dataset folder and list every problem per file."""

from __future__ import annotations

import argparse

DATASETS = ["cityscapes-dps", "semkitti-dps", "cityscapes-panoptic", "custom", "synthetic"]


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("data", help="dataset tools (check)", description="Dataset tools.")
    dsub = p.add_subparsers(dest="data_command", metavar="<subcommand>")
    c = dsub.add_parser(
        "check",
        help="validate a dataset folder",
        description=(
            "Read every frame of a dataset folder as the training reader would and report, per file, "
            "missing partner files, size mismatches, unreadable or truncated PNGs, ids outside the class "
            "table and depth PNGs of the wrong bit depth. Exit status 1 when problems are found."
        ),
    )
    c.add_argument("root", metavar="DIR", help="dataset root")
    c.add_argument("--dataset", choices=DATASETS, help="dataset format (default: detected from file names)")
    c.add_argument(
        "--split", action="append", metavar="NAME", help="split to check (repeatable; default: all found)"
    )
    c.set_defaults(func=run_check)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    return p


def run_check(args: argparse.Namespace) -> int:
    from ..config.data import DataConfig
    from ..data.build import dataset_label_space
    from ..data.check import check_dataset, detect_dataset
    from ..errors import DataError

    counts, problems = check_dataset(args.root, args.dataset, args.split)
    for prob in problems:
        print(f"{prob.path}: {prob.message}")
    frames = ", ".join(f"{split}: {n} frames" for split, n in counts.items()) or "no frames"
    status = f"{len(problems)} problem(s)" if problems else "OK"
    try:
        name = args.dataset or detect_dataset(args.root)
        print(f"label space {dataset_label_space(DataConfig(dataset=name, root=str(args.root))).describe()}")
    except DataError:
        pass  # already listed as a problem
    print(f"{args.root}: {frames}; {status}")
    return 1 if problems else 0
