"""Training augmentation of the original's two pipelines (docs/augmentation.md).

Panoptic-segmentation stages (`pipeline: ps`): shortest-edge resize from a list -> flip -> random
crop without padding -> SSD colour; PIL bilinear for the image, PIL nearest for labels.

Depth-aware stage (`pipeline: dps`): colour -> flip -> rescale -> crop/pad. Masks and depth use
nearest interpolation (PIL-style `nearest-exact`, as the original's byte-plane trick amounts to);
depth values are multiplied by the mean inverse resize factor and clipped to the pre-scale
[min, max] (`DEPTH_BOUND`); invalid depth (0) stays 0; padding is image 128, panoptic VOID (so
semantic 255), depth 0. All draws come from one `torch.Generator`, seeded by the dataset per
(seed, epoch, index), so a sample is reproducible whatever the worker.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
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


@dataclass(frozen=True)
class ColorParams:
    """Draws of one SSD colour transform; None = that step is skipped."""

    brightness: float | None  # value added, U(-32, 32)
    contrast_first: bool  # order (contrast, saturation, hue), else (saturation, hue, contrast)
    contrast: float | None  # factor, U(0.5, 1.5)
    saturation: float | None  # factor on HSV S, U(0.5, 1.5)
    hue: int | None  # shift of OpenCV's H (180 per turn), integer in -18..18


def draw_color_params(g: torch.Generator) -> ColorParams:
    """Draw the SSD colour steps (each with p = 0.5) in the original's order (docs/augmentation.md)."""
    brightness = _uniform(g, -32.0, 32.0) if _coin(g) else None
    contrast_first = _coin(g)
    draws: dict[str, float | int | None] = {}
    steps = ("contrast", "saturation", "hue") if contrast_first else ("saturation", "hue", "contrast")
    for step in steps:
        if not _coin(g):
            draws[step] = None
        elif step == "hue":
            draws[step] = int(torch.randint(-18, 19, (), generator=g))
        else:
            draws[step] = _uniform(g, 0.5, 1.5)
    return ColorParams(brightness, contrast_first, draws["contrast"], draws["saturation"], draws["hue"])


def _affine_uint8(x: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    # float32 arithmetic, clip, then truncation to uint8, as the original's `convert`
    return np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def apply_color_ssd(image_hw3: np.ndarray, params: ColorParams) -> np.ndarray:
    """SSD photometric distortion of an RGB uint8 (H, W, 3) image with given draws.

    The original runs on BGR with OpenCV's BGR<->HSV conversions; the RGB conversions are the same
    arithmetic with the channels named the other way round.
    """
    import cv2  # training-only dependency, imported here so inference never loads it

    img = np.ascontiguousarray(image_hw3, dtype=np.uint8)

    def contrast(x: np.ndarray) -> np.ndarray:
        return x if params.contrast is None else _affine_uint8(x, alpha=params.contrast)

    def saturation(x: np.ndarray) -> np.ndarray:
        if params.saturation is None:
            return x
        hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
        hsv[..., 1] = _affine_uint8(hsv[..., 1], alpha=params.saturation)
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)

    def hue(x: np.ndarray) -> np.ndarray:
        if params.hue is None:
            return x
        hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = (hsv[..., 0].astype(np.int64) + params.hue) % 180
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)

    if params.brightness is not None:
        img = _affine_uint8(img, beta=params.brightness)
    steps = (contrast, saturation, hue) if params.contrast_first else (saturation, hue, contrast)
    for step in steps:
        img = step(img)
    return img


def color_aug_ssd(image_hw3: np.ndarray, g: torch.Generator) -> np.ndarray:
    """SSD colour transform ("ColorAugSSDTransform") on an RGB uint8 (H, W, 3) image."""
    return apply_color_ssd(image_hw3, draw_color_params(g))


def shortest_edge_size(h: int, w: int, short_edge: int, max_size: int) -> tuple[int, int]:
    """Output (H, W) of a shortest-edge resize to `short_edge`, longest side capped at `max_size`."""
    scale = short_edge / min(h, w)
    if h < w:
        nh, nw = float(short_edge), scale * w
    else:
        nh, nw = scale * h, float(short_edge)
    if max(nh, nw) > max_size:
        cap = max_size / max(nh, nw)
        nh, nw = nh * cap, nw * cap
    return int(nh + 0.5), int(nw + 0.5)


def _pil_resize(array: np.ndarray, size_hw: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    """PIL resize of a uint8 (H, W, 3), int32 (H, W) or float32 (H, W) array."""
    return np.asarray(Image.fromarray(array).resize((size_hw[1], size_hw[0]), resample))


def rescaled_size(h: int, w: int, scale: float, target: list[int] | None) -> tuple[int, int]:
    """`ResizeScale` of the DPS pipeline: with a target (th, tw), scale = min(th*s/h, tw*s/w); else s."""
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


def _rescale_depth(depth: np.ndarray, size_hw: tuple[int, int], bound: bool) -> np.ndarray:
    """Nearest resize of a depth map; values x mean inverse scale (a farther camera sees everything
    smaller), clipped to the pre-scale [min, max] when `bound`; 0 (invalid) stays 0."""
    h, w = depth.shape
    nh, nw = size_hw
    out = _pil_resize(np.ascontiguousarray(depth, dtype=np.float32), size_hw, Image.Resampling.NEAREST)
    out = out * np.float32((w / nw + h / nh) / 2.0)
    if bound:
        out = np.clip(out, depth.min(), depth.max())
    return out.astype(np.float32)


class Augmentation:
    """Callable (image (H,W,3) uint8 RGB, panoptic (H,W), depth (H,W)|None, generator) -> same, augmented.

    `pipeline: ps` is the original's panoptic-segmentation pipeline (stages 1-2): shortest-edge
    resize -> flip -> random crop -> colour. `pipeline: dps` is its depth-aware one (stage 3):
    colour -> flip -> rescale -> crop/pad. See docs/augmentation.md.
    """

    def __init__(self, cfg: AugmentationConfig):
        self.cfg = cfg
        self.enabled = bool(cfg.enabled)
        lo, hi = (list(cfg.scale_range) + [1.0, 1.0])[:2]
        self.scale_range = (float(lo), float(hi))
        self.crop_size = [int(x) for x in cfg.crop_size]
        self.short_edges = [int(x) for x in cfg.short_edges]
        self.max_size = int(cfg.max_size)
        if self.crop_size and (len(self.crop_size) != 2 or min(self.crop_size) < 1):
            raise ConfigError(f"data.augmentation.crop_size must be [H, W] or [], got {cfg.crop_size}")
        if cfg.crop_mode not in ("center", "random"):
            raise ConfigError(
                f"data.augmentation.crop_mode must be 'center' or 'random', got '{cfg.crop_mode}'"
            )
        if not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ConfigError(
                f"data.augmentation.scale_range must be [min, max] with 0 < min <= max, got {cfg.scale_range}"
            )
        if cfg.pipeline not in ("dps", "ps"):
            raise ConfigError(f"data.augmentation.pipeline must be 'dps' or 'ps', got '{cfg.pipeline}'")
        if cfg.pipeline == "ps":
            if not self.short_edges or min(self.short_edges) < 1 or self.max_size < 1:
                raise ConfigError(
                    "data.augmentation.pipeline 'ps' needs a non-empty short_edges list of positive "
                    f"lengths and max_size >= 1, got short_edges={cfg.short_edges}, max_size={cfg.max_size}"
                )
            if self.scale_range != (1.0, 1.0) or (self.crop_size and cfg.crop_mode != "random"):
                raise ConfigError(
                    "data.augmentation.pipeline 'ps' resizes with short_edges and crops at random: "
                    "set scale_range [1, 1] and crop_mode random"
                )
        elif self.short_edges:
            raise ConfigError(
                "data.augmentation.short_edges is used by pipeline 'ps' only; set it to [] for 'dps' "
                "(the 'dps' pipeline rescales with scale_range)"
            )

    def __call__(
        self, image_hw3: np.ndarray, panoptic_hw: np.ndarray, depth_hw: np.ndarray | None, g: torch.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        image = np.asarray(image_hw3, dtype=np.uint8)
        pan = np.asarray(panoptic_hw, dtype=np.int64)
        depth = None if depth_hw is None else np.asarray(depth_hw, dtype=np.float32)
        if self.cfg.pipeline == "ps":
            return self._ps(image, pan, depth, g)
        return self._dps(image, pan, depth, g)

    def _ps(
        self, image: np.ndarray, pan: np.ndarray, depth: np.ndarray | None, g: torch.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        h, w = pan.shape
        short = self.short_edges[int(torch.randint(len(self.short_edges), (), generator=g))]
        nh, nw = shortest_edge_size(h, w, short, self.max_size)
        if (nh, nw) != (h, w):
            image = _pil_resize(np.ascontiguousarray(image), (nh, nw), Image.Resampling.BILINEAR)
            pan = _pil_resize(pan.astype(np.int32), (nh, nw), Image.Resampling.NEAREST).astype(np.int64)
            if depth is not None:
                depth = _rescale_depth(depth, (nh, nw), self.cfg.depth_bound)
        if self.cfg.hflip and _coin(g):
            image, pan = image[:, ::-1], pan[:, ::-1]
            depth = None if depth is None else depth[:, ::-1]
        if self.crop_size:
            ch, cw = min(self.crop_size[0], nh), min(self.crop_size[1], nw)
            oy = int(torch.randint(0, nh - ch + 1, (), generator=g))
            ox = int(torch.randint(0, nw - cw + 1, (), generator=g))
            image, pan = image[oy : oy + ch, ox : ox + cw], pan[oy : oy + ch, ox : ox + cw]
            depth = None if depth is None else depth[oy : oy + ch, ox : ox + cw]
        image = np.ascontiguousarray(image)
        if self.cfg.color:
            image = color_aug_ssd(image, g)
        depth = None if depth is None else np.ascontiguousarray(depth)
        return image, np.ascontiguousarray(pan), depth

    def _dps(
        self, image_np: np.ndarray, pan_np: np.ndarray, depth_np: np.ndarray | None, g: torch.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if self.cfg.color:
            image_np = color_aug_ssd(image_np, g)
        image = torch.from_numpy(np.ascontiguousarray(image_np)).permute(2, 0, 1)
        pan = torch.from_numpy(np.ascontiguousarray(pan_np))[None]
        depth = None if depth_np is None else torch.from_numpy(np.ascontiguousarray(depth_np))[None]
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
                    # A farther camera sees everything smaller: depth x mean inverse scale.
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
        image_out = image.permute(1, 2, 0).contiguous().numpy()
        depth_out = None if depth is None else depth[0].numpy()
        return image_out, pan[0].numpy(), depth_out
