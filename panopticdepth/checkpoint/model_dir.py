"""Model directory: `model.safetensors` (this library's names) + `config.yaml`.

The pair is self-describing: `load_model_dir(dir)` rebuilds the network from the saved config and
loads the weights strictly, naming every missing, unexpected or mis-shaped entry.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

import torch
from torch import nn

from ..config import Config, load_config, save_config
from ..errors import CheckpointError
from ..utils.files import atomic_path

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.yaml"


def save_model_dir(directory: str | os.PathLike, model: nn.Module, cfg: Config) -> Path:
    """Write `model.safetensors` and `config.yaml` into `directory` (each atomically)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to("cpu").contiguous()
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "library": "panopticdepth"})
    save_config(cfg, directory / CONFIG_NAME)
    logger.info("wrote %s and %s to %s", WEIGHTS_NAME, CONFIG_NAME, directory)
    return directory


def check_state_dict(
    state: dict[str, torch.Tensor], model: nn.Module, source: str, allow_missing: tuple[str, ...] = ()
) -> dict[str, torch.Tensor]:
    """Raise CheckpointError naming every missing / unexpected / mis-shaped key; else return `state`.

    `num_batches_tracked` buffers are optional on both sides (BN vs FrozenBN); model keys starting
    with a prefix in `allow_missing` may be absent from `state`.
    """
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    own_keys = {k for k in own if not k.endswith("num_batches_tracked")}
    missing = sorted(k for k in own_keys - set(state) if not (allow_missing and k.startswith(allow_missing)))
    unexpected = sorted(set(state) - own_keys)
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(own_keys & set(state))
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): {'; '.join(mismatched)}")
    if problems:
        raise CheckpointError(f"{source}: weights do not match the model: " + " | ".join(problems))
    return state


def load_weights_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """Strictly checked load (dtype cast to the model's); FrozenBN/BN counters may be absent."""
    state = check_state_dict(state, model, source)
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=False)
    return model


def load_model_dir(
    directory: str | os.PathLike,
    config_path: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
) -> tuple[nn.Module, Config]:
    """Rebuild the network from `config.yaml` (or `config_path`) + overrides and load its weights."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..config.labels import model_label_space
    from ..modeling.network import build_model

    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: model directory not found")
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(
            f"{weights}: missing (a model directory holds {WEIGHTS_NAME} and {CONFIG_NAME})"
        )
    cfg_file = Path(config_path) if config_path is not None else directory / CONFIG_NAME
    if not cfg_file.is_file():
        raise CheckpointError(f"{cfg_file}: config file not found")
    cfg = load_config(cfg_file, overrides)
    model_label_space(cfg, str(cfg_file))  # the class counts must agree with the stored label space
    build_cfg = copy.deepcopy(cfg.model)
    build_cfg.backbone.pretrained = ""  # the weights come from the directory, not ImageNet
    model = build_model(build_cfg)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{weights}: cannot read safetensors file ({err})") from None
    load_weights_into(model, state, str(weights))
    model.eval()
    return model, cfg
