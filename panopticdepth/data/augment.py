"""Training augmentation (spec §7 "Augmentation details", traps 39-41).

Order of the original DPS pipeline: colour -> flip -> rescale -> crop/pad. Masks and depth use
nearest interpolation (PIL-style `nearest-exact`, as the original's byte-plane trick amounts to);
depth values are multiplied by the mean inverse resize factor and clipped to the pre-scale
[min, max] (`DEPTH_BOUND`); invalid depth (0) stays 0; padding is image 128, panoptic VOID (so
semantic 255), depth 0. All draws come from one `torch.Generator`, seeded by the dataset per
(seed, epoch, index), so a sample is reproducible whatever the worker.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ..config import ConfigError
from ..config.data import AugmentationConfig
from ..io.formats import VOID_ID

PAD_IMAGE = 128
PAD_DEPTH = 0.0


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def _coin(g: torch.Generator, p: float = 0.5) -> bool:
    return float(torch.rand((), generator=g, dtype=torch.float64)) < p


def _saturation(img_3hw: torch.Tensor, factor: float) -> torch.Tensor:
    """Scale HSV saturation by `factor` (clipped at 1) keeping hue and value, on float 0..255.

    For fixed H and V every channel is V - S*V*g(H), so scaling S is scaling (V - channel); the cap
    S <= 1 means the smallest channel cannot go below 0.
    """
    v = img_3hw.amax(dim=0, keepdim=True)
    m = img_3hw.amin(dim=0, keepdim=True)
    cap = torch.where(v > m, v / (v - m).clamp_min(1e-6), torch.full_like(v, factor))
    return v - (v - img_3hw) * torch.minimum(cap, torch.full_like(cap, factor))


def color_aug_ssd(image_3hw: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """SSD photometric distortion ("ColorAugSSDTransform", §7), each op with p = 0.5, uint8 in/out."""
    img = image_3hw.to(torch.float32)
    if _coin(g):  # brightness: add U(-32, 32)
        img = (img + _uniform(g, -32.0, 32.0)).clamp(0, 255).floor()

    def contrast(x: torch.Tensor) -> torch.Tensor:
        return (x * _uniform(g, 0.5, 1.5)).clamp(0, 255).floor() if _coin(g) else x

    def saturation(x: torch.Tensor) -> torch.Tensor:
        return _saturation(x, _uniform(g, 0.5, 1.5)).clamp(0, 255).round() if _coin(g) else x

    def hue(x: torch.Tensor) -> torch.Tensor:
        if not _coin(g):
            return x
        shift = int(torch.randint(-18, 19, (), generator=g))  # OpenCV hue units: 180 per turn
        return TF.adjust_hue(x.to(torch.uint8), shift / 180.0).to(torch.float32)

    ops = [contrast, saturation, hue] if _coin(g) else [saturation, hue, contrast]
    for op in ops:
        img = op(img)
    return img.clamp(0, 255).to(torch.uint8)


def rescaled_size(h: int, w: int, scale: float, target: list[int] | None) -> tuple[int, int]:
    """`ResizeScale` (§7): with a target (th, tw), scale = min(th*s/h, tw*s/w); else s."""
    if target:
        scale = min(target[0] * scale / h, target[1] * scale / w)
    return max(1, int(round(h * scale))), max(1, int(round(w * scale)))


def crop_or_pad(
    tensors: list[torch.Tensor], fills: list[float], size: list[int], offset: tuple[int, int]
) -> list[torch.Tensor]:
    """Crop (top-left `offset`) then pad symmetrically (pad_before = pad // 2) to `size` (H, W)."""
    th, tw = size
    h, w = tensors[0].shape[-2:]
    oy, ox = offset
    out = []
    for t, fill in zip(tensors, fills):
        t = t[..., oy : oy + min(th, h), ox : ox + min(tw, w)]
        ph, pw = th - t.shape[-2], tw - t.shape[-1]
        if ph > 0 or pw > 0:
            pad = [pw // 2, ph // 2, pw - pw // 2, ph - ph // 2]  # left, top, right, bottom
            t = TF.pad(t, pad, fill=fill)
        out.append(t)
    return out


class Augmentation:
    """Callable (image (H,W,3) uint8, panoptic (H,W), depth (H,W)|None, generator) -> same, augmented."""

    def __init__(self, cfg: AugmentationConfig):
        self.cfg = cfg
        self.enabled = bool(cfg.enabled)
        lo, hi = (list(cfg.scale_range) + [1.0, 1.0])[:2]
        self.scale_range = (float(lo), float(hi))
        self.crop_size = [int(x) for x in cfg.crop_size]
        if self.crop_size and len(self.crop_size) != 2:
            raise ConfigError(f"data.augmentation.crop_size must be [H, W] or [], got {cfg.crop_size}")
        if cfg.crop_mode not in ("center", "random"):
            raise ConfigError(
                f"data.augmentation.crop_mode must be 'center' or 'random', got '{cfg.crop_mode}'"
            )
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ConfigError(
                f"data.augmentation.scale_range must be [min, max] with 0 < min <= max, got {cfg.scale_range}"
            )

    def __call__(
        self, image_hw3: np.ndarray, panoptic_hw: np.ndarray, depth_hw: np.ndarray | None, g: torch.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        image = torch.from_numpy(np.ascontiguousarray(image_hw3)).permute(2, 0, 1)
        pan = torch.from_numpy(np.asarray(panoptic_hw, dtype=np.int64))[None]
        depth = None if depth_hw is None else torch.from_numpy(np.asarray(depth_hw, dtype=np.float32))[None]
        if self.cfg.color:
            image = color_aug_ssd(image, g)
        if self.cfg.hflip and _coin(g):
            image, pan = image.flip(-1), pan.flip(-1)
            depth = None if depth is None else depth.flip(-1)
        h, w = image.shape[-2:]
        if self.scale_range != (1.0, 1.0) or self.crop_size:
            s = _uniform(g, *self.scale_range) if self.scale_range != (1.0, 1.0) else 1.0
            nh, nw = (
                rescaled_size(h, w, s, self.crop_size or None) if self.scale_range != (1.0, 1.0) else (h, w)
            )
            if (nh, nw) != (h, w):
                image = TF.resize(image, [nh, nw], interpolation=InterpolationMode.BILINEAR, antialias=True)
                pan = TF.resize(pan, [nh, nw], interpolation=InterpolationMode.NEAREST_EXACT)
                if depth is not None:
                    lo, hi = depth.min(), depth.max()
                    depth = TF.resize(depth, [nh, nw], interpolation=InterpolationMode.NEAREST_EXACT)
                    # A farther camera sees everything smaller: depth x mean inverse scale (§7).
                    depth = depth * ((w / nw + h / nh) / 2.0)
                    if self.cfg.depth_bound:
                        depth = depth.clamp(lo, hi)
            if self.crop_size:
                ch, cw = self.crop_size
                if self.cfg.crop_mode == "random":
                    oy = int(torch.randint(0, max(nh - ch, 0) + 1, (), generator=g))
                    ox = int(torch.randint(0, max(nw - cw, 0) + 1, (), generator=g))
                else:  # centre crop of the original DPS pipeline
                    oy, ox = int(round(max(0, nh - ch) / 2)), int(round(max(0, nw - cw) / 2))
                tensors = [image, pan] + ([] if depth is None else [depth])
                fills = [PAD_IMAGE, VOID_ID, PAD_DEPTH]
                tensors = crop_or_pad(tensors, fills, self.crop_size, (oy, ox))
                image, pan = tensors[0], tensors[1]
                depth = tensors[2] if depth is not None else None
        image_np = image.permute(1, 2, 0).contiguous().numpy()
        depth_np = None if depth is None else depth[0].numpy()
        return image_np, pan[0].numpy(), depth_np
