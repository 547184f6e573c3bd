"""Backbone: MSRA stride placement, freeze_at, norms, pretrained-file errors, Swin shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.ops import FrozenBatchNorm2d

from panopticdepth.config import BackboneConfig
from panopticdepth.errors import CheckpointError
from panopticdepth.modeling.backbone import ResNetBackbone, build_backbone


def _randomise_norms(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (FrozenBatchNorm2d, torch.nn.BatchNorm2d)):
            m.weight.data = 1 + 0.1 * torch.randn(m.weight.shape, generator=g)
            m.bias.data = 0.1 * torch.randn(m.bias.shape, generator=g)
            m.running_mean.data = 0.1 * torch.randn(m.running_mean.shape, generator=g)
            m.running_var.data = 0.5 + torch.rand(m.running_var.shape, generator=g)


def _bn(x, bn):
    scale = bn.weight / torch.sqrt(bn.running_var + 1e-5)
    return x * scale.view(1, -1, 1, 1) + (bn.bias - bn.running_mean * scale).view(1, -1, 1, 1)


def _manual_bottleneck(block, x, stride_in_1x1: bool):
    """An MSRA (stride in 1x1) or torchvision (stride in 3x3) bottleneck written with F.conv2d."""
    s1, s2 = (2, 1) if stride_in_1x1 else (1, 2)
    y = F.relu(_bn(F.conv2d(x, block.conv1.weight, stride=s1), block.bn1))
    y = F.relu(_bn(F.conv2d(y, block.conv2.weight, stride=s2, padding=1), block.bn2))
    y = _bn(F.conv2d(y, block.conv3.weight), block.bn3)
    sc = _bn(F.conv2d(x, block.downsample[0].weight, stride=2), block.downsample[1])
    return F.relu(y + sc)


@pytest.mark.parametrize("stride_in_1x1", [True, False])
def test_stride_placement(stride_in_1x1):
    torch.manual_seed(0)
    bb = ResNetBackbone(BackboneConfig(name="resnet50", stride_in_1x1=stride_in_1x1)).eval()
    _randomise_norms(bb)
    block = bb.body.layer2[0]
    x = torch.randn(1, 256, 12, 12)
    with torch.no_grad():
        got = block(x)
        want = _manual_bottleneck(block, x, stride_in_1x1)
        other = _manual_bottleneck(block, x, not stride_in_1x1)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(got, other, atol=1e-2)


@pytest.mark.parametrize("name, blocks", [("resnet10", 1), ("resnet18", 2)])
def test_resnet_outputs_and_strides(name, blocks):
    bb = ResNetBackbone(BackboneConfig(name=name)).eval()
    with torch.no_grad():
        out = bb(torch.randn(1, 3, 64, 96))
    assert [tuple(out[k].shape) for k in ("res2", "res3", "res4", "res5")] == [
        (1, 64, 16, 24), (1, 128, 8, 12), (1, 256, 4, 6), (1, 512, 2, 3)
    ]  # fmt: skip
    assert bb.out_channels == {"res2": 64, "res3": 128, "res4": 256, "res5": 512}
    assert [len(getattr(bb.body, f"layer{i}")) for i in range(1, 5)] == [blocks] * 4


def test_resnet10_has_no_imagenet_weights():
    with pytest.raises(CheckpointError, match="resnet10: torchvision has no ImageNet weights"):
        build_backbone(BackboneConfig(name="resnet10", pretrained="imagenet"))


@pytest.mark.parametrize("freeze_at", [0, 1, 2, 5])
def test_freeze_at(freeze_at):
    bb = ResNetBackbone(BackboneConfig(name="resnet18", norm="BN", freeze_at=freeze_at))
    stages = [
        [bb.body.conv1, bb.body.bn1], [bb.body.layer1], [bb.body.layer2], [bb.body.layer3], [bb.body.layer4]
    ]  # fmt: skip
    for idx, mods in enumerate(stages):
        params = [p for m in mods for p in m.parameters()]
        frozen = idx < freeze_at
        assert all(p.requires_grad != frozen for p in params), (idx, freeze_at)
        bns = [m for mod in mods for m in mod.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        fbns = [m for mod in mods for m in mod.modules() if isinstance(m, FrozenBatchNorm2d)]
        # Detectron2 freezes a stage's BatchNorm into FrozenBN too.
        assert (len(bns) == 0) == frozen and (len(fbns) > 0) == frozen


def test_frozen_bn_has_no_trainable_params_and_eps():
    bb = ResNetBackbone(BackboneConfig(name="resnet18", norm="FrozenBN", freeze_at=0))
    assert isinstance(bb.body.bn1, FrozenBatchNorm2d) and bb.body.bn1.eps == 1e-5
    assert all(p.requires_grad for p in bb.parameters())


def test_missing_pretrained_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(CheckpointError, match="not in the local cache"):
        build_backbone(BackboneConfig(name="resnet18", pretrained="imagenet"))
    with pytest.raises(CheckpointError, match="not found"):
        build_backbone(BackboneConfig(name="resnet18", pretrained=str(tmp_path / "nope.pth")))


def test_pretrained_from_path(tmp_path):
    src = ResNetBackbone(BackboneConfig(name="resnet18", stride_in_1x1=False))
    sd = {k: v for k, v in src.body.state_dict().items()}
    sd["fc.weight"] = torch.zeros(1000, 512)  # a classification head is ignored
    torch.save(sd, tmp_path / "r18.pth")
    dst = ResNetBackbone(BackboneConfig(name="resnet18", pretrained=str(tmp_path / "r18.pth")))
    assert torch.equal(dst.body.conv1.weight, src.body.conv1.weight)
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="bad.pth"):
        ResNetBackbone(BackboneConfig(name="resnet18", pretrained=str(tmp_path / "bad.pth")))


def test_swin_tiny_shapes():
    bb = build_backbone(BackboneConfig(name="swin_t", freeze_at=0)).eval()
    with torch.no_grad():
        out = bb(torch.randn(1, 3, 64, 96))
    assert [tuple(out[k].shape) for k in ("res2", "res3", "res4", "res5")] == [
        (1, 96, 16, 24), (1, 192, 8, 12), (1, 384, 4, 6), (1, 768, 2, 3)
    ]  # fmt: skip


@pytest.mark.slow
def test_swin_pretrained_from_file(tmp_path):
    import timm

    src = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False)
    torch.save(src.state_dict(), tmp_path / "swin_t.pth")
    bb = build_backbone(BackboneConfig(name="swin_t", pretrained=str(tmp_path / "swin_t.pth"), freeze_at=2))
    assert torch.equal(bb.body.patch_embed.proj.weight, src.patch_embed.proj.weight)
    frozen = {n for n, p in bb.body.named_parameters() if not p.requires_grad}
    assert "patch_embed.proj.weight" in frozen and any(n.startswith("layers_0.") for n in frozen)
    assert not any(n.startswith("layers_1.") for n in frozen)
    with pytest.raises(CheckpointError, match="not found"):
        build_backbone(BackboneConfig(name="swin_t", pretrained=str(tmp_path / "missing.pth")))


def test_msra_caffe2_pkl(tmp_path):
    import pickle

    import numpy as np

    ref = ResNetBackbone(BackboneConfig(name="resnet50"))
    sd = ref.body.state_dict()
    blobs = {"conv1_w": sd["conv1.weight"].numpy(), "res_conv1_bn_s": np.full(64, 2.0, np.float32)}
    blobs["res_conv1_bn_b"] = np.full(64, 0.5, np.float32)
    for s, n_blocks in zip((2, 3, 4, 5), (3, 4, 6, 3)):
        for b in range(n_blocks):
            tv = f"layer{s - 1}.{b}."
            for br, k in (("2a", 1), ("2b", 2), ("2c", 3)):
                blobs[f"res{s}_{b}_branch{br}_w"] = sd[f"{tv}conv{k}.weight"].numpy()
                blobs[f"res{s}_{b}_branch{br}_bn_s"] = np.ones(sd[f"{tv}bn{k}.weight"].shape, np.float32)
                blobs[f"res{s}_{b}_branch{br}_bn_b"] = np.zeros(sd[f"{tv}bn{k}.weight"].shape, np.float32)
            if b == 0:
                blobs[f"res{s}_0_branch1_w"] = sd[f"{tv}downsample.0.weight"].numpy()
                blobs[f"res{s}_0_branch1_bn_s"] = np.ones(sd[f"{tv}downsample.1.weight"].shape, np.float32)
                blobs[f"res{s}_0_branch1_bn_b"] = np.zeros(sd[f"{tv}downsample.1.weight"].shape, np.float32)
    blobs["fc1000_w"] = np.zeros((1000, 2048), np.float32)
    with open(tmp_path / "R-50.pkl", "wb") as f:
        pickle.dump({"blobs": blobs}, f)
    bb = ResNetBackbone(BackboneConfig(name="resnet50", pretrained=str(tmp_path / "R-50.pkl"), freeze_at=0))
    assert torch.equal(bb.body.layer3[2].conv2.weight, sd["layer3.2.conv2.weight"])
    # stem norm = the folded Caffe2 affine map exactly: y = 2x + 0.5
    x = torch.randn(1, 64, 3, 3)
    assert torch.allclose(bb.body.bn1(x), 2 * x + 0.5, atol=1e-6)


def test_stage1_config_requires_imagenet_weights(tmp_path):
    from panopticdepth.config import ConfigError, load_config
    from panopticdepth.modeling.backbone import build_backbone

    stage1 = Path(__file__).resolve().parents[2] / "configs" / "cityscapes" / "stage1_ps_crop.yaml"
    cfg = load_config(stage1).model.backbone
    with pytest.raises(ConfigError, match=r"pretrained=required.*R-50\.pkl.*pretrained=none"):
        build_backbone(cfg)
    cfg.pretrained = "none"  # random init on purpose
    assert isinstance(build_backbone(cfg), ResNetBackbone)
    # a torchvision state-dict file is accepted as the ImageNet initialisation
    tv = torchvision.models.resnet50(weights=None)
    torch.save(tv.state_dict(), tmp_path / "resnet50.pth")
    cfg.pretrained, cfg.stride_in_1x1 = str(tmp_path / "resnet50.pth"), False
    bb = build_backbone(cfg)
    assert torch.equal(bb.body.layer3[2].conv2.weight, tv.layer3[2].conv2.weight)


def test_frozen_bn_keeps_the_autocast_dtype():
    from panopticdepth.modeling.backbone import FrozenBatchNorm2d as OurFrozenBN

    ours, reference = OurFrozenBN(8, eps=1e-5), FrozenBatchNorm2d(8, eps=1e-5)
    torch.manual_seed(0)
    for name in ("weight", "bias", "running_mean", "running_var"):
        value = torch.rand(8) + 0.5
        getattr(ours, name).copy_(value)
        getattr(reference, name).copy_(value)
    x = torch.randn(2, 8, 5, 5)
    assert torch.equal(ours(x), reference(x))  # float32: torchvision's arithmetic
    assert reference(x.bfloat16()).dtype == torch.float32  # what promoted every activation before
    assert ours(x.bfloat16()).dtype == torch.bfloat16
    bb = ResNetBackbone(BackboneConfig(name="resnet18", norm="FrozenBN", freeze_at=5))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        feats = bb(torch.randn(1, 3, 64, 64))
    assert all(f.dtype == torch.bfloat16 for f in feats.values())


class _RunsCommand:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_pretrained_pkl_with_code_is_refused(tmp_path):
    import pickle

    marker = tmp_path / "pwned"
    with open(tmp_path / "R-18.pkl", "wb") as f:
        pickle.dump({"blobs": {"conv1_w": _RunsCommand(marker)}}, f)
    with pytest.raises(CheckpointError, match=r"R-18\.pkl: the pickle refers to '(posix|os)\.system'"):
        ResNetBackbone(BackboneConfig(name="resnet18", pretrained=str(tmp_path / "R-18.pkl")))
    assert not marker.exists()
