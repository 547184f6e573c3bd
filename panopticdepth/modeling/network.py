"""PanopticDepthNet: backbone + FPN + semantic FPN + encoders + per-level heads.

`forward` stops at the raw head outputs (`HeadOutputs`); kernel selection, fusion and the panoptic
merge are pure post-processing (`modeling/postprocess.py`). The network owns the thing/stuff kernel
projections (`kernel_projection`, `modeling/kernel_projection.py`) that losses and post-processing
both call; their saved keys stay `thing_projection.*` / `stuff_projection.*`.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..config.model import ModelConfig
from .backbone import build_backbone
from .deform_conv import normal_fill
from .fpn import FPN
from .heads import DepthEncoder, FeatureEncoder, KernelHead, PositionHead, Tower
from .kernel_projection import KernelProjection
from .outputs import HeadOutputs, LevelOutputs
from .semantic_fpn import SemanticFPN
from .swin import SWIN_INPUT_FORMAT, SWIN_MODELS

logger = logging.getLogger(__name__)

# Saved key prefix <-> module path of the kernel projections (the saved names predate the owner).
_SAVED_PROJECTION_KEYS = {
    "thing_projection.": "kernel_projection.thing.",
    "stuff_projection.": "kernel_projection.stuff.",
}


def _rename_keys(state: dict, prefix: str, renames: dict[str, str]) -> None:
    """Rename the keys `prefix + old...` to `prefix + new...` in place."""
    for key in [k for k in state if k.startswith(prefix)]:
        for old, new in renames.items():
            if key.startswith(prefix + old):
                state[prefix + new + key[len(prefix + old) :]] = state.pop(key)
                break


class PanopticDepthNet(nn.Module):
    """The network of the paper, module for module as the original."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h = cfg.heads
        d = cfg.depth
        c = h.convs_dim
        g = h.norm_groups
        impl = h.deform_impl
        self.backbone = build_backbone(cfg.backbone)
        if cfg.backbone.name in SWIN_MODELS and cfg.input_normalization() != SWIN_INPUT_FORMAT:
            logger.warning(
                "%s with input %s (timm's ImageNet weights expect %s); leave model.input_format, "
                "pixel_mean and pixel_std unset to get the backbone's convention",
                cfg.backbone.name, cfg.input_normalization(), SWIN_INPUT_FORMAT,
            )  # fmt: skip
        extra = 2 if "p7" in h.levels else 1 if "p6" in h.levels else 0
        self.fpn = FPN(self.backbone.out_channels, cfg.fpn.out_channels, extra_levels=extra)
        f = cfg.fpn.out_channels
        self.semantic_fpn = SemanticFPN(f, c, h.semantic_norm, g)

        def tower(in_channels: int, deform: bool, coord: bool, norm: str) -> Tower:
            return Tower(in_channels, c, num_convs=h.num_convs, deform=deform, coord=coord, norm=norm,
                         groups=g, deform_impl=impl)  # fmt: skip

        self.position_head = PositionHead(
            tower(f, h.position_deform, h.position_coord, h.position_norm),
            num_thing_classes=cfg.num_thing_classes, num_classes=cfg.num_classes, bias_value=h.bias_value,
        )  # fmt: skip
        self.kernel_head = KernelHead(tower(f, h.kernel_deform, h.kernel_coord, h.kernel_norm), c)
        encoder = (c, h.encoder_deform, h.encoder_coord, h.encoder_norm)  # mask and depth encoders alike
        self.mask_encoder = FeatureEncoder(tower(*encoder))
        self.depth_encoder: DepthEncoder | None = None
        self.depth_kernel_head: KernelHead | None = None
        if d.enabled:
            out = d.kernel_dim if d.mode == "instance" else 1
            self.depth_encoder = DepthEncoder(tower(*encoder), out)
            if d.mode == "instance":
                depth_tower = tower(f, h.depth_kernel_deform, h.depth_kernel_coord, h.depth_kernel_norm)
                self.depth_kernel_head = KernelHead(depth_tower, d.kernel_dim + 2)
        thing, stuff = nn.Linear(c, c), nn.Linear(c, c)
        normal_fill(thing, 0.01, 0.0)
        normal_fill(stuff, 0.01, 0.0)
        self.kernel_projection = KernelProjection(thing, stuff)
        self._register_state_dict_hook(_save_projection_keys)
        self._register_load_state_dict_pre_hook(_load_projection_keys)

    @property
    def head_levels(self) -> tuple[str, ...]:
        """The FPN levels the heads run on (`model.heads.levels`), finest first."""
        return tuple(self.cfg.heads.levels)

    def forward(self, batch_b3hw: torch.Tensor, return_features: bool = False) -> HeadOutputs:
        """Normalised, padded batch (B, 3, Hp, Wp) -> head outputs per head level and the embeddings."""
        res = self.backbone(batch_b3hw)
        pyr = self.fpn(res)
        semantic = self.semantic_fpn(pyr)
        mask_embedding = self.mask_encoder(semantic)
        depth_embedding = None
        pixel_depth = None
        if self.depth_encoder is not None:
            enc = self.depth_encoder(semantic)
            if self.cfg.depth.mode == "pixel":
                # Table 3 variant A: one pixel-wise depth map in metres.
                pixel_depth = enc.sigmoid() * self.cfg.depth.max_depth
            else:
                depth_embedding = enc
        levels = []
        for name in self.head_levels:
            x = pyr[name]
            center, region = self.position_head(x)
            kernels = self.kernel_head(x)
            dk = self.depth_kernel_head(x) if self.depth_kernel_head is not None else None
            levels.append(LevelOutputs(center, region, kernels, dk))
        features: dict[str, torch.Tensor] = {}
        if return_features:
            features.update(res)
            features.update(pyr)
            features["semantic"] = semantic
        return HeadOutputs(
            levels=levels,
            mask_embedding=mask_embedding,
            depth_embedding=depth_embedding,
            pixel_depth=pixel_depth,
            features=features,
        )


def _save_projection_keys(module: nn.Module, state: dict, prefix: str, local_metadata: dict) -> None:
    _rename_keys(state, prefix, {new: old for old, new in _SAVED_PROJECTION_KEYS.items()})


def _load_projection_keys(state: dict, prefix: str, *args: object) -> None:
    _rename_keys(state, prefix, _SAVED_PROJECTION_KEYS)


def build_model(cfg: ModelConfig) -> PanopticDepthNet:
    """Build the network from its config (random init, or ImageNet backbone when configured)."""
    return PanopticDepthNet(cfg)
