"""Evaluation configuration."""

from __future__ import annotations

from dataclasses import dataclass, field

from .checks import above, at_least, each, not_empty, rules


@dataclass
class EvalConfig:
    # DPQ depth-error thresholds lambda (PanopticDepth's evaluator: 0.5, 0.25, 0.1; DPQ = their mean)
    depth_thresholds: list[float] = field(
        default_factory=lambda: [0.5, 0.25, 0.1], metadata=rules(not_empty, each(above(0)))
    )
    # predicted depth is clamped to [0, max_depth] m before writing / evaluating (released: 80)
    max_depth: float = field(default=80.0, metadata=rules(above(0)))
    # processes reading and matching frames in `panopticdepth evaluate`
    workers: int = field(default=1, metadata=rules(at_least(0)))
    # window sizes k of (video) DVPQ; the first is the headline. The released evaluator runs k = 1.
    frames: list[int] = field(default_factory=lambda: [1], metadata=rules(not_empty, each(at_least(1))))
