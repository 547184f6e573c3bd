"""Evaluation configuration."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EvalConfig:
    depth_thresholds: list[float] = field(default_factory=lambda: [0.5, 0.25, 0.1])
    max_depth: float = 80.0
    workers: int = 1
