"""Model directories (safetensors + config.yaml) and conversion of the original checkpoints."""

from .model_dir import load_model_dir, save_model_dir

__all__ = ["load_model_dir", "save_model_dir"]
