"""Evaluation configuration."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EvalConfig:
    # DPQ depth-error thresholds lambda (PanopticDepth's evaluator: 0.5, 0.25, 0.1; DPQ = their mean)
    depth_thresholds: list[float] = field(default_factory=lambda: [0.5, 0.25, 0.1])
    # predicted depth is clamped to [0, max_depth] m before writing / evaluating (released: 80)
    max_depth: float = 80.0
    # processes reading and matching frames in `panopticdepth evaluate`
    workers: int = 1
    # window sizes k of (video) DVPQ; the first is the headline. The released evaluator runs k = 1.
    frames: list[int] = field(default_factory=lambda: [1])
