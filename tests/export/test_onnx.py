"""ONNX export: named outputs, rebuilt HeadOutputs, onnxruntime parity at two image sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from panopticdepth.config.model import ModelConfig
from panopticdepth.errors import PanopticDepthError
from panopticdepth.export.onnx import (
    export_onnx,
    flatten_head_outputs,
    head_outputs_from_onnx,
    onnx_session,
    output_names,
    run_onnx,
)
from panopticdepth.modeling import build_model
from panopticdepth.modeling.postprocess import postprocess


def _narrow_cfg() -> ModelConfig:
    """ResNet-18, 32-channel FPN/heads, one tower conv; deformable convs kept (they must export)."""
    cfg = ModelConfig()
    cfg.backbone.name = "resnet18"
    cfg.backbone.stride_in_1x1 = False
    cfg.fpn.out_channels = 32
    cfg.heads.convs_dim = 32
    cfg.heads.norm_groups = 8
    cfg.heads.num_convs = 1
    cfg.inference.thing_threshold = 0.0  # random weights: keep candidates so postprocess has work
    return cfg


@pytest.fixture(scope="module")
def narrow_model():
    torch.manual_seed(0)
    cfg = _narrow_cfg()
    model = build_model(cfg).eval()
    return model, cfg


def test_output_names_follow_head_outputs(narrow_model) -> None:
    model, cfg = narrow_model
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96))
    names = output_names(cfg)
    flat = flatten_head_outputs(out)
    assert len(names) == len(flat) == 5 * 4 + 2
    assert names[:4] == ["center_p3", "region_p3", "kernels_p3", "depth_kernels_p3"]
    assert names[-2:] == ["mask_embedding", "depth_embedding"]
    rebuilt = head_outputs_from_onnx([t.numpy() for t in flat], names)
    for a, b in zip(flat, flatten_head_outputs(rebuilt)):
        assert torch.equal(a, b)
    no_depth = _narrow_cfg()
    no_depth.depth.enabled = False
    assert output_names(no_depth)[-1] == "mask_embedding" and len(output_names(no_depth)) == 16


def test_output_names_follow_the_head_levels() -> None:
    cfg = _narrow_cfg()
    cfg.heads.levels = ["p2", "p3", "p4", "p5"]
    torch.manual_seed(0)
    with torch.no_grad():
        flat = flatten_head_outputs(build_model(cfg).eval()(torch.randn(1, 3, 64, 96)))
    names = output_names(cfg)
    assert len(names) == len(flat) == 4 * 4 + 2
    assert [n for n in names if n.startswith("center_")] == [
        "center_p2",
        "center_p3",
        "center_p4",
        "center_p5",
    ]
    # a dict in any order is rebuilt finest level first
    rebuilt = head_outputs_from_onnx(dict(reversed(list(zip(names, [t.numpy() for t in flat])))))
    assert [tuple(lv.center_logits.shape[-2:]) for lv in rebuilt.levels] == [
        (16, 24),
        (8, 12),
        (4, 6),
        (2, 3),
    ]
    for a, b in zip(flat, flatten_head_outputs(rebuilt)):
        assert torch.equal(a, b)


def test_export_rejects_bad_sizes(narrow_model, tmp_path) -> None:
    model, cfg = narrow_model
    with pytest.raises(PanopticDepthError, match="multiples of 32"):
        export_onnx(model, cfg, tmp_path / "m.onnx", 100, 128)
    with pytest.raises(PanopticDepthError, match="at least"):
        export_onnx(model, cfg, tmp_path / "m.onnx", 64, 128)
    assert not (tmp_path / "m.onnx").exists()


def test_onnxruntime_matches_pytorch_at_two_sizes(narrow_model, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    model, cfg = narrow_model
    path = export_onnx(model, cfg, tmp_path / "model.onnx", 160, 192)
    session = onnx_session(path, threads=1)
    names = [o.name for o in session.get_outputs()]
    assert names == output_names(cfg)
    # Two sizes other than the example (and a batch of 2) prove the graph is size-dynamic.
    for shape in [(1, 3, 96, 128), (2, 3, 224, 160)]:
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(shape[2]))
        with torch.no_grad():
            ref_out = model(x)
        got_out = run_onnx(session, x)
        for name, ref, got in zip(names, flatten_head_outputs(ref_out), flatten_head_outputs(got_out)):
            assert got.shape == ref.shape, name
            tol = 1e-4 * max(1.0, float(ref.abs().max()))
            np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=tol, rtol=1e-4, err_msg=name)
        # Post-processing runs unchanged on the rebuilt outputs and agrees with the eager path.
        sizes = [tuple(shape[2:])] * shape[0]
        with torch.no_grad():
            ref_res = postprocess(ref_out, model, cfg, sizes)
            got_res = postprocess(got_out, model, cfg, sizes)
        for r, g in zip(ref_res, got_res):
            agree = (r.panoptic == g.panoptic).float().mean().item()
            assert agree > 0.99
            assert torch.allclose(r.depth, g.depth, atol=1e-3, rtol=1e-3)


def test_onnx_outputs_follow_the_model_device(narrow_model, tmp_path) -> None:
    """run_onnx hands back tensors on the batch's (or the requested) device, so postprocess can
    combine them with the kernel projections of a model on a GPU; `meta` stands in for one here."""
    pytest.importorskip("onnxruntime")
    model, cfg = narrow_model
    session = onnx_session(export_onnx(model, cfg, tmp_path / "model.onnx", 160, 160), threads=1)
    x = torch.randn(1, 3, 96, 128)
    assert all(t.device.type == "cpu" for t in flatten_head_outputs(run_onnx(session, x)))
    on_meta = run_onnx(session, x, device="meta")
    assert all(t.device.type == "meta" for t in flatten_head_outputs(on_meta))
    assert next(model.parameters()).device.type == "cpu"  # export worked on a copy


def test_export_cli_needs_weights_or_config(tmp_path, capsys) -> None:
    from panopticdepth.cli.main import main

    assert main(["export", "--output", str(tmp_path / "m.onnx")]) == 2
    assert "--weights" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
def test_swin_model_onnxruntime_parity(tmp_path) -> None:
    """Swin-T + narrow heads, exported at a fixed size (`--static`; the dynamic-size export of timm's
    Swin spends over ten minutes in torch.export's symbolic shape reasoning), parity with PyTorch."""
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    cfg = _narrow_cfg()
    cfg.backbone.name = "swin_t"
    cfg.backbone.freeze_at = 0
    model = build_model(cfg).eval()
    path = export_onnx(model, cfg, tmp_path / "swin.onnx", 160, 224, dynamic=False)
    session = onnx_session(path, threads=1)
    names = [o.name for o in session.get_outputs()]
    assert names == output_names(cfg)
    x = torch.randn(1, 3, 160, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref_out = model(x)
    got_out = run_onnx(session, x)
    for name, ref, got in zip(names, flatten_head_outputs(ref_out), flatten_head_outputs(got_out)):
        assert got.shape == ref.shape, name
        tol = 1e-4 * max(1.0, float(ref.abs().max()))
        np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=tol, rtol=1e-4, err_msg=name)
    with torch.no_grad():
        ref_res = postprocess(ref_out, model, cfg, [(160, 224)])
        got_res = postprocess(got_out, model, cfg, [(160, 224)])
    assert (ref_res[0].panoptic == got_res[0].panoptic).float().mean().item() > 0.99
    assert torch.allclose(ref_res[0].depth, got_res[0].depth, atol=1e-3, rtol=1e-3)
