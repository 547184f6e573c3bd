"""`evaluate --weights` on a sequence: ids are tracked before DVPQ counts windows of k frames."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from panopticdepth.cli.main import main
from panopticdepth.config import Config
from panopticdepth.modeling.outputs import PanopticDepthResult, Segment

H, W, N = 24, 32, 4


def _gt(i: int) -> np.ndarray:
    pan = np.zeros((H, W), np.int64)  # road
    pan[:6] = 10000  # sky
    pan[10:16, 2 + i : 10 + i] = 13001  # a car driving right
    pan[12:20, 20:24] = 11001  # a standing person
    pan[14:20, 25:29] = 11002  # another one
    return pan


class _Predictor:
    """Perfect segments, but the per-frame ids of the two persons swap every other frame."""

    def __init__(self) -> None:
        self.i = 0

    def predict(self, image):
        pan = _gt(self.i).copy()
        if self.i % 2:
            pan = np.where(pan == 11001, 11002, np.where(pan == 11002, 11001, pan))
        self.i += 1
        ids, counts = np.unique(pan, return_counts=True)
        segs = [
            Segment(int(p), int(p) // 1000, int(p) % 1000, p % 1000 > 0, 1.0, int(n))
            for p, n in zip(ids, counts)
        ]
        depth = torch.full((H, W), 10.0)
        return PanopticDepthResult(torch.from_numpy(pan), torch.from_numpy(pan // 1000), depth, segs)


@pytest.mark.parametrize("track, still", [(True, False), (False, False), (True, True)])
def test_tracking_before_dvpq(monkeypatch, tmp_path, track, still):
    """Tracked unless --no-track, or unless the frames are independent synthetic scenes (`still`)."""
    import panopticdepth.checkpoint.model_dir as model_dir
    import panopticdepth.data.build as build
    import panopticdepth.modeling.predictor as predictor

    samples = [
        {
            "image": torch.zeros(3, H, W, dtype=torch.uint8),
            "panoptic": torch.from_numpy(_gt(i)),
            "depth": torch.full((H, W), 10.0),
            "meta": {"sequence": "000000", "frame": i, "still": still},
        }
        for i in range(N)
    ]
    monkeypatch.setattr(model_dir, "load_model_dir", lambda *a, **k: (None, Config()))
    monkeypatch.setattr(build, "build_dataset", lambda data_cfg, split, train, **kw: samples)
    monkeypatch.setattr(predictor, "Predictor", lambda model, c, **kw: _Predictor())
    out = tmp_path / "r.json"
    argv = [
        "evaluate",
        "--weights",
        str(tmp_path),
        "--data",
        str(tmp_path),
        "--frames",
        "1,2",
        "--json",
        str(out),
    ]
    assert main(argv + ([] if track else ["--no-track"])) == 0
    got = json.loads(out.read_text())
    person = {
        k: next(c for c in got["runs"][f"k={k},lambda=-1"]["classes"] if c["name"] == "person")
        for k in (1, 2)
    }
    assert person[1]["pq"] == pytest.approx(100.0)  # single frames: ids do not matter
    if track and not still:
        assert person[2]["pq"] == pytest.approx(100.0)
    else:  # swapped ids break every 2-frame window of the persons
        assert person[2]["tp"] == 0
