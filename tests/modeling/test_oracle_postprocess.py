"""Post-processing conformance with the original implementation, from its RECORDED head outputs.

Starts from the captured level outputs and embeddings of case_small (so it does not depend on the
network) and the thing/stuff projections of the recipe weights, and checks every recorded
post-processing intermediate and the final maps (oracle/case_small/README.md).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from panopticdepth.config.model import ModelConfig
from panopticdepth.modeling.depth_generator import depth_maps
from panopticdepth.modeling.kernel_producer import stuff_candidates, thing_candidates
from panopticdepth.modeling.kernel_projection import KernelProjection
from panopticdepth.modeling.outputs import HeadOutputs, LevelOutputs
from panopticdepth.modeling.postprocess import postprocess, postprocess_image, upsample_embedding

pytestmark = pytest.mark.oracle

LEVELS = ("p3", "p4", "p5", "p6", "p7")


def _linear(weights: dict, prefix: str) -> torch.nn.Linear:
    w = torch.as_tensor(np.asarray(weights[f"{prefix}.weight"]), dtype=torch.float32)
    b = torch.as_tensor(np.asarray(weights[f"{prefix}.bias"]), dtype=torch.float32)
    lin = torch.nn.Linear(w.shape[1], w.shape[0])
    lin.weight.data = w.reshape(w.shape[0], -1).clone()
    lin.bias.data = b.clone()
    return lin


def _config(case: dict, official: bool = False) -> ModelConfig:
    """ModelConfig with the thresholds the case ran with (or the yaml's own for `official_*`)."""
    thr = case["config"]["thresholds_in_effect"]
    cfg = ModelConfig()
    inf = cfg.inference
    inf.thing_threshold = thr["MODEL.POSITION_HEAD.THING.THRES"]
    inf.top_num = thr["MODEL.POSITION_HEAD.THING.TOP_NUM"]
    inf.stuff_threshold = thr["MODEL.POSITION_HEAD.STUFF.THRES"]
    inf.mask_threshold = thr["MODEL.INFERENCE.INST_THRES"]
    inf.similarity_threshold = thr["MODEL.INFERENCE.SIMILAR_THRES"]
    inf.class_specific = thr["MODEL.INFERENCE.CLASS_SPECIFIC"]
    inf.combine_overlap_threshold = thr["MODEL.INFERENCE.COMBINE.OVERLAP_THRESH"]
    inf.combine_instance_threshold = thr["MODEL.INFERENCE.COMBINE.INST_THRESH"]
    inf.stuff_area_limit = thr["MODEL.INFERENCE.COMBINE.STUFF_AREA_LIMIT"]
    if official:
        inf.stuff_area_limit = 2048
        inf.combine_instance_threshold = 0.2
    return cfg


@pytest.fixture(scope="module")
def recorded(oracle_case, oracle_weights):
    a = oracle_case["arrays"]

    def t(name: str) -> torch.Tensor:
        return torch.from_numpy(a[name])[None]

    levels = [
        LevelOutputs(
            t(f"level_{p}_center_logits"),
            t(f"level_{p}_region_logits"),
            t(f"level_{p}_kernel_weights"),
            t(f"level_{p}_depth_kernels"),
        )
        for p in LEVELS
    ]
    outputs = HeadOutputs(levels, t("encode_feat"), t("encode_depths"))
    model = KernelProjection(
        _linear(oracle_weights, "thing_generator.embed_extractor"),
        _linear(oracle_weights, "stuff_generator.embed_extractor"),
    )
    size = tuple(a["input_image_bgr_chw_uint8"].shape[1:])
    with torch.no_grad():
        result, details = postprocess_image(outputs, 0, model, _config(oracle_case), size)
    return {"a": a, "outputs": outputs, "model": model, "size": size, "result": result, "details": details}


def _close(actual, expected: np.ndarray, atol: float, what: str) -> None:
    actual = np.asarray(actual.detach().cpu() if isinstance(actual, torch.Tensor) else actual)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max(initial=0.0)
    assert diff < atol, f"{what}: max abs diff {diff}"


def _equal(actual, expected: np.ndarray, what: str) -> None:
    actual = np.asarray(actual.detach().cpu() if isinstance(actual, torch.Tensor) else actual)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert (actual == expected).all(), f"{what}: {(actual != expected).sum()} entries differ"


def test_level_candidates(recorded, oracle_case):
    a = recorded["a"]
    cfg = _config(oracle_case).inference
    outputs = recorded["outputs"]
    for i, p in enumerate(LEVELS):
        things, positions = thing_candidates(outputs.levels[i], 0, cfg.pool_sizes[i], cfg)
        _close(things.scores, a[f"level_{p}_thing_cand_score"], 1e-6, f"{p} thing scores")
        _equal(things.classes, a[f"level_{p}_thing_cand_class"], f"{p} thing classes")
        _equal(positions, a[f"level_{p}_thing_cand_flat_index"], f"{p} thing positions")
        stuff = stuff_candidates(outputs.levels[i], 0, cfg)
        _equal(stuff.classes, a[f"level_{p}_stuff_cand_class"], f"{p} stuff classes")
        _close(stuff.scores, a[f"level_{p}_stuff_cand_score"], 1e-5, f"{p} stuff scores")
        scale = np.abs(a[f"level_{p}_stuff_cand_kernel_raw"]).max()
        _close(stuff.kernels, a[f"level_{p}_stuff_cand_kernel_raw"], 1e-4 * scale, f"{p} stuff kernels")
        _close(stuff.depth_kernels, a[f"level_{p}_stuff_cand_depth_kernel"], 1e-4, f"{p} stuff depth kernels")


def test_kernels_before_and_after_fusion(recorded):
    a, k = recorded["a"], recorded["details"].kernels
    for name, ks in (("thing", k.things_prefusion), ("stuff", k.stuff_prefusion)):
        _equal(ks.classes, a[f"{name}_classes_prefusion"], f"{name} classes prefusion")
        _close(ks.scores, a[f"{name}_scores_prefusion"], 1e-5, f"{name} scores prefusion")
        _close(ks.kernels, a[f"{name}_kernels_prefusion"], 1e-4, f"{name} kernels prefusion")
        _close(
            ks.depth_kernels, a[f"{name}_depth_kernels_prefusion"], 1e-4, f"{name} depth kernels prefusion"
        )
    for name, ks in (("thing", k.things), ("stuff", k.stuff)):
        _equal(ks.classes, a[f"{name}_classes_fused"], f"{name} classes fused")
        _close(ks.scores, a[f"{name}_scores_fused"], 1e-5, f"{name} scores fused")
        _close(ks.kernels, a[f"{name}_kernels_fused"], 1e-4, f"{name} kernels fused")
        _close(ks.depth_kernels, a[f"{name}_depth_kernels_fused"], 1e-4, f"{name} depth kernels fused")


def test_mask_logits_and_process_inst(recorded):
    a, d = recorded["a"], recorded["details"]
    _close(d.thing_mask_logits, a["thing_mask_logits"], 1e-3, "thing mask logits")
    _close(d.stuff_mask_logits, a["stuff_mask_logits"], 1e-3, "stuff mask logits")
    _equal(d.instances.classes, a["process_inst_classes"], "process_inst classes")
    _close(d.instances.scores, a["process_inst_scores"], 1e-4, "process_inst scores")
    _close(d.instances.depth_kernels, a["process_inst_depth_kernels"], 1e-4, "process_inst depth kernels")


def test_combine_step(recorded, oracle_case):
    a, d = recorded["a"], recorded["details"]
    cfg = _config(oracle_case)
    assert d.combine_kept == int(a["combine_thing_kept_count"])
    _equal(d.merge.accepted_things, a["combine_accepted_thing_kept_rank"], "accepted things")
    # case README: "trainId 2 area 1401 accepted, trainId 9 area 12 rejected" (limit 1024).
    assert d.merge.accepted_stuff.tolist() == [2]
    ids = (cfg.num_classes + 2 + np.arange(d.merge.accepted_things.numel())).astype(np.int32)
    _equal(ids, a["combine_accepted_thing_segment_id"], "thing segment ids")
    train_ids = (d.instances.classes[d.merge.accepted_things] + cfg.first_thing_id).numpy().astype(np.int32)
    _equal(train_ids, a["combine_accepted_thing_trainId"], "thing train ids")
    _close(d.instances.scores[d.merge.accepted_things], a["combine_accepted_thing_score"], 1e-4, "scores")
    # Depth embedding at full resolution and the per-segment depth maps (Eq. 3 with the code's T2).
    emb = upsample_embedding(recorded["outputs"].depth_embedding[0], recorded["size"], recorded["size"], True)
    _close(emb, a["combine_encode_depth_fullres"], 1e-4, "full-resolution depth embedding")
    thing_maps = depth_maps(d.instances.depth_kernels[d.merge.accepted_things], emb, cfg.depth)
    _close(thing_maps, a["combine_thing_depth_maps_accepted"], 1e-3, "thing depth maps")
    stuff_maps = depth_maps(d.kernels.stuff.depth_kernels, emb, cfg.depth)
    _equal(d.kernels.stuff.classes, a["combine_stuff_classes"], "stuff classes")
    _close(stuff_maps, a["combine_stuff_depth_maps"], 1e-3, "stuff depth maps")


def _check_final(result, a: dict, prefix: str) -> None:
    seg = a[f"{prefix}final_panoptic_2ch_segment_id"]
    cat = a[f"{prefix}final_panoptic_2ch_category"]
    _equal(result.segment_ids, seg, "segment ids")
    _equal(result.semantic, cat, "category")
    _equal(result.semantic * 1000 + result.segment_ids, a[f"{prefix}final_panoptic_combined"], "combined")
    # Library convention: instance = segment id - 20 for things, 0 for stuff.
    inst = np.where(seg > 20, seg - 20, 0)
    _equal(result.panoptic, cat * 1000 + inst, "panoptic ids")
    agree = (result.segment_ids.numpy() == seg) & (result.semantic.numpy() == cat)
    diff = np.abs(result.depth.numpy() - a[f"{prefix}final_depth"])[agree]
    assert diff.max() < 1e-3, f"depth max abs diff {diff.max()}"
    areas = {s.id: s.area for s in result.segments}
    ids, counts = np.unique(cat * 1000 + inst, return_counts=True)
    assert areas == dict(zip(ids.tolist(), counts.tolist()))


def test_final_maps(recorded):
    a, result = recorded["a"], recorded["result"]
    _check_final(result, a, "")
    _close(result.sem_seg_probs, a["final_sem_seg_probs"], 1e-4, "sem_seg probabilities")
    _equal(result.instance_classes, a["final_instances_classes"].astype(np.int64), "instance classes")
    _close(result.instance_scores, a["final_instances_scores"], 1e-4, "instance scores")
    _equal(result.instance_masks.sum((1, 2)), a["final_instances_mask_area"], "instance mask areas")
    # Boxes from the binary masks as Detectron2's BitMasks: (x_min, y_min, x_max + 1, y_max + 1).
    boxes = []
    for mask in result.instance_masks.numpy():
        ys, xs = np.nonzero(mask)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if xs.size else [0, 0, 0, 0])
    _equal(np.array(boxes, dtype=np.float32), a["final_instances_boxes_xyxy"], "instance boxes")


def test_final_maps_with_yaml_thresholds(recorded, oracle_case):
    with torch.no_grad():
        (result,) = postprocess(
            recorded["outputs"], recorded["model"], _config(oracle_case, True), [recorded["size"]]
        )
    _check_final(result, recorded["a"], "official_thresholds_")
