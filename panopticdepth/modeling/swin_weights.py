"""ImageNet weights for the Swin backbone from a local file.

Accepted files (any of them may wrap the state dict in `{"model": ...}` or `{"state_dict": ...}`):

* timm's `model.safetensors` / `pytorch_model.bin` / a `torch.save(model.state_dict())` `.pth`
  (keys `layers.1.downsample.*`, `head.fc.*`: the patch merging sits at the start of a stage);
* the official Swin release's `.pth` (`swin_tiny_patch4_window7_224.pth`, ...: keys
  `layers.0.downsample.*`, `head.*`, plus the `relative_position_index` / `attn_mask` buffers;
  the patch merging sits at the end of a stage).

Both are mapped to the names of timm's feature extractor (`layers_0.blocks.0.*`, ...); the
classifier (`head.*`) and the final norm (`norm.*`) are dropped because the dense backbone does not
use them. Every other key must match by name and shape, else a `CheckpointError` names the file
and the keys. Kept apart from the ResNet loader on purpose: the two share no format.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError

logger = logging.getLogger(__name__)

# Buffers that the official release saves but that are rebuilt from the window size.
_DERIVED_BUFFERS = ("relative_position_index", "attn_mask", "relative_coords_table")
# Parameters of the classification model that the feature extractor does not have.
_CLASSIFIER_PREFIXES = ("head.", "norm.")


def read_weight_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A flat name -> tensor dict from a `.safetensors` file or a torch-saved `.pth` / `.bin`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path}: pretrained backbone weights not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data = load_file(str(path))
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure means a bad file for the user
        raise CheckpointError(f"{path}: cannot read Swin weights ({type(err).__name__}: {err})") from None
    for wrapper in ("model", "state_dict"):
        if isinstance(data, dict) and isinstance(data.get(wrapper), dict):
            data = data[wrapper]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    return data


def to_feature_extractor_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm classification or official Swin names -> timm feature-extractor names.

    The official layout is recognised by a patch merging in stage 0 (`layers.0.downsample`),
    which timm's layout never has; its merging layers move one stage up.
    """
    state = {k.removeprefix("module."): v for k, v in state.items()}
    official = any(k.startswith("layers.0.downsample.") for k in state)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith(_DERIVED_BUFFERS) or key.startswith(_CLASSIFIER_PREFIXES):
            continue
        if official:
            key = re.sub(
                r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m[1]) + 1}.downsample.", key
            )
        key = re.sub(r"^layers\.(\d+)\.", r"layers_\1.", key)
        out[key] = value
    return out


def load_swin_imagenet(body: nn.Module, path: str | os.PathLike, model_name: str) -> None:
    """Load ImageNet weights from `path` into timm's Swin feature extractor `body` (strict)."""
    path = Path(path).expanduser()
    state = to_feature_extractor_names(read_weight_file(path))
    own = body.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        parts = [
            f"{len(keys)} {what}, e.g. {keys[:4]}"
            for what, keys in (("missing", missing), ("unexpected", unexpected))
            if keys
        ]
        raise CheckpointError(
            f"{path}: not {model_name} weights in timm's or the official Swin layout ({'; '.join(parts)})"
        )
    wrong = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if v.shape != own[k].shape]
    if wrong:
        key, got, want = wrong[0]
        raise CheckpointError(
            f"{path}: {len(wrong)} tensors have the wrong shape for {model_name}, e.g. {key} is {got}, "
            f"expected {want} (another window size or model width?)"
        )
    body.load_state_dict(state, strict=True)
    logger.info("loaded %s ImageNet weights from %s", model_name, path)
