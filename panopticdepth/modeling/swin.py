"""Swin-T / Swin-S backbone (timm's feature extractor) returning res2..res5 (strides 4-32), NCHW.

Choices for dense prediction on large images, as in the Swin detection/segmentation backbones
(the PanopticDepth paper gives no Swin details beyond its Table 2):

* any input whose sides are multiples of 32 (timm's `dynamic_img_size`): 512x1024 and 1024x2048
  Cityscapes crops, 384x1280 SemKITTI crops. Stage maps that are not multiples of the 7x7 window
  are zero-padded inside each attention block. Known difference from the official Swin
  detection backbone, which pads before the cyclic shift: timm shifts first, so where a stage map
  is not a multiple of 7 the shifted-window mask can let a border row see the wrapped-around rows
  of the opposite border (measured: a 32-row map, i.e. res5 of a 1024-high image, lets row 31
  attend to rows 0-2). It is kept so that the features stay timm's own.
* every second block uses shifted windows in *all* four stages (timm's `always_partition`); built
  for 224x224, timm would drop the shift wherever a stage map of a 224 image fits in one window
  (the whole last stage), which is right for ImageNet but not for a 32x64 stage map.
* stochastic depth (`model.backbone.drop_path_rate`), linearly increasing over the blocks.
* a LayerNorm on each returned stage (`model.backbone.out_norm`), new parameters on top of the
  ImageNet weights, as the official Swin detection backbone adds (its `norm0..norm3`): the
  residual stream of a transformer is not normalised, the FPN expects features of comparable scale.

timm's stage outputs are channels-last (B, H, W, C) and are permuted to (B, C, H, W).
The input convention of timm's ImageNet weights (RGB, ImageNet mean/std on 0-255) is
`SWIN_INPUT_FORMAT`; `ModelConfig.input_normalization()` selects it from the backbone name.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..config.model import BACKBONE_INPUT, BackboneConfig
from ..errors import CheckpointError
from .swin_weights import load_swin_imagenet

SWIN_MODELS = {"swin_t": "swin_tiny_patch4_window7_224", "swin_s": "swin_small_patch4_window7_224"}
# What timm's ImageNet weights were trained on, as `ModelConfig.input_normalization()` returns it.
SWIN_INPUT_FORMAT = ("RGB", list(BACKBONE_INPUT["swin"][1]), list(BACKBONE_INPUT["swin"][2]))
FEATURE_NAMES = ("res2", "res3", "res4", "res5")
STRIDE = 32


class SwinBackbone(nn.Module):
    """timm Swin-T/S feature extractor; stage outputs (optionally LayerNorm-ed) as NCHW res2..res5."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        import timm

        if cfg.name not in SWIN_MODELS:
            raise ValueError(f"unknown Swin model {cfg.name!r} (choose from {sorted(SWIN_MODELS)})")
        model_name = SWIN_MODELS[cfg.name]
        kwargs = dict(
            features_only=True,
            out_indices=(0, 1, 2, 3),
            dynamic_img_size=True,
            always_partition=True,
            drop_path_rate=cfg.drop_path_rate,
        )
        if cfg.pretrained == "imagenet":
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            try:
                self.body = timm.create_model(model_name, pretrained=True, **kwargs)
            except Exception as err:  # noqa: BLE001 - an offline cache miss surfaces in many forms
                raise CheckpointError(
                    f"timm ImageNet weights for {model_name} are not in the local Hugging Face cache "
                    f"({type(err).__name__}: {err}); set model.backbone.pretrained to a file"
                ) from None
        else:
            self.body = timm.create_model(model_name, pretrained=False, **kwargs)
            if cfg.pretrained:
                load_swin_imagenet(self.body, Path(cfg.pretrained), model_name)
        channels = self.body.feature_info.channels()
        self.out_channels = dict(zip(FEATURE_NAMES, channels))
        self.strides = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
        self.out_norms = (
            nn.ModuleDict({name: nn.LayerNorm(c) for name, c in self.out_channels.items()})
            if cfg.out_norm
            else None
        )
        self.freeze(cfg.freeze_at)

    def freeze(self, freeze_at: int) -> None:
        """1 freezes the patch embedding; k >= 2 also stages 0..k-2 (res2.., Detectron2's order).

        A stage's patch merging belongs to the stage it starts (timm's layout), so freezing res2
        leaves the merging into res3 trainable, as Detectron2 leaves res3's strided conv.
        """
        if freeze_at < 1:
            return
        for name, p in self.body.named_parameters():
            stage = swin_stage_index(name)
            if stage is None or stage < freeze_at - 1:
                p.requires_grad_(False)

    def forward(self, x_b3hw: torch.Tensor) -> dict[str, torch.Tensor]:
        h, w = x_b3hw.shape[-2:]
        if h % STRIDE or w % STRIDE:
            raise ValueError(f"the Swin backbone needs image sides that are multiples of 32, got {h}x{w}")
        out = {}
        for name, f_bhwc in zip(FEATURE_NAMES, self.body(x_b3hw)):
            if self.out_norms is not None:
                f_bhwc = self.out_norms[name](f_bhwc)
            out[name] = f_bhwc.permute(0, 3, 1, 2).contiguous()
        return out


def swin_stage_index(param_name: str) -> int | None:
    """0..3 for parameters of timm's `layers_k`, None for the patch embedding (stage -1)."""
    for part in param_name.split("."):
        if part.startswith("layers_") and part[7:].isdigit():
            return int(part[7:])
    return None
