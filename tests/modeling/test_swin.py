"""Swin backbone: parity with timm's own forward, ImageNet files in timm's and the official layout,
key/shape errors naming the file, image sizes, input convention, one full training step."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from panopticdepth.config import BackboneConfig, load_config
from panopticdepth.config.model import ModelConfig
from panopticdepth.errors import CheckpointError
from panopticdepth.modeling.backbone import build_backbone
from panopticdepth.modeling.swin import SWIN_MODELS, SwinBackbone

TIMM_T = SWIN_MODELS["swin_t"]


def _timm_classifier(seed: int = 0):
    """timm's Swin-T classification model with random (non-default) weights in every tensor."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(TIMM_T, pretrained=False, dynamic_img_size=True, always_partition=True).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))  # LayerNorm gains/biases away from 1/0, biases non-zero
    return model


def _official_layout(timm_state: dict[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    """timm names -> the official Swin release's names (merging at the end of the previous stage,
    `head.*`, and the relative_position_index / attn_mask buffers it saves)."""
    out = {}
    for k, v in timm_state.items():
        k = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m[1]) - 1}.downsample.", k)
        out[k.replace("head.fc.", "head.")] = v
    for name, _ in model.named_modules():
        if name.endswith(".attn"):
            out[f"{name}.relative_position_index"] = torch.zeros(49, 49, dtype=torch.long)
        if name.endswith(("blocks.1", "blocks.3", "blocks.5")):
            out[f"{name}.attn_mask"] = torch.zeros(4, 49, 49)
    return out


@pytest.fixture(scope="module")
def timm_model():
    return _timm_classifier()


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory, timm_model):
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("swin_weights")
    state = {k: v.contiguous() for k, v in timm_model.state_dict().items()}
    save_file(state, str(d / "model.safetensors"))
    torch.save(state, d / "timm_swin_t.pth")
    official = _official_layout(state, timm_model)
    assert "layers.0.downsample.reduction.weight" in official and "head.weight" in official
    torch.save({"model": official}, d / "swin_tiny_patch4_window7_224.pth")
    return d


@pytest.mark.parametrize("out_norm", [False, True])
def test_features_match_timm_forward(timm_model, weight_files, out_norm):
    bb = SwinBackbone(
        BackboneConfig(
            name="swin_t", pretrained=str(weight_files / "model.safetensors"), freeze_at=0, out_norm=out_norm
        )
    ).eval()
    x = torch.randn(2, 3, 96, 160, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = timm_model.forward_intermediates(x, intermediates_only=True)  # NCHW, stage outputs
        got = bb(x)
    assert list(got) == ["res2", "res3", "res4", "res5"]
    for (name, g), w in zip(got.items(), want):
        if out_norm:  # a fresh LayerNorm over the channels (weight 1, bias 0)
            w = F.layer_norm(w.permute(0, 2, 3, 1), w.shape[1:2]).permute(0, 3, 1, 2)
        assert g.shape == w.shape, name
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize(
    "fname", ["model.safetensors", "timm_swin_t.pth", "swin_tiny_patch4_window7_224.pth"]
)
def test_weight_files_load_every_tensor(timm_model, weight_files, fname):
    bb = SwinBackbone(BackboneConfig(name="swin_t", pretrained=str(weight_files / fname), freeze_at=0))
    own = bb.body.state_dict()
    ref = timm_model.state_dict()
    assert len(own) > 150
    for key, value in own.items():
        timm_key = re.sub(r"^layers_(\d+)\.", r"layers.\1.", key)
        assert torch.equal(value, ref[timm_key]), key


def test_mismatched_weights_name_the_file(tmp_path, weight_files):
    import timm

    small = timm.create_model(SWIN_MODELS["swin_s"], pretrained=False)
    torch.save(small.state_dict(), tmp_path / "swin_s.pth")
    with pytest.raises(
        CheckpointError, match=r"swin_s\.pth: not swin_tiny.*156 unexpected.*layers_2\.blocks\.1\d"
    ):
        build_backbone(BackboneConfig(name="swin_t", pretrained=str(tmp_path / "swin_s.pth")))
    wide = timm.create_model(TIMM_T, pretrained=False, window_size=12)
    torch.save({"model": wide.state_dict()}, tmp_path / "window12.pth")
    with pytest.raises(
        CheckpointError, match=r"window12\.pth: 10 tensors have the wrong shape.*relative_position_bias_table"
    ):
        build_backbone(BackboneConfig(name="swin_t", pretrained=str(tmp_path / "window12.pth")))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pth: cannot read"):
        build_backbone(BackboneConfig(name="swin_t", pretrained=str(tmp_path / "junk.pth")))
    with pytest.raises(CheckpointError, match=r"missing\.pth.*not found"):
        build_backbone(BackboneConfig(name="swin_t", pretrained=str(tmp_path / "missing.pth")))


def test_freeze_at_and_drop_path():
    bb = SwinBackbone(BackboneConfig(name="swin_t", freeze_at=2, drop_path_rate=0.2))
    frozen = {n for n, p in bb.named_parameters() if not p.requires_grad}
    assert "body.patch_embed.proj.weight" in frozen
    assert any(n.startswith("body.layers_0.") for n in frozen)
    # the merging into res3 starts stage 1 in timm's layout and trains, as res3's strided conv does
    assert not any(n.startswith(("body.layers_1.", "body.layers_2.", "out_norms.")) for n in frozen)
    rates = [m.drop_prob for m in bb.modules() if type(m).__name__ == "DropPath"]
    assert len(rates) == 2 * (12 - 1)  # blocks 2..12 (the first has rate 0 = Identity), two paths each
    assert max(rates) == pytest.approx(0.2)


def test_sizes_multiple_of_32_and_error_otherwise():
    bb = SwinBackbone(BackboneConfig(name="swin_t", freeze_at=0)).eval()
    with torch.no_grad():
        # 96x160: stage maps 24x40 .. 3x5, none a multiple of the 7x7 window
        out = bb(torch.randn(1, 3, 96, 160))
        assert [tuple(v.shape) for v in out.values()] == [
            (1, 96, 24, 40), (1, 192, 12, 20), (1, 384, 6, 10), (1, 768, 3, 5)
        ]  # fmt: skip
        assert all(torch.isfinite(v).all() for v in out.values())
        with pytest.raises(ValueError, match="multiples of 32"):
            bb(torch.randn(1, 3, 96, 100))


@pytest.mark.slow
@pytest.mark.parametrize("size", [(384, 1280), (512, 1024), (1024, 2048)])
def test_dataset_sizes(size):
    """SemKITTI crops, Cityscapes crops and full Cityscapes frames."""
    bb = SwinBackbone(BackboneConfig(name="swin_t", freeze_at=0)).eval()
    h, w = size
    with torch.no_grad():
        out = bb(torch.randn(1, 3, h, w))
    for name, stride in bb.strides.items():
        assert tuple(out[name].shape[-2:]) == (h // stride, w // stride)
        assert torch.isfinite(out[name]).all()


def test_input_convention_follows_the_backbone():
    swin = ModelConfig()
    swin.backbone.name = "swin_s"
    assert swin.input_normalization() == ("RGB", [123.675, 116.28, 103.53], [58.395, 57.12, 57.375])
    r50 = ModelConfig()
    assert r50.input_normalization() == ("BGR", [123.675, 116.28, 103.53], [1.0, 1.0, 1.0])
    explicit = ModelConfig(input_format="BGR", pixel_std=[2.0, 2.0, 2.0])
    explicit.backbone.name = "swin_t"
    assert explicit.input_normalization() == ("BGR", [123.675, 116.28, 103.53], [2.0, 2.0, 2.0])
    # the timm preprocessing of these weights, as timm itself describes it
    import timm

    data_cfg = timm.data.resolve_data_config({}, model=timm.create_model(TIMM_T, pretrained=False))
    assert [255 * m for m in data_cfg["mean"]] == pytest.approx(swin.input_normalization()[1])
    assert [255 * s for s in data_cfg["std"]] == pytest.approx(swin.input_normalization()[2])


def test_explicit_r50_input_with_swin_warns(caplog):
    from panopticdepth.modeling import build_model

    cfg = _small_swin_cfg()
    cfg.model.input_format = "BGR"
    cfg.model.pixel_std = [1.0, 1.0, 1.0]
    with caplog.at_level("WARNING"):
        build_model(cfg.model)
    assert "timm's ImageNet weights expect" in caplog.text


def _small_swin_cfg():
    cfg = load_config(
        None,
        [
            "model.backbone.name=swin_t",
            "model.backbone.freeze_at=0",
            "model.backbone.drop_path_rate=0.2",
            "model.fpn.out_channels=32",
            "model.heads.convs_dim=32",
            "model.heads.norm_groups=8",
            "model.heads.num_convs=1",
            "model.heads.deform_impl=sample",
        ],
    )
    return cfg


def test_training_step_reaches_every_parameter():
    """Full model (deformable heads, depth on) with Swin-T at 64x128: loss, backward, AdamW step."""
    from panopticdepth.data.sample import make_sample
    from panopticdepth.data.synthetic.writer import generate
    from panopticdepth.modeling import build_model
    from panopticdepth.modeling.preprocess import preprocess
    from panopticdepth.training.engine import LossModule, default_criterion
    from panopticdepth.training.solver import build_optimizer

    cfg = _small_swin_cfg()
    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    frames = [generate(0, i, 64, 128) for i in range(2)]
    samples = [
        make_sample(f.image, f.panoptic.astype("int64"), f.depth, {"image_id": str(i)})
        for i, f in enumerate(frames)
    ]
    x, _ = preprocess([s["image"] for s in samples], cfg.model)
    losses = LossModule(model, default_criterion, cfg, torch.device("cpu"))(x, samples, tuple(x.shape[-2:]))
    assert set(losses) >= {"loss_pos_th", "loss_seg_th", "loss_depth", "loss_depth_ins"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, no_grad[:10]
    zero = [n for n, p in model.named_parameters() if n.startswith("backbone.") and p.grad.abs().sum() == 0]
    assert not zero, zero[:10]
    before = model.backbone.body.layers_3.blocks[1].attn.relative_position_bias_table.detach().clone()
    opt = build_optimizer(model, cfg.solver)
    opt.step()
    assert not torch.equal(before, model.backbone.body.layers_3.blocks[1].attn.relative_position_bias_table)
