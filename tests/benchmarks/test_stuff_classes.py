"""benchmarks/stuff_classes.py: the target counts follow the real targets; the per-class counts are
consistent (a kernel needs a score >= the region threshold, both need the class in the frame)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from panopticdepth.config import load_config
from panopticdepth.data.sample import make_sample
from panopticdepth.modeling import build_model

from . import load_benchmark

REPO = Path(__file__).resolve().parents[2]


def small_model():
    cfg = load_config(REPO / "configs/synthetic/small_cpu.yaml", ["model.backbone.pretrained="])
    cfg.model.num_classes, cfg.model.num_thing_classes, cfg.model.first_thing_id = 19, 8, 11
    torch.manual_seed(0)
    return build_model(cfg.model).eval(), cfg


def striped_sample(pole_columns: slice | None) -> dict:
    """64x128: sky (10) above road (0), a car (13) box, and a pole (5) in `pole_columns`."""
    h, w = 64, 128
    pan = np.full((h, w), 10 * 1000, np.int64)
    pan[32:] = 0
    pan[40:50, 20:40] = 13 * 1000 + 1
    if pole_columns is not None:
        pan[10:60, pole_columns] = 5 * 1000
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    depth = np.full((h, w), 10.0, np.float32)
    return make_sample(image, pan, depth, {"image_id": "striped"})


def test_target_coverage_counts_what_the_targets_mark():
    mod = load_benchmark("stuff_classes")
    model, cfg = small_model()
    # The x4 bilinear reduction reads columns 4j+1 and 4j+2
    # (docs/original_implementation.md#bilinear-no-antialias), the stride-8 map then averages two
    # 1/4-res columns and drops values under 0.5: a 1 px pole in column 3 is never read, a 2 px pole
    # in columns 61-62 fills one 1/4-res column and survives.
    thin, wide = striped_sample(slice(3, 4)), striped_sample(slice(61, 63))
    holding, marked = mod.target_coverage(model, cfg, [striped_sample(None), thin, wide])
    assert holding[0] == holding[10] == 3 and marked[0] == marked[10] == 3
    assert holding[5] == 2 and marked[5] == 1
    _, marked_thin = mod.target_coverage(model, cfg, [thin])
    assert marked_thin[5] == 0
    assert holding[1] == marked[1] == 0  # sidewalk is nowhere


def test_held_out_counts_are_consistent():
    mod = load_benchmark("stuff_classes")
    model, cfg = small_model()
    stats = mod.held_out(model, cfg, [striped_sample(None), striped_sample(slice(70, 72))])
    assert stats["holding"][0] == stats["holding"][10] == 2 and stats["holding"][5] == 1
    assert np.all(stats["kernel"] <= stats["above"]) and np.all(stats["above"] <= stats["holding"])
    assert np.all(stats["output"] <= stats["holding"])
    assert np.all(stats["inter"] <= stats["union"])
    assert np.isnan(stats["median_top"][1]) and 0.0 <= stats["median_top"][0] <= 1.0
