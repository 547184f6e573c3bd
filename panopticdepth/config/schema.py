"""The root of the configuration tree: one dataclass per section, defaults in code."""

from __future__ import annotations

from dataclasses import dataclass, field

from .data import DataConfig
from .evaluation import EvalConfig
from .labels import LabelsConfig
from .model import ModelConfig
from .training import SolverConfig, TrainConfig


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
