"""What bfloat16 autocast costs in accuracy, per path, on the oracle case (original checkpoint format).

Converts the oracle's stand-in weights with `panopticdepth convert`, runs the case image in float32
(the conformant path) and under bf16 autocast, and prints how much of the fp32 result survives:
semantic labels, instances (same class and mask IoU > 0.5) and depth. Paths:

* `predict --bf16` (inference; on the CPU the native deformable kernel samples in float32 and runs a
  bfloat16 GEMM);
* the training forward (gradients on: torchvision's kernel in float32 inside bf16 autocast), i.e.
  what `solver.amp=bf16` trains with.

    python benchmarks/bf16_accuracy.py [--oracle ../shared/oracle]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
CASE_YAML = "MODEL:\n  DEPTH_ON: True\n  INFERENCE:\n    COMBINE: {STUFF_AREA_LIMIT: 1024}\n"


def convert_oracle(oracle: Path, work: Path) -> Path:
    from panopticdepth.cli.main import main

    spec = importlib.util.spec_from_file_location("weights_recipe", oracle / "weights_recipe.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    weights = recipe.make_weights(json.loads((oracle / "reference_keys.json").read_text()))
    torch.save({"model": {k: torch.from_numpy(v) for k, v in weights.items()}}, work / "original.pth")
    (work / "case.yaml").write_text(CASE_YAML)
    args = ["convert", "--original", str(work / "original.pth"), "--original-config", str(work / "case.yaml")]
    if main([*args, "--output", str(work / "model")]) != 0:
        raise SystemExit("convert failed")
    return work / "model"


def run(model_dir: Path, image: np.ndarray, bf16: bool, grad: bool):
    from panopticdepth.modeling.postprocess import postprocess
    from panopticdepth.modeling.predictor import Predictor
    from panopticdepth.modeling.preprocess import preprocess

    predictor = Predictor.from_dir(model_dir)
    if not grad:
        predictor.bf16 = bf16
        return predictor.predict(image)
    model = predictor.model
    for p in model.parameters():
        p.requires_grad_(True)
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    batch, sizes = preprocess([x], predictor.cfg)
    with torch.enable_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        outputs = model(batch)
    with torch.no_grad():
        return postprocess(outputs, model, predictor.cfg, sizes)[0]


def agreement(ref, got) -> dict:
    sem = float((ref.semantic == got.semantic).float().mean())
    matched = 0
    things = [s for s in ref.segments if s.is_thing]
    for s in things:
        mask = ref.panoptic == s.id
        overlap = got.panoptic[mask]
        ids, counts = torch.unique(overlap, return_counts=True)
        best = int(ids[counts.argmax()])
        if best // 1000 == s.category and best % 1000 > 0:
            inter = int(counts.max())
            union = int(mask.sum()) + int((got.panoptic == best).sum()) - inter
            matched += inter / union > 0.5
    valid = ref.depth > 0
    rel = (got.depth - ref.depth).abs()[valid] / ref.depth[valid]
    return {
        "semantic": sem,
        "instances": f"{matched}/{len(things)}",
        "depth_median": float(rel.median()),
        "depth_within_5": float((rel < 0.05).float().mean()),
    }


def main() -> None:
    from panopticdepth.io.formats import read_image_rgb

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--oracle", default=str(REPO.parent / "shared" / "oracle"))
    args = ap.parse_args()
    oracle = Path(args.oracle)
    if not (oracle / "case_small").is_dir():
        raise SystemExit(f"{oracle}: oracle folder not found (pass --oracle)")
    image = read_image_rgb(oracle / "case_small" / "input.png")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = convert_oracle(oracle, Path(tmp))
        print("| path | semantic labels kept | instances kept | depth: median rel. diff | depth within 5 % |")
        print("|---|---|---|---|---|")
        for name, grad in (
            ("predict --bf16 (inference)", False),
            ("training forward (solver.amp=bf16)", True),
        ):
            ref = run(model_dir, image, bf16=False, grad=grad)
            got = run(model_dir, image, bf16=True, grad=grad)
            a = agreement(ref, got)
            print(
                f"| {name} | {100 * a['semantic']:.1f} % | {a['instances']} | "
                f"{100 * a['depth_median']:.2f} % | {100 * a['depth_within_5']:.1f} % |"
            )


if __name__ == "__main__":
    main()
