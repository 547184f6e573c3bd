"""Translate the original implementation's Detectron2 YAML (docs/original_implementation.md#config-defaults)
into this library's Config.

Keys absent from the YAML keep this library's defaults, which are the released Cityscapes-DPS
values, so a YAML that lists only the changed keys works. `_BASE_` chains are followed relative
to each file (a missing base file is a warning). Keys that do not matter here (datasets,
devices, ...) are ignored silently; keys this module does not know are listed in one warning;
values this library cannot reproduce (e.g. a dilated res5) raise `ConfigError`.
"""

from __future__ import annotations

import ast
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ..config import Config, ConfigError, load_config

logger = logging.getLogger(__name__)


def _read_tree(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: _BASE_ cycle")
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8")) or {}
    except OSError as err:
        raise ConfigError(f"{path}: cannot read original config ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte offset {err.start})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    base = data.pop("_BASE_", None)
    if base is None:
        return data
    base_path = path.parent / base
    if not base_path.is_file():
        # Robustness: a YAML copied without its base still converts; the base's keys keep this
        # library's defaults (= the released values, which the original's base files also set).
        logger.warning("%s: _BASE_ file %s not found; its keys keep this library's defaults", path, base_path)
        return data
    parent = _read_tree(base_path, seen + (path,))
    return _merge(parent, data)


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            flat.update(_flatten(v, key + "."))
        else:
            flat[key] = _decode(v)
    return flat


def _decode(value: Any) -> Any:
    """Detectron2 literal-evaluates strings, e.g. tuples written as "((1, 128), (64, 256))"."""
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def _lists(v: Any) -> Any:
    return [_lists(x) for x in v] if isinstance(v, (list, tuple)) else v


def _norm_name(v: str) -> str:
    table = {
        "FrozenBN": "FrozenBN",
        "BN": "BN",
        "SyncBN": "SyncBN",
        "nnSyncBN": "SyncBN",
        "naiveSyncBN": "SyncBN",
    }
    if v not in table:
        raise ConfigError(f"MODEL.RESNETS.NORM={v!r} is not supported (FrozenBN, BN, SyncBN)")
    return table[v]


def _head_norm(v: str) -> str:
    if v not in ("GN", ""):
        raise ConfigError(f"head norm {v!r} is not supported ('GN' or '')")
    return v


_identity: Callable[[Any], Any] = lambda v: v  # noqa: E731

# original key -> (our dotted key, value transform)
MAPPED: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "MODEL.PIXEL_MEAN": ("model.pixel_mean", lambda v: [float(x) for x in v]),
    "MODEL.PIXEL_STD": ("model.pixel_std", lambda v: [float(x) for x in v]),
    "INPUT.FORMAT": ("model.input_format", str),
    "MODEL.RESNETS.DEPTH": ("model.backbone.name", lambda v: f"resnet{int(v)}"),
    "MODEL.RESNETS.NORM": ("model.backbone.norm", _norm_name),
    "MODEL.RESNETS.STRIDE_IN_1X1": ("model.backbone.stride_in_1x1", bool),
    "MODEL.BACKBONE.FREEZE_AT": ("model.backbone.freeze_at", int),
    "MODEL.FPN.OUT_CHANNELS": ("model.fpn.out_channels", int),
    "MODEL.SEMANTIC_FPN.NORM": ("model.heads.semantic_norm", _head_norm),
    "MODEL.POSITION_HEAD.DEFORM": ("model.heads.position_deform", bool),
    "MODEL.POSITION_HEAD.COORD": ("model.heads.position_coord", bool),
    "MODEL.POSITION_HEAD.NORM": ("model.heads.position_norm", _head_norm),
    "MODEL.KERNEL_HEAD.DEFORM": ("model.heads.kernel_deform", bool),
    "MODEL.KERNEL_HEAD.COORD": ("model.heads.kernel_coord", bool),
    "MODEL.KERNEL_HEAD.NORM": ("model.heads.kernel_norm", _head_norm),
    "MODEL.FEATURE_ENCODER.DEFORM": ("model.heads.encoder_deform", bool),
    "MODEL.FEATURE_ENCODER.COORD": ("model.heads.encoder_coord", bool),
    "MODEL.FEATURE_ENCODER.NORM": ("model.heads.encoder_norm", _head_norm),
    "MODEL.DEPTH_HEAD.DEFORM": ("model.heads.depth_kernel_deform", bool),
    "MODEL.DEPTH_HEAD.COORD": ("model.heads.depth_kernel_coord", bool),
    "MODEL.DEPTH_HEAD.NORM": ("model.heads.depth_kernel_norm", _head_norm),
    "MODEL.POSITION_HEAD.THING.NUM_CLASSES": ("model.num_thing_classes", int),
    "MODEL.POSITION_HEAD.STUFF.NUM_CLASSES": ("model.num_classes", int),
    "MODEL.POSITION_HEAD.THING.BIAS_VALUE": ("model.heads.bias_value", float),
    "MODEL.POSITION_HEAD.THING.THRES": ("model.inference.thing_threshold", float),
    "MODEL.POSITION_HEAD.THING.TOP_NUM": ("model.inference.top_num", int),
    "MODEL.POSITION_HEAD.STUFF.THRES": ("model.inference.stuff_threshold", float),
    "MODEL.POSITION_HEAD.THING.POS_NUM": ("train.targets.pos_num", int),
    "MODEL.POSITION_HEAD.THING.MIN_OVERLAP": ("train.targets.min_overlap", float),
    "MODEL.POSITION_HEAD.THING.GAUSSIAN_SIGMA": ("train.targets.gaussian_sigma", float),
    "MODEL.KERNEL_HEAD.INSTANCE_SCALES": ("train.targets.instance_scales", lambda v: _lists(v)),
    "MODEL.TENSOR_DIM": ("train.targets.tensor_dim", int),
    "MODEL.IGNORE_VALUE": ("train.targets.ignore_value", int),
    "MODEL.DEPTH_ON": ("model.depth.enabled", bool),
    "MODEL.DEPTH_HEAD.DEPTH_KERNEL_DIM": ("model.depth.kernel_dim", int),
    "MODEL.DEPTH_HEAD.FACTOR": ("train.loss.depth", float),
    "MODEL.DEPTH_HEAD.FACTOR_INS": ("train.loss.depth_instance", float),
    "MODEL.LOSS_WEIGHT.POSITION_THING": ("train.loss.position_thing", float),
    "MODEL.LOSS_WEIGHT.POSITION_STUFF": ("train.loss.position_stuff", float),
    "MODEL.LOSS_WEIGHT.SEGMENT": ("train.loss.segment", float),
    "MODEL.LOSS_WEIGHT.FOCAL_LOSS_ALPHA": ("train.loss.focal_alpha", float),
    "MODEL.LOSS_WEIGHT.FOCAL_LOSS_GAMMA": ("train.loss.focal_gamma", float),
    "MODEL.INFERENCE.INST_THRES": ("model.inference.mask_threshold", float),
    "MODEL.INFERENCE.SIMILAR_THRES": ("model.inference.similarity_threshold", float),
    "MODEL.INFERENCE.CLASS_SPECIFIC": ("model.inference.class_specific", bool),
    "MODEL.INFERENCE.COMBINE.OVERLAP_THRESH": ("model.inference.combine_overlap_threshold", float),
    "MODEL.INFERENCE.COMBINE.STUFF_AREA_LIMIT": ("model.inference.stuff_area_limit", int),
    "MODEL.INFERENCE.COMBINE.INST_THRESH": ("model.inference.combine_instance_threshold", float),
    "SOLVER.OPTIMIZER": ("solver.optimizer", lambda v: str(v).lower()),
    "SOLVER.BASE_LR": ("solver.base_lr", float),
    "SOLVER.WEIGHT_DECAY": ("solver.weight_decay", float),
    "SOLVER.WEIGHT_DECAY_NORM": ("solver.weight_decay_norm", float),
    "SOLVER.WEIGHT_DECAY_BIAS": ("solver.weight_decay_bias", float),
    "SOLVER.MAX_ITER": ("solver.max_iter", int),
    "SOLVER.WARMUP_ITERS": ("solver.warmup_iters", int),
    "SOLVER.WARMUP_FACTOR": ("solver.warmup_factor", float),
    "SOLVER.POLY_LR_POWER": ("solver.poly_power", float),
    "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": ("solver.clip_value", float),
    "SOLVER.IMS_PER_BATCH": ("solver.ims_per_batch", int),
    "SOLVER.AMP.ENABLED": ("solver.amp", lambda v: "fp16" if v else "none"),
    "SOLVER.CHECKPOINT_PERIOD": ("train.checkpoint_period", int),
    "INPUT.COLOR_AUG": ("data.augmentation.color", bool),
    "INPUT.RANDOM_FLIP": ("data.augmentation.hflip", lambda v: str(v) != "none"),
}

# Widths / depths that the original sets per head; this library has one value for all heads.
SHARED = {
    "model.heads.convs_dim": [
        "MODEL.SEMANTIC_FPN.CONVS_DIM", "MODEL.POSITION_HEAD.CONVS_DIM", "MODEL.KERNEL_HEAD.CONVS_DIM",
        "MODEL.FEATURE_ENCODER.CONVS_DIM", "MODEL.DEPTH_HEAD.CONVS_DIM",
    ],
    "model.heads.num_convs": [
        "MODEL.POSITION_HEAD.NUM_CONVS", "MODEL.KERNEL_HEAD.NUM_CONVS",
        "MODEL.FEATURE_ENCODER.NUM_CONVS", "MODEL.DEPTH_HEAD.NUM_CONVS",
    ],
}  # fmt: skip

# Keys whose value must be the one this library implements (value -> accepted values).
FIXED: dict[str, tuple[Any, ...]] = {
    "MODEL.RESNETS.OUT_FEATURES": (["res2", "res3", "res4", "res5"],),
    "MODEL.FPN.IN_FEATURES": (["res2", "res3", "res4", "res5"],),
    "MODEL.SEMANTIC_FPN.IN_FEATURES": (["p2", "p3", "p4", "p5"],),
    "MODEL.SEMANTIC_FPN.COMMON_STRIDE": (4,),
    "MODEL.FEATURE_ENCODER.IN_FEATURES": (["p3", "p4", "p5", "p6", "p7"],),
    "MODEL.RESNETS.NUM_GROUPS": (1,),
    "MODEL.RESNETS.WIDTH_PER_GROUP": (64,),
    "MODEL.RESNETS.STEM_OUT_CHANNELS": (64,),
    "MODEL.RESNETS.RES2_OUT_CHANNELS": (256, 64),
    "MODEL.RESNETS.RES5_DILATION": (1,),
    "MODEL.RESNETS.DEFORM_ON_PER_STAGE": ([False, False, False, False],),
    "MODEL.FPN.NORM": ("",),
    "MODEL.FPN.FUSE_TYPE": ("sum",),
    "MODEL.POSITION_HEAD.THING.CENTER_TYPE": ("mass",),
    "MODEL.POSITION_HEAD.STUFF.WITH_THING": (True,),
    "MODEL.POSITION_HEAD.STUFF.ALL_CLASSES": (True,),
    "MODEL.INFERENCE.SIMILAR_TYPE": ("cosine",),
    "MODEL.INFERENCE.COMBINE.ENABLE": (True,),
    "SOLVER.LR_SCHEDULER_NAME": ("WarmupPolyLR",),
    "SOLVER.POLY_LR_CONSTANT_ENDING": (0.0, 0),
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": ("value",),
}

# Keys without influence on the converted model or this library's behaviour.
IGNORED_PREFIXES = (
    "MODEL.DEVICE", "MODEL.WEIGHTS", "MODEL.META_ARCHITECTURE", "MODEL.MASK_ON", "MODEL.LOAD_PROPOSALS",
    "MODEL.BACKBONE.NAME", "MODEL.KERNEL_HEAD.TEST_SCALES", "MODEL.RESNETS.DEFORM_MODULATED",
    "MODEL.RESNETS.DEFORM_NUM_GROUPS", "MODEL.KEYPOINT_ON", "MODEL.ANCHOR_GENERATOR",
    "MODEL.PROPOSAL_GENERATOR",
    "MODEL.RPN", "MODEL.ROI", "MODEL.RETINANET", "MODEL.PANOPTIC_FPN", "MODEL.SEM_SEG_HEAD",
    "DATASETS.", "DATALOADER.", "TEST.", "OUTPUT_DIR", "VERSION", "SEED", "CUDNN_BENCHMARK", "VIS_PERIOD",
    "GLOBAL.", "INPUT.MIN_SIZE", "INPUT.MAX_SIZE", "INPUT.MASK_FORMAT", "INPUT.CROP.", "INPUT.DEPTH_BOUND",
    "INPUT.ROTATE_AUG", "SOLVER.MOMENTUM", "SOLVER.NESTEROV", "SOLVER.GAMMA", "SOLVER.STEPS",
    "SOLVER.WARMUP_METHOD", "SOLVER.CLIP_GRADIENTS.ENABLED", "SOLVER.CLIP_GRADIENTS.NORM_TYPE",
    "SOLVER.BIAS_LR_FACTOR", "SOLVER.REFERENCE_WORLD_SIZE", "SOLVER.BASE_LR_END",
)  # fmt: skip


def _yaml_value(v: Any) -> str:
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()


def original_config_overrides(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Read the original YAML (+ `_BASE_` chain) -> (dotted overrides for Config, unknown keys)."""
    path = Path(path)
    flat = _flatten(_read_tree(path))
    overrides: list[str] = []
    unknown: list[str] = []
    for key, value in flat.items():
        if key in MAPPED:
            target, fn = MAPPED[key]
            try:
                converted = fn(value)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"{path}: {key}={value!r} cannot be translated ({err})") from None
            if target == "model.input_format" and converted not in ("BGR", "RGB"):
                raise ConfigError(f"{path}: INPUT.FORMAT={converted!r} is not supported (BGR or RGB)")
            overrides.append(f"{target}={_yaml_value(converted)}")
        elif any(key in keys for keys in SHARED.values()):
            continue
        elif key in FIXED:
            accepted = FIXED[key]
            if _lists(value) not in [_lists(a) for a in accepted]:
                raise ConfigError(
                    f"{path}: {key}={value!r} is not supported by this library (supported: {accepted[0]!r})"
                )
        elif key.startswith(IGNORED_PREFIXES):
            continue
        else:
            unknown.append(key)
    for target, keys in SHARED.items():
        values = {int(flat[k]) for k in keys if k in flat}
        if len(values) > 1:
            raise ConfigError(
                f"{path}: {', '.join(k for k in keys if k in flat)} differ ({sorted(values)}); "
                f"this library uses one value ({target})"
            )
        if values:
            overrides.append(f"{target}={values.pop()}")
    if flat.get("SOLVER.CLIP_GRADIENTS.ENABLED") is False:
        overrides.append("solver.clip_value=0.0")
    return overrides, unknown


def translate_original_config(path: str | os.PathLike, base: Config | None = None) -> Config:
    """`base` (default: this library's defaults = released values) updated from the original YAML."""
    overrides, unknown = original_config_overrides(path)
    if unknown:
        logger.warning("%s: ignoring %d unknown key(s): %s", path, len(unknown), ", ".join(unknown))
    return load_config(None, overrides, base=base)
