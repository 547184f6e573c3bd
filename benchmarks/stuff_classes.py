"""Why a stuff class is never segmented: targets, position scores and masks, per class.

For a trained model folder and its dataset (e.g. the demo's `DIR/train/model` and `DIR/data`):

* targets: in how many training frames holding the class the stuff score map of the finest head
  level (stride 8, `training.targets.build_targets`, the real training code) marks it;
* scores: on the held-out frames, the highest position-head score the class gets anywhere
  (median over the frames holding it), and in how many frames it gets a kernel (it must be the
  argmax class of some position, with a score >= `inference.stuff_region_threshold` there);
* masks: in how many of those frames the final semantic map holds the class, and their IoU.

    python benchmarks/stuff_classes.py --weights DEMO/train/model --data DEMO/data [--num-train 40]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from panopticdepth.checkpoint.model_dir import load_model_dir
from panopticdepth.config.labels import model_label_space
from panopticdepth.data.build import build_dataset
from panopticdepth.modeling.postprocess import postprocess_image
from panopticdepth.modeling.preprocess import preprocess
from panopticdepth.training.targets import build_targets


def stuff_ids(cfg) -> list[int]:
    return list(range(cfg.model.first_thing_id))


def target_coverage(model, cfg, samples: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(frames holding each class, frames whose stride-8 stuff score map marks it)."""
    classes = stuff_ids(cfg)
    holding, marked = np.zeros(len(classes)), np.zeros(len(classes))
    for sample in samples:
        x, _ = preprocess([sample["image"]], cfg.model)
        with torch.inference_mode():
            outputs = model(x)
        targets = build_targets([sample], outputs, (int(x.shape[-2]), int(x.shape[-1])), cfg)
        scores = targets.levels[0].stuff_scores[0]
        for k, c in enumerate(classes):
            if bool((sample["semantic"] == c).any()):
                holding[k] += 1
                marked[k] += float(scores[c].max()) > 0
    return holding, marked


def held_out(model, cfg, samples: list[dict]) -> dict[str, np.ndarray]:
    """Per class over the frames holding it: median top score, frames with a kernel, frames where
    the class is in the output, summed intersection and union."""
    classes = stuff_ids(cfg)
    top: list[list[float]] = [[] for _ in classes]
    stats = {k: np.zeros(len(classes)) for k in ("holding", "above", "kernel", "output", "inter", "union")}
    for sample in samples:
        x, sizes = preprocess([sample["image"]], cfg.model)
        with torch.inference_mode():
            outputs = model(x)
            result, details = postprocess_image(
                outputs, 0, model, cfg.model, sizes[0], with_instance_masks=False, with_sem_seg=False
            )
        region = [torch.sigmoid(lv.region_logits[0].float()).flatten(1).amax(1) for lv in outputs.levels]
        best = torch.stack(region).amax(0)
        with_kernel = set(details.kernels.stuff.classes.tolist())
        gt, pred = sample["semantic"].numpy(), result.semantic.numpy()
        for k, c in enumerate(classes):
            g = gt == c
            if not g.any():
                continue
            p = pred == c
            top[k].append(float(best[c]))
            stats["holding"][k] += 1
            stats["above"][k] += float(best[c]) >= cfg.model.inference.stuff_region_threshold
            stats["kernel"][k] += c in with_kernel
            stats["output"][k] += bool(p.any())
            stats["inter"][k] += (g & p).sum()
            stats["union"][k] += (g | p).sum()
    stats["median_top"] = np.array([np.median(t) if t else np.nan for t in top])
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="model folder")
    ap.add_argument("--data", required=True, help="dataset root (the model's data.dataset layout)")
    ap.add_argument("--train-split", default="train")
    ap.add_argument("--val-split", default="val")
    ap.add_argument("--num-train", type=int, default=40, help="training frames for the target counts")
    args = ap.parse_args()
    model, cfg = load_model_dir(args.weights, overrides=[f"data.root={args.data}"])
    model.eval()
    train = build_dataset(cfg.data, args.train_split, train=False)
    val = build_dataset(cfg.data, args.val_split, train=False)
    holding, marked = target_coverage(model, cfg, [train[i] for i in range(min(args.num_train, len(train)))])
    stats = held_out(model, cfg, [val[i] for i in range(len(val))])
    names = model_label_space(cfg).names
    inf = cfg.model.inference
    print(
        f"targets: {min(args.num_train, len(train))} '{args.train_split}' frames; scores and masks: "
        f"{len(val)} '{args.val_split}' frames (top score: highest position-head score anywhere; a "
        f"kernel needs the class to be the argmax of a position with score >= {inf.stuff_region_threshold} "
        f"and a mean score there > {inf.stuff_threshold})"
    )
    print()
    print(
        "| class | targets mark it (train frames) | median top score "
        f"| top score >= {inf.stuff_region_threshold} | kernel | in the output | IoU |"
    )
    print("|---|---|---|---|---|---|---|")
    for k, c in enumerate(stuff_ids(cfg)):
        name = names[c]
        n = int(stats["holding"][k])
        iou = stats["inter"][k] / stats["union"][k] if stats["union"][k] else 0.0
        print(
            f"| {name} | {int(marked[k])} / {int(holding[k])} | {stats['median_top'][k]:.3f} | "
            f"{int(stats['above'][k])} / {n} | {int(stats['kernel'][k])} / {n} | "
            f"{int(stats['output'][k])} / {n} | {iou:.2f} |"
        )


if __name__ == "__main__":
    main()
