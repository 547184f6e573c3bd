"""`Predictor`: image arrays in, `PanopticDepthResult`s out.

Owns what a user should never repeat: grayscale/RGBA -> RGB, channel order and mean/std of the
checkpoint (`preprocess`, docs/original_implementation.md#bgr-input), padding to the size divisibility and
cropping back, batching, and the speed switches (channels_last, bf16 autocast; the post-processing always runs
in float32).

Images are batched only with images of the same padded size, so each image gets exactly the padding
it would get alone: results do not depend on the batch composition (the original is batch-1 only
and its depth path resizes the padded embedding, docs/original_implementation.md#depth-resize).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..config.labels import model_label_space
from ..config.model import ModelConfig
from ..label_space import CITYSCAPES, LabelSpace
from ..utils.device import resolve_device
from .outputs import PanopticDepthResult
from .postprocess import postprocess
from .preprocess import preprocess


def to_rgb_chw(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8 array -> (3, H, W) uint8 RGB tensor.

    Grayscale is replicated to three channels; the alpha channel of RGBA is dropped. A torch tensor
    is taken as (3, H, W) RGB already when its first dimension is 3 and its last is not.
    """
    if isinstance(image, torch.Tensor):
        if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[-1] not in (1, 3, 4):
            image = image.permute(1, 2, 0)
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and arr.max() <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, got shape {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"empty image of shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[..., :3]
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()


class Predictor:
    """Run a `PanopticDepthNet` on RGB images of any size."""

    def __init__(
        self,
        model: torch.nn.Module,
        cfg: Any,
        device: str | torch.device = "cpu",
        channels_last: bool = False,
        bf16: bool = False,
        with_instance_masks: bool = True,
        with_sem_seg: bool = True,
    ) -> None:
        self.cfg: ModelConfig = cfg.model if hasattr(cfg, "model") else cfg
        # The classes the outputs' train ids stand for (writers, panels, the viewer).
        self.label_space: LabelSpace = model_label_space(cfg) if hasattr(cfg, "labels") else CITYSCAPES
        self.device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        self.channels_last = channels_last
        self.bf16 = bf16
        # Full-resolution extras of the results (all instance masks, 19-class stuff probabilities).
        self.with_instance_masks = with_instance_masks
        self.with_sem_seg = with_sem_seg
        # Attach the things scored down to this as `result.candidates` (a tracker may admit them).
        self.candidate_score: float | None = None
        self.model = model.to(self.device).eval()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    @classmethod
    def from_dir(
        cls,
        weights_dir: str | os.PathLike,
        config_path: str | os.PathLike | None = None,
        overrides: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> Predictor:
        """A predictor for a model directory (`model.safetensors` + `config.yaml`)."""
        from ..checkpoint.model_dir import load_model_dir

        model, cfg = load_model_dir(weights_dir, config_path=config_path, overrides=overrides)
        return cls(model, cfg, **kwargs)

    def _forward(self, images_3hw: list[torch.Tensor]) -> list[PanopticDepthResult]:
        batch_b3hw, sizes = preprocess([img.to(self.device) for img in images_3hw], self.cfg)
        if self.channels_last:
            batch_b3hw = batch_b3hw.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                outputs = self.model(batch_b3hw)
            return postprocess(
                outputs,
                self.model,
                self.cfg,
                sizes,
                with_instance_masks=self.with_instance_masks,
                with_sem_seg=self.with_sem_seg,
                candidate_score=self.candidate_score,
            )

    def predict(self, image_rgb: np.ndarray | torch.Tensor) -> PanopticDepthResult:
        """One (H, W[, C]) uint8 image (RGB, grayscale or RGBA) -> result at (H, W)."""
        return self._forward([to_rgb_chw(image_rgb)])[0]

    def predict_batch(
        self, images: Sequence[np.ndarray | torch.Tensor], batch_size: int | None = None
    ) -> list[PanopticDepthResult]:
        """Results in input order; images sharing a padded size run together, `batch_size` at a time."""
        tensors = [to_rgb_chw(img) for img in images]
        div = max(int(self.cfg.size_divisibility), 1)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, t in enumerate(tensors):
            key = (-(-t.shape[1] // div) * div, -(-t.shape[2] // div) * div)
            groups.setdefault(key, []).append(i)
        step = batch_size or max(len(tensors), 1)
        results: list[PanopticDepthResult | None] = [None] * len(tensors)
        for idx in groups.values():
            for start in range(0, len(idx), step):
                chunk = idx[start : start + step]
                for i, res in zip(chunk, self._forward([tensors[i] for i in chunk])):
                    results[i] = res
        return results  # type: ignore[return-value]
