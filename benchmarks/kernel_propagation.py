"""Would a thing's mask kernel from one frame still find it in the next?

What breaks thing tubes in `benchmarks/video_tracking.py` is mostly objects that the network finds
in one frame and misses in the next. A segment's mask is its kernel applied to the frame's mask
embedding (paper Eq. 2), so a tracker could apply a lost track's kernel to the next frame's
embedding instead of waiting for a detection. This measures whether that would work, before any
tracker uses it: for every ground-truth thing found (a segment with IoU > 0.5) in frame t and
still in view in frame t+1, the kernel of its segment in t is applied to the embedding of t+1
(sigmoid > 0.5, upsampled as the post-processing does), and the IoU of that mask with the object
in t+1 is counted, separately for objects that frame t+1's own segments miss (flicker) and for
those they find. A tracker cannot see the IoU; what it could gate on is the propagated mask's own
score (mean probability over the mask, the post-processing's rescoring), given per outcome.

    python benchmarks/kernel_propagation.py --weights DEMO/train/model [--sequences 20] [--seed 1000]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from panopticdepth.data.synthetic import generate_sequence
from panopticdepth.modeling.mask_generation import mask_logits
from panopticdepth.modeling.outputs import PanopticDepthResult, Segment
from panopticdepth.modeling.postprocess import postprocess, upsample_probs
from panopticdepth.modeling.predictor import Predictor, to_rgb_chw
from panopticdepth.modeling.preprocess import preprocess

LABEL_DIVISOR = 1000


def matching_segment(result: PanopticDepthResult, gt_mask: np.ndarray, category: int) -> Segment | None:
    """The thing segment of `category` with IoU > 0.5 against `gt_mask`, if any."""
    pan = result.panoptic.cpu().numpy()
    for seg in result.segments:
        if seg.is_thing and seg.category == category:
            m = pan == seg.id
            union = int((m | gt_mask).sum())
            if union and int((m & gt_mask).sum()) / union > 0.5:
                return seg
    return None


def propagated_mask(kernel: torch.Tensor, embedding_chw: torch.Tensor, size) -> tuple[np.ndarray, float]:
    """`sigmoid(kernel . embedding) > 0.5` at the image size, and its mean probability (score)."""
    logits = mask_logits(kernel[None].float(), embedding_chw.float())
    probs = upsample_probs(torch.sigmoid(logits), size, size)[0].cpu().numpy()
    mask = probs > 0.5
    return mask, float(probs[mask].mean()) if mask.any() else 0.0


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / max(int((a | b).sum()), 1)


def propagated_iou(kernel: torch.Tensor, embedding_chw: torch.Tensor, size, gt_mask: np.ndarray) -> float:
    """IoU of the propagated mask (`propagated_mask`) with `gt_mask`."""
    return iou(propagated_mask(kernel, embedding_chw, size)[0], gt_mask)


def sequence_pairs(predictor: Predictor, frames) -> list[tuple[str, float, float]]:
    """(kind, IoU, score) per ground-truth thing found in a frame and present in the next; kind is
    'missed next' or 'found next' (by the next frame's own segments)."""
    images = [to_rgb_chw(f.image) for f in frames]
    batch, sizes = preprocess(images, predictor.cfg)
    with torch.inference_mode():  # one forward: the results and the embeddings from the same outputs
        outputs = predictor.model(batch)
        results = postprocess(outputs, predictor.model, predictor.cfg, sizes, with_instance_masks=False,
                              with_sem_seg=False)  # fmt: skip
    embeddings = outputs.mask_embedding
    out = []
    for t in range(len(frames) - 1):
        gt0, gt1 = frames[t].panoptic.astype(np.int64), frames[t + 1].panoptic.astype(np.int64)
        for gid in np.unique(gt0):
            if gid < LABEL_DIVISOR or gid % LABEL_DIVISOR == 0 or not (gt1 == gid).any():
                continue
            category = int(gid) // LABEL_DIVISOR
            seg = matching_segment(results[t], gt0 == gid, category)
            if seg is None or results[t].segment_kernels is None:
                continue
            kernel = results[t].segment_kernels[results[t].segments.index(seg)]
            mask, score = propagated_mask(kernel, embeddings[t + 1], sizes[t + 1])
            found = matching_segment(results[t + 1], gt1 == gid, category) is not None
            out.append(("found next" if found else "missed next", iou(mask, gt1 == gid), score))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="model folder")
    ap.add_argument("--sequences", type=int, default=20)
    ap.add_argument("--length", type=int, default=6)
    ap.add_argument("--size", default="128x256")
    ap.add_argument("--seed", type=int, default=1000, help="sequence seed (held out)")
    ap.add_argument("--frame-step", type=int, default=5, help="video frames between two frames at 17 Hz")
    args = ap.parse_args()
    h, w = (int(x) for x in args.size.lower().split("x"))
    predictor = Predictor.from_dir(args.weights, with_instance_masks=False, with_sem_seg=False)
    pairs = []
    for s in range(args.sequences):
        frames = generate_sequence(args.seed, s, args.length, h, w, frame_step=args.frame_step)
        pairs += sequence_pairs(predictor, frames)
    print(f"{args.sequences} sequences x {args.length} frames at {h}x{w}, seed {args.seed}")
    print()
    print(
        "| object in frame t+1 | objects | propagated mask IoU > 0.5 | median IoU "
        "| median score, IoU > 0.5 | median score, IoU <= 0.5 |"
    )
    print("|---|---|---|---|---|---|")
    for kind in ("missed next", "found next"):
        rows = [(iou, score) for k, iou, score in pairs if k == kind]
        if not rows:
            continue
        good = [score for iou, score in rows if iou > 0.5]
        bad = [score for iou, score in rows if iou <= 0.5]
        med = [f"{np.median(x):.2f}" if x else "-" for x in (good, bad)]
        print(
            f"| {kind} | {len(rows)} | {len(good)} ({100 * len(good) / len(rows):.0f} %) "
            f"| {np.median([iou for iou, _ in rows]):.2f} | {med[0]} | {med[1]} |"
        )


if __name__ == "__main__":
    main()
