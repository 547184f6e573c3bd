"""ONNX export of the network (backbone, FPN, encoders and heads) with a dynamic image size.

What is exported: `PanopticDepthNet.forward` on a *normalised, padded* batch (B, 3, Hp, Wp), i.e.
everything up to `HeadOutputs`; Hp and Wp may be any multiples of 32 (the stride of res5) and B is
dynamic too. What stays in Python: `preprocess` (channel order, mean/std, padding) before, and
`postprocess` (centre peaks, kernel fusion, mask/depth generation, panoptic merge) after; it needs
the model only for `thing_projection` / `stuff_projection`, two `nn.Linear`s. So a runtime
pipeline is: preprocess -> onnxruntime -> `head_outputs_from_onnx` -> postprocess.

`HeadOutputs` is flattened into named outputs, level by level over `model.heads.levels`
(`center_p3`, `region_p3`, `kernels_p3`, `depth_kernels_p3`, ..., `center_p7`, ...), then `mask_embedding` and
`depth_embedding` (or `pixel_depth` for the pixel-wise depth variant).

The exporter is `torch.onnx.export(..., dynamo=True)`: the legacy TorchScript exporter fails on
`torchvision.ops.deform_conv2d`, the dynamo one exports it. Deformable convs are
switched to the torchvision kernel for the export with `set_deform_impl` (the grid-sample kernel
loops over row chunks, which would freeze the image size, and the native kernel is a ctypes call no
tracer can see); all kernels compute the same function. The CoordConv channels need nothing special:
`modeling.heads.append_coords` builds them with `arange` under a tracer, which keeps sizes symbolic.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config.model import ModelConfig
from ..errors import PanopticDepthError
from ..modeling.deform_conv import set_deform_impl
from ..modeling.outputs import HeadOutputs, LevelOutputs
from ..utils.files import atomic_path

logger = logging.getLogger(__name__)

INPUT_NAME = "image"
DEFAULT_OPSET = 19  # DeformConv exists in ONNX from opset 19
STRIDE = 32
MIN_DYNAMIC_EXAMPLE = 160
# The deformable-conv kernel of the exported graph (`set_deform_impl`): it exports as ONNX DeformConv.
EXPORT_DEFORM_IMPL = "torchvision"


def output_names(cfg: ModelConfig) -> list[str]:
    """Names of the flattened outputs, in order, for a model built from `cfg`."""
    instance_depth = cfg.depth.enabled and cfg.depth.mode == "instance"
    names = []
    for lvl in cfg.heads.levels:
        names += [f"center_{lvl}", f"region_{lvl}", f"kernels_{lvl}"]
        if instance_depth:
            names.append(f"depth_kernels_{lvl}")
    names.append("mask_embedding")
    if cfg.depth.enabled:
        names.append("depth_embedding" if instance_depth else "pixel_depth")
    return names


def flatten_head_outputs(outputs: HeadOutputs) -> tuple[torch.Tensor, ...]:
    """HeadOutputs -> tuple of tensors in the order of `output_names`."""
    flat: list[torch.Tensor] = []
    for lvl in outputs.levels:
        flat += [lvl.center_logits, lvl.region_logits, lvl.kernels]
        if lvl.depth_kernels is not None:
            flat.append(lvl.depth_kernels)
    flat.append(outputs.mask_embedding)
    if outputs.depth_embedding is not None:
        flat.append(outputs.depth_embedding)
    elif outputs.pixel_depth is not None:
        flat.append(outputs.pixel_depth)
    return tuple(flat)


def head_outputs_from_onnx(
    outputs: list[Any] | dict[str, Any],
    names: list[str] | None = None,
    device: torch.device | str = "cpu",
) -> HeadOutputs:
    """Rebuild `HeadOutputs` (torch tensors on `device`) from onnxruntime outputs, for `postprocess`.

    `outputs` is either the list `session.run(None, ...)` returns (then `names` are the session's
    output names, in order) or a dict name -> array. `device` is where the model that supplies the
    kernel projections to `postprocess` lives.
    """
    if not isinstance(outputs, dict):
        if names is None:
            raise ValueError("names are required when outputs is a list")
        outputs = dict(zip(names, outputs, strict=True))
    t = {k: torch.as_tensor(np.asarray(v)).to(device) for k, v in outputs.items()}
    # The head levels (`model.heads.levels`) are the suffixes of the centre outputs, finest first.
    level_names = sorted(
        (k.removeprefix("center_") for k in t if k.startswith("center_")), key=lambda n: int(n[1:])
    )
    levels = [
        LevelOutputs(
            center_logits=t[f"center_{lvl}"],
            region_logits=t[f"region_{lvl}"],
            kernels=t[f"kernels_{lvl}"],
            depth_kernels=t.get(f"depth_kernels_{lvl}"),
        )
        for lvl in level_names
    ]
    return HeadOutputs(
        levels=levels,
        mask_embedding=t["mask_embedding"],
        depth_embedding=t.get("depth_embedding"),
        pixel_depth=t.get("pixel_depth"),
    )


class FlatNet(nn.Module):
    """The network with a tuple output (ONNX graphs return tensors, not dataclasses)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image_b3hw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return flatten_head_outputs(self.model(image_b3hw))


def _exportable_copy(model: nn.Module) -> nn.Module:
    """An eval-mode CPU copy whose deformable convs use the torchvision kernel (exportable, same math).

    The copy is on the CPU whatever device `model` is on: the ONNX file does not depend on it.
    """
    model = copy.deepcopy(model).cpu().eval()
    set_deform_impl(model, EXPORT_DEFORM_IMPL)
    return model


def export_onnx(
    model: nn.Module,
    cfg: ModelConfig,
    path: str | os.PathLike,
    height: int = 256,
    width: int = 512,
    opset: int = DEFAULT_OPSET,
    dynamic: bool = True,
) -> Path:
    """Export `model` to `path` (atomic). `height`/`width`: example size (multiples of 32).

    With `dynamic=True` the batch size and the image size (any multiple of 32) are free. The
    example must be at least 160 x 160 so that no pyramid level (p7 = 1/128) is a single pixel:
    the exporter freezes every size that is 1 in the example.
    """
    if height % STRIDE or width % STRIDE or height <= 0 or width <= 0:
        raise PanopticDepthError(f"export size {height}x{width}: height and width must be multiples of 32")
    if dynamic and min(height, width) < MIN_DYNAMIC_EXAMPLE:
        raise PanopticDepthError(
            f"export size {height}x{width}: use at least {MIN_DYNAMIC_EXAMPLE} per side for a dynamic-size "
            "export (a 1-pixel p7 level in the example would freeze the size)"
        )
    if dynamic and cfg.backbone.name.startswith("swin"):
        logger.warning(
            "dynamic-size export of a Swin backbone: torch.export reasons symbolically about timm's "
            "window padding and masks, which took over 10 minutes on a 2-core CPU; a fixed-size export "
            "(dynamic=False, `panopticdepth export --static`) took under 2 minutes"
        )
    net = FlatNet(_exportable_copy(model)).eval()
    example = torch.zeros(1, 3, height, width)
    names = output_names(cfg)
    dynamic_shapes = None
    if dynamic:
        from torch.export import Dim

        # Multiples of 32 keep every level's size an exact integer division (strides 4..128,
        # p6/p7 by stride-2 convs), which is what preprocess pads to anyway.
        h32 = Dim("h32", min=1, max=256)
        w32 = Dim("w32", min=1, max=256)
        batch = Dim("batch", min=1, max=64)
        dynamic_shapes = ({0: batch, 2: STRIDE * h32, 3: STRIDE * w32},)
    path = Path(path)
    with atomic_path(path) as tmp, torch.no_grad():
        program = torch.onnx.export(
            net,
            (example,),
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            input_names=[INPUT_NAME],
            output_names=names,
            opset_version=opset,
            external_data=False,
            verbose=False,
        )
        if program is None:  # pragma: no cover - exporter always returns one with dynamo=True
            raise PanopticDepthError("torch.onnx.export returned no program")
        program.save(str(tmp))
    logger.info("exported ONNX model (%d outputs, opset %d) to %s", len(names), opset, path)
    return path


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    """An onnxruntime CPU session for an exported model."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def run_onnx(
    session: Any, batch_b3hw: torch.Tensor | np.ndarray, device: torch.device | str | None = None
) -> HeadOutputs:
    """Run an exported model on a normalised, padded batch; returns `HeadOutputs` for `postprocess`.

    The outputs come back on `device` (default: the batch tensor's device, the CPU for an array),
    so that they meet the kernel projections of a model on that device.
    """
    if device is None:
        device = batch_b3hw.device if isinstance(batch_b3hw, torch.Tensor) else "cpu"
    x = batch_b3hw.detach().cpu().numpy() if isinstance(batch_b3hw, torch.Tensor) else batch_b3hw
    names = [o.name for o in session.get_outputs()]
    outs = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})
    return head_outputs_from_onnx(outs, names, device)
