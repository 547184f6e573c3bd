"""Periodic evaluation scores SemKITTI data in SemKITTI ids under the SemKITTI protocol (before label
spaces it applied that protocol to library ids and scored every pixel as class 0)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from panopticdepth.config import load_config
from panopticdepth.config.labels import apply_label_space
from panopticdepth.label_space import CITYSCAPES, SEMKITTI
from panopticdepth.training import periodic_eval


class _Dummy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, batch):
        return batch


def _samples():
    car, person, road = (SEMKITTI.train_id(n) for n in ("car", "person", "road"))
    pan = np.full((8, 12), 32000, np.int64)
    pan[:3] = road * 1000
    pan[3:5, :6] = car * 1000 + 1
    pan[3:5, 6:] = car * 1000 + 2
    pan[5:7, :4] = person * 1000 + 1
    depth = np.where(pan != 32000, 10.0, 0.0).astype(np.float32)
    return [{"image": torch.zeros(3, 8, 12, dtype=torch.uint8), "panoptic": torch.from_numpy(pan),
             "depth": torch.from_numpy(depth)}]  # fmt: skip


def _perfect(monkeypatch, samples, spoil=False):
    """postprocess returns the ground truth (optionally with person pixels relabelled as car)."""

    def fake_postprocess(outputs, model, m, sizes, **kw):
        pan = samples[0]["panoptic"].clone()
        if spoil:
            pan[5:7, :4] = SEMKITTI.train_id("car") * 1000 + 3
        return [SimpleNamespace(panoptic=pan, depth=samples[0]["depth"])]

    import panopticdepth.modeling.postprocess as pp

    monkeypatch.setattr(pp, "postprocess", fake_postprocess)


def test_semkitti_periodic_evaluation_uses_semkitti_classes(monkeypatch):
    cfg = load_config(None)
    apply_label_space(cfg, SEMKITTI)
    samples = _samples()
    _perfect(monkeypatch, samples)
    summary = periodic_eval.evaluate_model(_Dummy(), cfg, samples)
    assert summary["dataset"] == "semkitti-dps"
    by_name = {c["name"]: c for c in summary["classes"]}
    assert by_name["car"]["id"] == 0 and by_name["car"]["isthing"] and by_name["car"]["tp"] == 2
    assert by_name["person"]["tp"] == 1 and by_name["road"]["tp"] == 1 and not by_name["road"]["isthing"]
    assert summary["pq"]["pq"] > 0
    _perfect(monkeypatch, samples, spoil=True)
    spoiled = {c["name"]: c for c in periodic_eval.evaluate_model(_Dummy(), cfg, samples)["classes"]}
    assert spoiled["person"]["fn"] == 1 and spoiled["car"]["fp"] == 1


def test_cityscapes_periodic_evaluation_unchanged(monkeypatch):
    cfg = load_config(None)
    samples = _samples()
    _perfect(monkeypatch, samples)
    summary = periodic_eval.evaluate_model(_Dummy(), cfg, samples)
    assert summary["dataset"] == "cityscapes-dps"
    names = [c["name"] for c in summary["classes"]]
    assert names == list(CITYSCAPES.names)
