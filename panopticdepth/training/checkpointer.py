"""Training checkpoints: model directories (`model.safetensors` + `config.yaml`) plus the state needed for an
exact resume.

Layout under the output folder::

    checkpoints/iter_0000100/{model.safetensors, config.yaml, training_state.pt}
    checkpoints/last_checkpoint          (name of the newest complete checkpoint)
    model/{model.safetensors, config.yaml}   (final weights)

Each checkpoint folder is written under a temporary name and renamed into place, so a crash never
leaves a half-written checkpoint; `predict --weights` accepts any of these folders.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..checkpoint.model_dir import CONFIG_NAME, WEIGHTS_NAME, check_state_dict, save_model_dir
from ..config import Config
from ..errors import CheckpointError
from ..utils.files import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

STATE_NAME = "training_state.pt"
LAST_NAME = "last_checkpoint"
_ITER_RE = re.compile(r"^iter_(\d+)$")

# Modules a PS model lacks; `--weights` from a PS model leaves them at their random init (stage 3 of
# docs/training_recipe.md).
DEPTH_MODULE_PREFIXES = ("depth_encoder.", "depth_kernel_head.")


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """Python, NumPy, torch and (for a CUDA `device`) that GPU's RNG states, in a form that
    `torch.load(weights_only=True)` accepts.

    Only the rank's own GPU is saved: a run resumed with fewer visible GPUs restores it too.
    """
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": (version, list(mt), gauss),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":
        state["cuda_device"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore `rng_state`'s output; the GPU state goes to `device` (ignored on the CPU)."""
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if device is None or device.type != "cuda":
        return
    cuda_state = state.get("cuda_device")
    if cuda_state is None and state.get("cuda"):  # older checkpoints: one state per visible GPU
        saved = state["cuda"]
        cuda_state = saved[device.index] if device.index < len(saved) else None
    if cuda_state is not None:
        torch.cuda.set_rng_state(cuda_state, device)
    else:
        log.warning("checkpoint holds no RNG state for %s: its random stream starts afresh", device)


def load_weights_file(directory: str | os.PathLike) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (a model directory holds {WEIGHTS_NAME} and {CONFIG_NAME})")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: cannot read safetensors file ({err})") from None


def load_model_weights(
    model: nn.Module, directory: str | os.PathLike, allow_missing: tuple[str, ...] = ()
) -> list[str]:
    """Load a model directory's weights into `model`; keys under `allow_missing` may be absent.

    Returns the names left at their initial values. Anything else missing, unexpected or
    mis-shaped raises CheckpointError naming the keys.
    """
    source = str(Path(directory) / WEIGHTS_NAME)
    return load_model_state(model, load_weights_file(directory), source, allow_missing)


def load_model_state(
    model: nn.Module, state: dict[str, torch.Tensor], source: str, allow_missing: tuple[str, ...] = ()
) -> list[str]:
    """`load_model_weights` for a state dict already in memory (`source` names it in errors)."""
    state = check_state_dict(state, model, source, allow_missing)
    own = model.state_dict()
    tolerated = sorted(k for k in own if k not in state and k.startswith(allow_missing))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)
    if tolerated:
        log.info("%s: %d parameters/buffers not in the checkpoint keep their initialisation (%s...)",
                 source, len(tolerated), tolerated[0])  # fmt: skip
    return tolerated


def _replace_dir(tmp: Path, final: Path) -> None:
    """Rename the finished temporary folder onto `final` (replacing an older one)."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class Checkpointer:
    """Writes and finds checkpoints in `output_dir`; only the main rank should call `save*`."""

    def __init__(self, output_dir: str | os.PathLike, keep: int = 3):
        self.output_dir = Path(output_dir)
        self.dir = self.output_dir / "checkpoints"
        self.keep = keep

    def _write_dir(self, final: Path, model: nn.Module, cfg: Config, state: dict | None) -> Path:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            save_model_dir(tmp, model, cfg)
            if state is not None:
                with atomic_path(tmp / STATE_NAME) as t:
                    torch.save(state, t)
            _replace_dir(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    def save(self, iteration: int, model: nn.Module, cfg: Config, state: dict) -> Path:
        """Checkpoint after `iteration` completed steps; prunes all but the newest `keep`."""
        path = self._write_dir(self.dir / f"iter_{iteration:07d}", model, cfg, state)
        atomic_write_text(self.dir / LAST_NAME, path.name + "\n")
        self._prune()
        log.info("saved checkpoint %s", path)
        return path

    def save_final(self, model: nn.Module, cfg: Config) -> Path:
        path = self._write_dir(self.output_dir / "model", model, cfg, None)
        log.info("saved final model to %s", path)
        return path

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.dir.is_dir():
            return []
        found = []
        for p in self.dir.iterdir():
            m = _ITER_RE.match(p.name)
            if m and p.is_dir() and (p / STATE_NAME).is_file() and (p / WEIGHTS_NAME).is_file():
                found.append((int(m.group(1)), p))
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        marker = self.dir / LAST_NAME
        if marker.is_file():
            cand = self.dir / marker.read_text().strip()
            if (cand / STATE_NAME).is_file():
                return cand
        found = self.checkpoints()
        return found[-1] if found else None

    def _prune(self) -> None:
        if self.keep <= 0:
            return
        for old in self.checkpoints()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    @staticmethod
    def load_state(path: str | os.PathLike) -> dict:
        file = Path(path) / STATE_NAME
        try:
            return torch.load(file, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
            raise CheckpointError(f"{file}: cannot read training state ({err})") from None
