"""Typed configuration: dataclass defaults <- YAML <- dotted command-line overrides."""

from .data import AugmentationConfig, DataConfig
from .evaluation import EvalConfig
from .labels import ClassConfig, LabelsConfig
from .loader import (
    ConfigError,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
    save_config,
)
from .model import BackboneConfig, DepthConfig, FPNConfig, HeadsConfig, InferenceConfig, ModelConfig
from .schema import Config
from .training import LossConfig, SolverConfig, TargetConfig, TrainConfig

__all__ = [
    "AugmentationConfig",
    "BackboneConfig",
    "ClassConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "DepthConfig",
    "EvalConfig",
    "FPNConfig",
    "HeadsConfig",
    "InferenceConfig",
    "LabelsConfig",
    "LossConfig",
    "ModelConfig",
    "SolverConfig",
    "TargetConfig",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "load_config",
    "save_config",
]
