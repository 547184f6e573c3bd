"""Conformance of the network with the original implementation (oracle case_small).

The recipe weights are saved under the ORIGINAL names as a `.pth`, converted through the real
`panopticdepth convert --original-config` path, loaded from the model directory, and every
recorded intermediate is compared relatively (FrozenBN activations reach ~1e6).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from panopticdepth.checkpoint.model_dir import load_model_dir
from panopticdepth.cli.main import main
from panopticdepth.modeling.preprocess import preprocess

pytestmark = pytest.mark.oracle

LEVELS = ("p3", "p4", "p5", "p6", "p7")

# The case's config.json changes one inference key from the released yaml (STUFF_AREA_LIMIT);
# written here in the original's own Detectron2 form so the YAML translation is exercised.
CASE_YAML = """\
MODEL:
  DEVICE: cpu
  WEIGHTS: ""
  META_ARCHITECTURE: PanopticDepth
  DEPTH_ON: True
  PIXEL_MEAN: [123.675, 116.28, 103.53]
  PIXEL_STD: [1.0, 1.0, 1.0]
  POSITION_HEAD:
    THING: {THRES: 0.01, TOP_NUM: 200}
    STUFF: {THRES: 0.1}
  KERNEL_HEAD:
    INSTANCE_SCALES: "((1, 128), (64, 256), (128, 512), (256, 1024), (512, 2048))"
  INFERENCE:
    INST_THRES: 0.5
    SIMILAR_THRES: 0.97
    COMBINE: {STUFF_AREA_LIMIT: 1024}
INPUT:
  FORMAT: BGR
  COLOR_AUG: False
  RANDOM_FLIP: none
DATALOADER: {NUM_WORKERS: 0}
"""


@pytest.fixture(scope="module")
def converted(oracle_weights, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("oracle_net")
    ckpt = tmp / "original.pth"
    torch.save({"model": {k: torch.from_numpy(v) for k, v in oracle_weights.items()}, "iteration": 0}, ckpt)
    yaml_path = tmp / "case.yaml"
    yaml_path.write_text(CASE_YAML)
    out = tmp / "model"
    rc = main(["convert", "--original", str(ckpt), "--original-config", str(yaml_path), "--output", str(out)])
    assert rc == 0
    return load_model_dir(out)


def _rel(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(a - ref).max() / max(np.abs(ref).max(), 1e-12))


def test_converted_config_matches_case(converted, oracle_case):
    _, cfg = converted
    wanted = oracle_case["config"]["thresholds_in_effect"]
    assert cfg.model.inference.stuff_area_limit == wanted["MODEL.INFERENCE.COMBINE.STUFF_AREA_LIMIT"]
    assert cfg.model.inference.mask_threshold == wanted["MODEL.INFERENCE.INST_THRES"]
    assert cfg.model.inference.thing_threshold == wanted["MODEL.POSITION_HEAD.THING.THRES"]
    assert cfg.model.pixel_mean == wanted["MODEL.PIXEL_MEAN"]
    assert cfg.model.input_format == "BGR"
    assert cfg.model.depth.enabled


def test_network_intermediates_match_oracle(converted, oracle_case):
    model, cfg = converted
    arrays = oracle_case["arrays"]
    bgr = torch.from_numpy(arrays["input_image_bgr_chw_uint8"])
    batch, sizes = preprocess([bgr.flip(0)], cfg.model)  # preprocess takes RGB
    assert sizes == [tuple(bgr.shape[1:])]
    with torch.no_grad():
        out = model(batch, return_features=True)
    got = {f"backbone_{k}": out.features[k] for k in ("res2", "res3", "res4", "res5")}
    got.update({f"fpn_{k}": out.features[k] for k in ("p2", "p3", "p4", "p5", "p6", "p7")})
    got["semantic_fpn_out"] = out.features["semantic"]
    got["encode_feat"] = out.mask_embedding
    got["encode_depths"] = out.depth_embedding
    for p, lv in zip(LEVELS, out.levels):
        got[f"level_{p}_center_logits"] = lv.center_logits
        got[f"level_{p}_region_logits"] = lv.region_logits
        got[f"level_{p}_kernel_weights"] = lv.kernels
        got[f"level_{p}_depth_kernels"] = lv.depth_kernels
    assert len(got) == 33
    errors = {}
    for name, tensor in got.items():
        ref = arrays[name]
        mine = tensor[0].numpy()
        assert mine.shape == ref.shape, name
        errors[name] = _rel(mine, ref)
    bad = {k: v for k, v in errors.items() if not v < 1e-4}
    assert not bad, bad
