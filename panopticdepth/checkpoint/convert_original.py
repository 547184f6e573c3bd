"""Convert a checkpoint of the original (Detectron2) implementation to this library's names.

Reads a torch-saved dict with a "model" entry, a bare state dict (`.pth`), or a Detectron2-style
pickle of numpy arrays (`.pkl`), without running code from the file unless asked to. Every
original key is mapped by `map_original_key` (the tower, prefix and projection tables below); the
result is checked against the model built from the config: any unmapped, missing or mis-shaped
key raises `CheckpointError` naming it.
"""

from __future__ import annotations

import copy
import logging
import os
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..config import Config, load_config
from ..errors import CheckpointError
from ..utils.safe_pickle import ForbiddenGlobal, load_arrays_pickle
from .model_dir import check_state_dict, load_weights_into, save_model_dir
from .original_config import translate_original_config

logger = logging.getLogger(__name__)

# Original tower prefix -> (our tower prefix). The tower's convs are <prefix>_head_{1..k}.
_TOWERS = {
    "position_head.position_head.position_head_head_": "position_head.tower.layers.",
    "kernel_head.kernel_head.kernel_head_head_": "kernel_head.tower.layers.",
    "feature_encoder.encode_head.encode_head_head_": "mask_encoder.tower.layers.",
    "depth_encode_head.encode_head.depth_encode_head_head_": "depth_encoder.tower.layers.",
    "depth_kernel_head.depth_kernel_head.depth_kernel_head_head_": "depth_kernel_head.tower.layers.",
}
# Whole-name prefixes (no tower structure).
_PREFIXES = {
    "position_head.out_inst.": "position_head.center_out.",
    "position_head.out_sem.": "position_head.region_out.",
    "kernel_head.out_conv.": "kernel_head.out.",
    "depth_encode_head.embed_extractor.": "depth_encoder.embed.",
    "depth_kernel_head.out_depth_kernel.": "depth_kernel_head.out.",
    "thing_generator.embed_extractor.": "thing_projection.",
    "stuff_generator.embed_extractor.": "stuff_projection.",
    "backbone.top_block.p6.": "fpn.p6.",
    "backbone.top_block.p7.": "fpn.p7.",
}
_PROJECTIONS = ("thing_projection.weight", "stuff_projection.weight")


def _map_tower_suffix(rest: str) -> str | None:
    """Inside one tower conv: DCN block or plain conv (+ norm) -> TowerLayer names."""
    m = re.fullmatch(r"(\d+)\.(.+)", rest)
    if not m:
        return None
    idx, tail = int(m.group(1)) - 1, m.group(2)
    if idx < 0:
        return None
    rules = [
        (r"offset_mask_conv\.(weight|bias)", r"conv.offset_conv.\1"),
        (r"dcnv2\.norm\.(weight|bias)", r"norm.\1"),
        (r"dcnv2\.(weight|bias)", r"conv.\1"),
        (r"norm\.(weight|bias)", r"norm.\1"),
        (r"(weight|bias)", r"conv.\1"),
    ]
    for pattern, repl in rules:
        if re.fullmatch(pattern, tail):
            return f"{idx}." + re.sub(pattern, repl, tail)
    return None


def map_original_key(key: str) -> str | None:
    """Original checkpoint key -> this library's key, or None when no rule applies."""
    m = re.fullmatch(r"backbone\.bottom_up\.stem\.conv1\.(weight|norm\.(\w+))", key)
    if m:
        return "backbone.body.conv1.weight" if m.group(2) is None else f"backbone.body.bn1.{m.group(2)}"
    m = re.fullmatch(
        r"backbone\.bottom_up\.res([2-5])\.(\d+)\.(conv[1-3]|shortcut)\.(weight|norm\.(\w+))", key
    )
    if m:
        stage, block, conv, norm_field = int(m.group(1)), m.group(2), m.group(3), m.group(5)
        base = f"backbone.body.layer{stage - 1}.{block}."
        if conv == "shortcut":
            return base + ("downsample.0.weight" if norm_field is None else f"downsample.1.{norm_field}")
        if norm_field is None:
            return base + f"{conv}.weight"
        return base + f"bn{conv[-1]}.{norm_field}"
    m = re.fullmatch(r"backbone\.fpn_(lateral|output)([2-5])\.(weight|bias)", key)
    if m:
        return f"fpn.{m.group(1)}.p{m.group(2)}.{m.group(3)}"
    m = re.fullmatch(r"semantic_fpn\.(p[2-5])\.(\d+)\.(weight|bias|norm\.weight|norm\.bias)", key)
    if m:
        tail = m.group(3)
        tail = tail if tail.startswith("norm.") else f"conv.{tail}"
        return f"semantic_fpn.branches.{m.group(1)}.{m.group(2)}.{tail}"
    for old, new in _TOWERS.items():
        if key.startswith(old):
            mapped = _map_tower_suffix(key[len(old) :])
            return None if mapped is None else new + mapped
    for old, new in _PREFIXES.items():
        if key.startswith(old) and re.fullmatch(r"weight|bias", key[len(old) :]):
            return new + key[len(old) :]
    return None


def _read_pickle(path: Path, unsafe: bool):
    if not unsafe:
        return load_arrays_pickle(path)
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")  # noqa: S301 - the user vouched for the file


# Start of torch.save's pre-zip format: a protocol-2 pickle of torch's magic number.
_TORCH_LEGACY_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)[:-1]


def _read_torch(path: Path, unsafe: bool):
    try:
        return torch.load(path, map_location="cpu", weights_only=not unsafe)
    except Exception as err:  # noqa: BLE001 - any reader failure means: not a checkpoint we can read
        text = str(err)
        blocked = re.search(r"GLOBAL (\S+)", text)
        if not unsafe and isinstance(err, pickle.UnpicklingError) and blocked:
            raise CheckpointError(
                f"{path}: the file refers to '{blocked.group(1)}', which is not a tensor or a plain "
                "container; reading it could run code. If you trust the file, pass --unsafe-load"
            ) from None
        first = text.strip().splitlines()[0] if text.strip() else ""
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {first})"
        ) from None


def read_original_checkpoint(path: str | os.PathLike, unsafe: bool = False) -> dict[str, torch.Tensor]:
    """Load the state dict of an original checkpoint: a torch file (any suffix, told by its
    content) or a Detectron2-style pickle of numpy arrays (usually `.pkl`).

    Without `unsafe`, torch files go through torch's weights-only reader and pickles through
    `ArraysOnlyUnpickler`; only `unsafe` runs a full, code-executing unpickler.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        with open(path, "rb") as f:
            head = f.read(len(_TORCH_LEGACY_MAGIC))
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read checkpoint ({err.strerror})") from None
    if zipfile.is_zipfile(path) or head == _TORCH_LEGACY_MAGIC:
        data = _read_torch(path, unsafe)
    else:
        try:
            data = _read_pickle(path, unsafe)
        except ForbiddenGlobal as err:
            raise CheckpointError(
                f"{path}: the pickle refers to '{err}', which is not a numpy array or a plain "
                "container; reading it could run code. If you trust the file, pass --unsafe-load"
            ) from None
        except Exception as err:  # noqa: BLE001 - corrupt, or not a pickle at all
            raise CheckpointError(
                f"{path}: not a readable checkpoint (neither a PyTorch file nor a pickle of arrays: "
                f"{type(err).__name__}: {err})"
            ) from None
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    elif isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{path}: expected a state dict (or a dict with 'model'), got {type(data).__name__}"
        )
    state: dict[str, torch.Tensor] = {}
    for k, v in data.items():
        if not isinstance(k, str):
            continue
        k = k.removeprefix("module.")
        if isinstance(v, np.ndarray):
            if v.dtype.kind not in "biufc":
                raise CheckpointError(f"{path}: '{k}' is an array of {v.dtype}, not of numbers")
            # native byte order, contiguous and writable, as torch.from_numpy needs
            v = torch.from_numpy(np.require(v.astype(v.dtype.newbyteorder("="), copy=False), None, "CW"))
        elif not isinstance(v, torch.Tensor):
            continue  # non-tensor metadata (e.g. "__author__")
        state[k] = v
    if not state:
        raise CheckpointError(f"{path}: no tensors found in the checkpoint")
    return state


def convert_state_dict(
    original: dict[str, torch.Tensor], source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Rename every original key; num_batches_tracked dropped; 1x1 projection convs -> Linear weights."""
    out: dict[str, torch.Tensor] = {}
    unmapped = []
    for key, value in original.items():
        if key.endswith("num_batches_tracked"):
            continue
        new = map_original_key(key)
        if new is None:
            unmapped.append(key)
            continue
        if new in _PROJECTIONS and value.ndim == 4:
            if tuple(value.shape[2:]) != (1, 1):
                raise CheckpointError(f"{source}: {key} must be a 1x1 conv, got shape {tuple(value.shape)}")
            value = value[:, :, 0, 0]
        out[new] = value
    if unmapped:
        raise CheckpointError(
            f"{source}: {len(unmapped)} key(s) with no mapping to this library: {', '.join(sorted(unmapped))}"
        )
    return out


def infer_model_overrides(original: dict[str, torch.Tensor]) -> list[str]:
    """Architecture facts readable from the keys: depth branch present, ResNet depth, DCN towers."""
    keys = set(original)
    over = [f"model.depth.enabled={str(any(k.startswith('depth_') for k in keys)).lower()}"]
    n_res4 = len({k.split(".")[3] for k in keys if k.startswith("backbone.bottom_up.res4.")})
    bottleneck = any(".conv3." in k for k in keys if k.startswith("backbone.bottom_up.res2."))
    depth = {(True, 6): 50, (True, 23): 101, (False, 6): 34, (False, 2): 18}.get((bottleneck, n_res4))
    if depth is not None:
        over.append(f"model.backbone.name=resnet{depth}")
    for prefix, field in (
        ("position_head.position_head.", "position_deform"),
        ("kernel_head.kernel_head.", "kernel_deform"),
        ("feature_encoder.encode_head.", "encoder_deform"),
        ("depth_kernel_head.depth_kernel_head.", "depth_kernel_deform"),
    ):
        tower = [k for k in keys if k.startswith(prefix)]
        if tower:
            over.append(f"model.heads.{field}={str(any('offset_mask_conv' in k for k in tower)).lower()}")
    for key, field in (
        ("kernel_head.out_conv.weight", "model.heads.convs_dim"),
        ("backbone.fpn_output5.weight", "model.fpn.out_channels"),
        ("position_head.out_inst.weight", "model.num_thing_classes"),
        ("position_head.out_sem.weight", "model.num_classes"),
        ("depth_encode_head.embed_extractor.weight", "model.depth.kernel_dim"),
    ):
        w = original.get(key)
        if w is not None:
            over.append(f"{field}={int(w.shape[0])}")
    return over


def convert_original(
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike,
    original_config: str | os.PathLike | None = None,
    config_path: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    unsafe: bool = False,
) -> tuple[torch.nn.Module, Config]:
    """Checkpoint (+ original YAML) -> model directory. Order: defaults (released Cityscapes-DPS
    values) <- facts inferred from the keys <- `--original-config` YAML <- `--config` <- overrides."""
    from ..modeling.network import build_model

    original = read_original_checkpoint(checkpoint, unsafe=unsafe)
    cfg = load_config(None, infer_model_overrides(original))
    if original_config is not None:
        cfg = translate_original_config(original_config, base=cfg)
    cfg = load_config(config_path, overrides, base=cfg)
    state = convert_state_dict(original, str(checkpoint))
    build_cfg = copy.deepcopy(cfg.model)
    build_cfg.backbone.pretrained = ""
    model = build_model(build_cfg)
    check_state_dict(state, model, str(checkpoint))
    load_weights_into(model, state, str(checkpoint))
    model.eval()
    cfg.model.backbone.pretrained = ""
    save_model_dir(output_dir, model, cfg)
    logger.info("converted %d tensors from %s into %s", len(state), checkpoint, output_dir)
    return model, cfg
