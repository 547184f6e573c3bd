"""Image batch preparation: channel order, mean/std, padding to the size divisibility
(docs/original_implementation.md#bgr-input).

The original checkpoints were trained on BGR images with the ImageNet *RGB* means subtracted from
the B, G, R channels in that order, std 1, 0-255 scale (docs/original_implementation.md#bgr-input);
`cfg.input_format` and
`cfg.pixel_mean` / `cfg.pixel_std` reproduce that (or any other convention) per tensor channel.
Left at "auto" / [], they follow the backbone (`ModelConfig.input_normalization`): the convention
above for ResNets, RGB with ImageNet mean and std for Swin (what timm's ImageNet weights expect).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config.model import ModelConfig


def preprocess(images: list[torch.Tensor], cfg: ModelConfig) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """RGB uint8 (3, H, W) images -> normalised batch (B, 3, Hp, Wp) float32 and the (H, W) sizes.

    Padding is bottom/right with 0 *after* normalisation (docs/original_implementation.md#padding) to a common
    size that is a multiple of `cfg.size_divisibility` (32 = stride of res5).
    """
    if not images:
        raise ValueError("preprocess needs at least one image")
    device = images[0].device
    input_format, pixel_mean, pixel_std = cfg.input_normalization()
    mean_c = torch.tensor(pixel_mean, dtype=torch.float32, device=device).view(3, 1, 1)
    std_c = torch.tensor(pixel_std, dtype=torch.float32, device=device).view(3, 1, 1)
    sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
    div = max(int(cfg.size_divisibility), 1)
    hp = -(-max(h for h, _ in sizes) // div) * div
    wp = -(-max(w for _, w in sizes) // div) * div
    batch_b3hw = torch.zeros((len(images), 3, hp, wp), dtype=torch.float32, device=device)
    for i, img_3hw in enumerate(images):
        if img_3hw.ndim != 3 or img_3hw.shape[0] != 3:
            raise ValueError(f"preprocess expects (3, H, W) RGB images, got shape {tuple(img_3hw.shape)}")
        x = img_3hw.to(device=device, dtype=torch.float32)
        if input_format == "BGR":
            x = x.flip(0)
        h, w = sizes[i]
        batch_b3hw[i, :, :h, :w] = (x - mean_c) / std_c
    return batch_b3hw, sizes


def pad_to_divisible(batch_bchw: torch.Tensor, divisibility: int) -> torch.Tensor:
    """Zero-pad an already normalised batch at the bottom/right to a multiple of `divisibility`."""
    h, w = batch_bchw.shape[-2:]
    ph = (-h) % divisibility
    pw = (-w) % divisibility
    if ph == 0 and pw == 0:
        return batch_bchw
    return F.pad(batch_bchw, (0, pw, 0, ph))
