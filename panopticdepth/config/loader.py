"""Build a typed `Config` from defaults, YAML files and dotted command-line overrides.

Every value is checked against the dataclass field type and the field's range rules (see
`checks.py`); an unknown key, a wrong type or a value out of range raises `ConfigError` naming the
key and where it came from (file or command line).
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from .checks import field_problem
from .schema import Config


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the key and its source."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check `value` against type `tp`, converting only where it is lossless (int -> float)."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' must be a mapping, got {type(value).__name__}")
        return _build(tp, value, key, source)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{source}: '{key}' must be one of {list(choices)}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{source}: '{key}' has the wrong type ({value!r} is not {_type_name(tp)})")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: '{key}' must be a list, got {value!r}")
        (item_tp,) = get_args(tp)[:1] or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads "1e-4" (no dot) as a string; accept any numeric spelling.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: '{key}' must be a number, got {value!r}")
        try:
            value = float(value)
        except OverflowError:  # an int too large for a float
            value = math.inf
        if not math.isfinite(value):
            raise ConfigError(f"{source}: '{key}' must be a finite number, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: '{key}' must be a string, got {value!r}")
        return value
    raise ConfigError(f"{source}: '{key}' has an unsupported type {tp}")


def _checked(field: dataclasses.Field, value: Any, key: str, source: str) -> Any:
    """`value` if it obeys the field's range rules; ConfigError naming the key otherwise."""
    problem = field_problem(field.metadata, value)
    if problem is not None:
        raise ConfigError(f"{source}: '{key}' {problem}, got {value!r}")
    return value


def _build(cls: type, data: dict, prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = set(fields)
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"{source}: unknown key '{where}{unknown[0]}'"
            + (f" (valid keys: {', '.join(sorted(names))})" if names else "")
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _checked(fields[name], _coerce(value, hints[name], key, source), key, source)
    return cls(**kwargs)


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"command line: override '{item}' must look like key.sub=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"command line: override '{item}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """A YAML config as a dict, its `_base_` chain (paths relative to each file) merged under it."""
    if path.resolve() in chain:
        loop = " -> ".join(str(p) for p in (*chain, path.resolve()))
        raise ConfigError(f"{path}: _base_ chain loops back to a file already read ({loop})")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a config file")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config file ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path}: not a UTF-8 text file (byte 0x{err.object[err.start]:02x} at offset {err.start})"
        ) from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    base = data.pop("_base_", None)
    if base is not None:
        if not isinstance(base, str) or not base:
            raise ConfigError(f"{path}: _base_ must be a file path, got {base!r}")
        parent = _read_yaml(path.parent / base, (*chain, path.resolve()))
        data = _deep_merge(parent, data)
    return data


def _apply(cfg: Any, data: dict, prefix: str, source: str) -> Any:
    """Return a copy of dataclass `cfg` with `data` merged in, validating each key."""
    hints = typing.get_type_hints(type(cfg))
    names = {f.name: f for f in dataclasses.fields(cfg)}
    changes = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in names:
            raise ConfigError(f"{source}: unknown key '{key}' (valid keys here: {', '.join(sorted(names))})")
        current = getattr(cfg, name)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            changes[name] = _apply(current, value, key, source)
        else:
            changes[name] = _checked(names[name], _coerce(value, hints[name], key, source), key, source)
    return dataclasses.replace(cfg, **changes)


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None, base: Config | None = None
) -> Config:
    """Defaults (or `base`) <- YAML file (with optional `_base_` chain) <- dotted overrides."""
    cfg = base if base is not None else Config()
    if path is not None:
        p = Path(path)
        cfg = _apply(cfg, _read_yaml(p), "", str(p))
    for item in overrides or []:
        keys, value = _parse_override(item)
        nested: Any = value
        for k in reversed(keys):
            nested = {k: nested}
        cfg = _apply(cfg, nested, "", f"command line ('{item}')")
    _check_head_levels(cfg, str(path) if path is not None else "defaults and command line")
    return cfg


def _check_head_levels(cfg: Config, source: str) -> None:
    """Per-level settings must cover every head level (a mismatch would only fail at the first step)."""
    n = len(cfg.model.heads.levels)
    scales, pools = cfg.train.targets.instance_scales, cfg.model.inference.pool_sizes
    if len(scales) != n:
        raise ConfigError(
            f"{source}: model.heads.levels has {n} entries but train.targets.instance_scales has "
            f"{len(scales)}: give one [min, max] per head level"
        )
    if len(pools) < n:
        raise ConfigError(
            f"{source}: model.heads.levels has {n} entries but model.inference.pool_sizes has "
            f"{len(pools)}: give one pool size per head level"
        )


def config_from_dict(data: dict, source: str = "<dict>") -> Config:
    cfg = _apply(Config(), data, "", source)
    _check_head_levels(cfg, source)
    return cfg


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def dump_config(cfg: Any) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def save_config(cfg: Any, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML, atomically (with the permissions a plain open() gives)."""
    from ..utils.files import atomic_write_text

    return atomic_write_text(path, dump_config(cfg))
