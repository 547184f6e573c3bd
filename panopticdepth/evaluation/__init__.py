"""Metrics: PQ (Eq. 10), DPQ / DVPQ (Eq. 11) exactly as the official evaluators, depth metrics.

`DPSEvaluator` accumulates per-class sums frame by frame in constant memory; `evaluate_folders` runs it
over prediction files in the official formats; `format_table` prints a paper-style table.
"""

from .accumulator import DPSEvaluator, FrameRecord
from .protocol import CITYSCAPES_DPS, SEMKITTI_DPS, Protocol, get_protocol
from .summary import format_table

__all__ = [
    "CITYSCAPES_DPS",
    "DPSEvaluator",
    "FrameRecord",
    "Protocol",
    "SEMKITTI_DPS",
    "format_table",
    "get_protocol",
]
