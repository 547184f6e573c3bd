"""Bottom-up backbones returning res2..res5 (strides 4, 8, 16, 32).

ResNet-18/34/50/101 are torchvision's `ResNet` instances; ResNet-10 is torchvision's `ResNet` with one
basic block per stage (no ImageNet weights: for small models trained from scratch, e.g. the CPU
demo, where it halves the backbone's share of a training step, benchmarks/README.md). Only two
things are changed:

* `stride_in_1x1=True` moves the stride of each stage's first bottleneck from the 3x3 `conv2` to
  the 1x1 `conv1` (the MSRA/Detectron2 layout the original checkpoints were trained with,
  docs/original_implementation.md#msra-resnet); `False` keeps torchvision's layout (for torchvision's ImageNet
  weights).
* the norm layer is FrozenBN (torchvision's `FrozenBatchNorm2d`, eps 1e-5) / BN / SyncBN, and
  `freeze_at` freezes the stem (1) and the stages res2.. (2..5) as Detectron2 does.

Swin-T/S live in `swin.py` (timm's feature extractor; ImageNet files: `swin_weights.py`).
Pretrained weights are read from local files only; a missing file is a `CheckpointError`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d as _TorchvisionFrozenBN

from ..config.model import BackboneConfig
from ..errors import CheckpointError
from ..utils.safe_pickle import ForbiddenGlobal, load_arrays_pickle
from .swin import SWIN_MODELS, SwinBackbone

logger = logging.getLogger(__name__)

RESNET_DEPTHS = {"resnet10": 10, "resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101}
_TV_WEIGHTS = {
    "resnet18": "ResNet18_Weights.IMAGENET1K_V1",
    "resnet34": "ResNet34_Weights.IMAGENET1K_V1",
    "resnet50": "ResNet50_Weights.IMAGENET1K_V1",
    "resnet101": "ResNet101_Weights.IMAGENET1K_V1",
}
FEATURE_NAMES = ("res2", "res3", "res4", "res5")


class FrozenBatchNorm2d(_TorchvisionFrozenBN):
    """torchvision's frozen BN whose affine terms follow the activation's dtype.

    Under autocast the float32 buffers would otherwise promote every bf16/fp16 activation of the
    backbone back to float32 (twice the memory traffic); in float32 the arithmetic is torchvision's.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.to(x.dtype).view(1, -1, 1, 1) + shift.to(x.dtype).view(1, -1, 1, 1)


def _norm_layer(norm: str):
    if norm == "FrozenBN":
        return lambda c: FrozenBatchNorm2d(c, eps=1e-5)
    if norm == "BN":
        return nn.BatchNorm2d
    if norm == "SyncBN":
        # SyncBatchNorm has no CPU kernel; the training engine converts BN -> SyncBN
        # (nn.SyncBatchNorm.convert_sync_batchnorm) when it runs distributed on GPUs.
        return nn.BatchNorm2d
    raise ValueError(f"backbone norm must be FrozenBN, BN or SyncBN, got {norm!r}")


def _freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace BatchNorm layers by FrozenBatchNorm2d with the same statistics (Detectron2's freeze)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        if module.affine:
            frozen.weight.copy_(module.weight.detach())
            frozen.bias.copy_(module.bias.detach())
        if module.running_mean is not None:
            frozen.running_mean.copy_(module.running_mean)
            frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        new = _freeze_batchnorm(child)
        if new is not child:
            setattr(module, name, new)
    return module


def _torchvision_resnet(name: str, norm_layer) -> torchvision.models.ResNet:
    if name == "resnet10":
        basic = torchvision.models.resnet.BasicBlock
        return torchvision.models.ResNet(basic, [1, 1, 1, 1], norm_layer=norm_layer)
    return getattr(torchvision.models, name)(weights=None, norm_layer=norm_layer)


class ResNetBackbone(nn.Module):
    """torchvision ResNet (stem `conv1/bn1`, stages `layer1..4`) returning res2..res5."""

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        if cfg.name not in RESNET_DEPTHS:
            raise ValueError(f"unknown ResNet {cfg.name!r} (choose from {sorted(RESNET_DEPTHS)})")
        body = _torchvision_resnet(cfg.name, _norm_layer(cfg.norm))
        del body.fc, body.avgpool  # classification head unused
        self.bottleneck = isinstance(body.layer1[0], torchvision.models.resnet.Bottleneck)
        if cfg.stride_in_1x1 and self.bottleneck:
            for layer in (body.layer2, body.layer3, body.layer4):
                block = layer[0]
                stride = block.conv2.stride
                block.conv2.stride = (1, 1)
                block.conv1.stride = stride
        self.body = body
        self.out_channels = {
            name: getattr(body, f"layer{i + 1}")[-1].conv3.out_channels
            if self.bottleneck
            else getattr(body, f"layer{i + 1}")[-1].conv2.out_channels
            for i, name in enumerate(FEATURE_NAMES)
        }
        self.strides = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
        if cfg.pretrained:
            load_pretrained_resnet(self, cfg)
        self.freeze(cfg.freeze_at)

    def stages(self) -> list[nn.Module]:
        """[stem, res2, res3, res4, res5] in Detectron2's freeze order."""
        b = self.body
        return [nn.ModuleList([b.conv1, b.bn1]), b.layer1, b.layer2, b.layer3, b.layer4]

    def freeze(self, freeze_at: int) -> None:
        """freeze_at = k freezes the first k of [stem, res2, res3, res4, res5] (Detectron2 semantics)."""
        b = self.body
        names = ["bn1", "layer1", "layer2", "layer3", "layer4"]
        for idx, stage in enumerate(self.stages()[: max(0, freeze_at)]):
            for p in stage.parameters():
                p.requires_grad_(False)
            if idx == 0:
                b.bn1 = _freeze_batchnorm(b.bn1)
            else:
                setattr(b, names[idx], _freeze_batchnorm(stage))

    def forward(self, x_b3hw: torch.Tensor) -> dict[str, torch.Tensor]:
        b = self.body
        x = b.maxpool(b.relu(b.bn1(b.conv1(x_b3hw))))
        res2 = b.layer1(x)
        res3 = b.layer2(res2)
        res4 = b.layer3(res3)
        res5 = b.layer4(res4)
        return {"res2": res2, "res3": res3, "res4": res4, "res5": res5}


def _caffe2_to_torchvision(blobs: dict) -> dict[str, torch.Tensor]:
    """MSRA ImageNet `.pkl` names (`res2_0_branch2a_w`, `res2_0_branch2a_bn_s`, ...) -> torchvision names.

    The Caffe2 BN blobs are an already folded scale/shift; as Detectron2 does, the running statistics
    become mean 0 / var 1 - eps so that the frozen norm is exactly that affine map
    (docs/original_implementation.md#frozen-bn).
    """
    out: dict[str, torch.Tensor] = {}
    norms = set()
    for name, value in blobs.items():
        if not hasattr(value, "shape") or name.startswith(("fc", "pred")):
            continue
        t = torch.as_tensor(value).float()
        m = re.fullmatch(r"res(\d)_(\d+)_branch(1|2a|2b|2c)(_bn_s|_bn_b|_w)", name)
        if m:
            layer = f"layer{int(m.group(1)) - 1}.{m.group(2)}."
            branch = m.group(3)
            conv = "downsample.0" if branch == "1" else f"conv{'abc'.index(branch[1]) + 1}"
            norm = "downsample.1" if branch == "1" else f"bn{'abc'.index(branch[1]) + 1}"
        elif name.startswith(("conv1_", "res_conv1_")):
            layer, conv, norm = "", "conv1", "bn1"
        else:
            continue
        suffix = name.rsplit("_", 1)[-1] if not name.endswith("_w") else "w"
        if suffix == "w":
            out[f"{layer}{conv}.weight"] = t
        else:
            out[f"{layer}{norm}.{'weight' if suffix == 's' else 'bias'}"] = t
            norms.add(f"{layer}{norm}")
    for norm in norms:
        n = out[f"{norm}.weight"].shape[0]
        out[f"{norm}.running_mean"] = torch.zeros(n)
        out[f"{norm}.running_var"] = torch.ones(n) - 1e-5
    return out


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: pretrained backbone weights not found")
    if path.suffix == ".pkl":
        try:
            data = load_arrays_pickle(path)
        except ForbiddenGlobal as err:
            raise CheckpointError(
                f"{path}: the pickle refers to '{err}', which is not a numpy array or a plain container; "
                "reading it could run code, so it is refused (save the weights as arrays only)"
            ) from None
        except Exception as err:  # noqa: BLE001
            raise CheckpointError(f"{path}: cannot read pickle ({err})") from None
        blobs = data.get("blobs", data.get("model", data)) if isinstance(data, dict) else None
        if not isinstance(blobs, dict):
            raise CheckpointError(f"{path}: expected a dict of arrays")
        if any(k.endswith("_branch2a_w") for k in blobs):
            return _caffe2_to_torchvision(blobs)
        return {k: torch.as_tensor(v) for k, v in blobs.items() if hasattr(v, "shape")}
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise CheckpointError(f"{path}: cannot read pretrained weights ({err})") from None
    if isinstance(data, dict) and "model" in data and isinstance(data["model"], dict):
        data = data["model"]
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    return data


def load_pretrained_resnet(backbone: ResNetBackbone, cfg: BackboneConfig) -> None:
    """ImageNet weights: torchvision's (local hub cache or a path) or the MSRA Caffe2 `R-50.pkl`
    (BGR, 0-255 input; the original's stage-1 initialisation, use with stride_in_1x1=True)."""
    if cfg.pretrained == "imagenet":
        if cfg.name not in _TV_WEIGHTS:
            raise CheckpointError(
                f"{cfg.name}: torchvision has no ImageNet weights for it (train it from scratch)"
            )
        weights = torchvision.models.get_weight(_TV_WEIGHTS[cfg.name])
        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
        if not path.is_file():
            raise CheckpointError(
                f"{path}: torchvision ImageNet weights for {cfg.name} are not in the local cache "
                f"(download {weights.url} there, or set model.backbone.pretrained to a file)"
            )
    else:
        path = Path(cfg.pretrained).expanduser()
    state = _read_state_dict(path)
    state = {k.removeprefix("body."): v for k, v in state.items() if not k.startswith("fc.")}
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    own = backbone.body.state_dict()
    missing = sorted(set(own) - set(state) - {k for k in own if k.endswith("num_batches_tracked")})
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: not a torchvision {cfg.name} state dict "
            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})"
        )
    for k, v in state.items():
        if tuple(own[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{path}: {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
    backbone.body.load_state_dict(state, strict=False)
    if cfg.stride_in_1x1 and backbone.bottleneck and path.suffix != ".pkl":
        logger.warning(
            "%s: torchvision ImageNet weights expect the stride in the 3x3 conv; "
            "set model.backbone.stride_in_1x1=false for them",
            path,
        )
    logger.info("loaded pretrained %s weights from %s", cfg.name, path)


REQUIRED = "required"


def check_pretrained_setting(cfg: BackboneConfig) -> BackboneConfig:
    """Resolve the `pretrained` sentinels: `required` stops with what to set, `none` = random init.

    The paper's stage 1 starts from ImageNet weights; its config says `required` so that a
    forgotten path cannot silently train from random weights for days.
    """
    value = str(cfg.pretrained).strip()
    if value.lower() == REQUIRED:
        from ..config import ConfigError

        raise ConfigError(
            f"model.backbone.pretrained=required: this config starts {cfg.name} from ImageNet weights. "
            "Set model.backbone.pretrained to Detectron2's MSRA R-50.pkl (the original's "
            "initialisation, converted on load), a torchvision state-dict file (.pth/.safetensors, "
            "with model.backbone.stride_in_1x1=false) or 'imagenet' (torchvision's, from the local "
            "cache); or set model.backbone.pretrained=none to train from random weights on purpose"
        )
    if value.lower() == "none":
        return dataclasses.replace(cfg, pretrained="")
    return cfg


def build_backbone(cfg: BackboneConfig) -> nn.Module:
    cfg = check_pretrained_setting(cfg)
    if cfg.name in RESNET_DEPTHS:
        return ResNetBackbone(cfg)
    if cfg.name in SWIN_MODELS:
        return SwinBackbone(cfg)
    raise ValueError(
        f"unknown backbone {cfg.name!r} (choose from {sorted(RESNET_DEPTHS) + sorted(SWIN_MODELS)})"
    )
