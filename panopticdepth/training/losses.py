"""Training losses of PanopticDepth (paper Eq. 6-9; docs/original_implementation.md#focal-loss and the loss
sections after it).

`compute_losses(outputs, targets, projection, cfg)` returns the original's loss dict, weights already
applied (the engine sums the values):

* `loss_pos_th`  focal loss on the centre heat maps / max(N_th, 1)
  (docs/original_implementation.md#focal-loss)
* `loss_pos_st`  focal loss on the region maps, per-pixel mean per (image, class) / B
* `loss_seg_th`  weighted dice over the 7 positives of every (instance, level) / N_th  (6.2)
* `loss_seg_st`  dice of every (image, level, present class) / N_st                 (6.3)
* `loss_depth`   pixel-level L~ = 5 SI + REL pooled over things and stuff           (6.4, Eq. 6-8)
* `loss_depth_ins` instance-level L~ on the predicted shift                       (6.4, Eq. 9)

Depth variants (Table 3) follow `cfg.model.depth`: `mode="pixel"` (variant A) supervises
`HeadOutputs.pixel_depth` over all valid pixels and has no instance loss; `normalization` T2 / T1 /
none goes through `depth_generator.depth_from_response`; the instance loss (`cfg.train.loss.
instance_depth_loss`) supervises the shift `d_max/2 * sigma(v_s)` with the instance's mean depth
(T2, the original) or its min depth (T1, Eq. 4); with `none` there is no shift and no instance loss.
A disabled term is absent from the dict; depth off -> no depth terms at all.

Per-GPU batch > 1 (the original asserts 1 for depth, docs/original_implementation.md#per-gpu-depth-batch):
both depth losses are computed per image and averaged over the B images (an image without any valid pixel
contributes 0), i.e. exactly
what data parallelism with one image per GPU optimises. N_th / N_st stay per-batch counts, as the
original's per-GPU normalisers (docs/original_implementation.md#loss-normalisers).

Invalid depth (0) never enters; empty sets give a zero that stays connected to the graph, and the
REL square root has a finite gradient at 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import sigmoid_focal_loss

from ..config.model import DepthConfig
from ..config.schema import Config
from ..errors import PanopticDepthError
from ..modeling.depth_generator import depth_from_response
from ..modeling.kernel_projection import KernelProjection
from ..modeling.outputs import HeadOutputs, LevelOutputs
from ..utils.device import index_tensor
from .kernel_gather import StuffKernels, ThingKernels, gather_stuff_kernels, gather_thing_kernels
from .targets import Targets

# clamp before the log, kills the gradient of dead (0) predictions
# (docs/original_implementation.md#depth-clamp)
DEPTH_EPS = 1e-6
DICE_EPS = 1e-8
# device types on which the depth loss compacts the supervised (segment, pixel) pairs: a host wait
# costs nothing there, and the dense alternative is most of the loss's time (`_selected_pairs`)
COMPACT_DEPTH_DEVICES = ("cpu",)


def graph_zero(*tensors: torch.Tensor | None) -> torch.Tensor:
    """An exact 0 that depends on the given tensors, so backward() still reaches their graph."""
    parts = [t.sum() * 0.0 for t in tensors if t is not None]
    return torch.stack(parts).sum()


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Element-wise RetinaNet focal loss with soft targets (docs/original_implementation.md#focal-loss).

    torchvision's `sigmoid_focal_loss` computes exactly `alpha_t * BCE(x, t) * (1 - p_t)^gamma` with
    `p_t = p t + (1-p)(1-t)` and `alpha_t = alpha t + (1-alpha)(1-t)`, valid for t in [0, 1].
    """
    return sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma, reduction="none")


def dice_loss(probs_nk: torch.Tensor, targets_nk: torch.Tensor) -> torch.Tensor:
    """1 - 2 sum(p t) / max(sum p^2 + sum t^2, 1e-8) over the last dim
    (docs/original_implementation.md#weighted-dice)."""
    denom = (probs_nk**2).sum(-1) + (targets_nk**2).sum(-1)
    return 1.0 - 2.0 * (probs_nk * targets_nk).sum(-1) / denom.clamp(min=DICE_EPS)


def position_losses(outputs: HeadOutputs, targets: Targets, cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss_pos_th, loss_pos_st) (docs/original_implementation.md#focal-loss,
    docs/original_implementation.md#loss-normalisers)."""
    lc = cfg.train.loss
    th, st = [], []
    for level, tgt in zip(outputs.levels, targets.levels):
        th.append(focal_loss(level.center_logits, tgt.center, lc.focal_alpha, lc.focal_gamma).sum())
        per_class = focal_loss(level.region_logits, tgt.stuff_scores, lc.focal_alpha, lc.focal_gamma)
        if tgt.labeled is None:
            st.append(per_class.flatten(2).mean(-1).sum())
        else:  # sparse labels: the mean over the labelled positions (docs/label_spaces.md#sparse-labels)
            weight = tgt.labeled.flatten(2)  # (B, 1, h*w)
            per_image = (per_class.flatten(2) * weight).sum(-1) / weight.sum(-1).clamp(min=1)
            st.append(per_image.sum())
    n_th = max(targets.num_things, 1)
    b = max(targets.batch_size, 1)
    return lc.position_thing * sum(th) / n_th, lc.position_stuff * sum(st) / b


def thing_mask_logits(things: ThingKernels, embedding_bchw: torch.Tensor) -> torch.Tensor:
    """Dynamic convolution K . E^m -> (B, N, P, H4*W4) logits
    (docs/original_implementation.md#dynamic-conv)."""
    b, n, p, c = things.kernels.shape
    flat = embedding_bchw.reshape(b, c, -1)
    return torch.bmm(things.kernels.reshape(b, n * p, c), flat).view(b, n, p, -1)


@dataclass
class SlotIndex:
    """Flat (image, slot) positions of the valid thing and stuff slots, as device index tensors;
    built once per batch from the targets' host counts, so no loss compacts a boolean mask (which
    would make the host wait for the device)."""

    things: torch.Tensor  # (N_th,) into the (B * N) thing slots, row-major
    stuff: torch.Tensor  # (N_st,) into the (B * S) stuff slots

    @classmethod
    def build(cls, targets: Targets, things: ThingKernels, stuff: StuffKernels) -> SlotIndex:
        th, st = targets.thing_slots(), targets.stuff_slots()
        n, s = things.valid.shape[1], stuff.valid.shape[1]
        flat = [b * n + j for b, js in enumerate(th) for j in js]
        flat += [b * s + j for b, js in enumerate(st) for j in js]
        both = index_tensor(flat, things.kernels.device)
        n_th = sum(len(x) for x in th)
        return cls(both[:n_th], both[n_th:])


def thing_segment_loss(
    things: ThingKernels,
    logits_bnpk: torch.Tensor,
    cfg: Config,
    index: torch.Tensor | None = None,
    labeled_bk: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted dice over the P positives / max(N_th, 1); exact graph-connected 0 if N_th = 0.

    `index`: flat positions of the valid slots (`SlotIndex.things`); without it they are found
    from `things.valid` (one host wait). `labeled_bk`: (B, K) 0/1, sparse labels: the dice sees
    only labelled pixels.
    """
    b, n, p, k = logits_bnpk.shape
    if index is None:
        index = torch.nonzero(things.valid.flatten()).flatten()
    n_th = index.numel()
    if n_th == 0:
        return graph_zero(logits_bnpk, things.weights)
    probs = logits_bnpk.reshape(b * n, p, k).index_select(0, index).sigmoid()  # (n_th, P, K)
    target = things.masks.reshape(b * n, -1).index_select(0, index)  # (n_th, K)
    if labeled_bk is not None:
        keep = labeled_bk.index_select(0, torch.div(index, n, rounding_mode="floor"))  # (n_th, K)
        probs, target = probs * keep.unsqueeze(1), target * keep
    weights = things.weights.reshape(b * n, p).index_select(0, index)
    weights = weights / weights.sum(-1, keepdim=True).clamp(min=DICE_EPS)
    dice = dice_loss(probs, target.unsqueeze(1).expand_as(probs))
    return cfg.train.loss.segment * (dice * weights).sum() / max(n_th, 1)


def stuff_segment_loss(
    stuff: StuffKernels,
    embedding_bchw: torch.Tensor,
    cfg: Config,
    index: torch.Tensor | None = None,
    labeled_bk: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dice of every present (image, level, class) entry / max(N_st, 1); `index` and `labeled_bk`
    as for things."""
    b, s, c = stuff.kernels.shape
    logits = torch.bmm(stuff.kernels, embedding_bchw.reshape(b, c, -1))  # (B, S, K)
    if index is None:
        index = torch.nonzero(stuff.valid.flatten()).flatten()
    n_st = index.numel()
    if n_st == 0:
        return graph_zero(logits)
    probs = logits.reshape(b * s, -1).index_select(0, index).sigmoid()
    target = stuff.labels.reshape(b * s, -1).index_select(0, index)
    if labeled_bk is not None:
        keep = labeled_bk.index_select(0, torch.div(index, s, rounding_mode="floor"))
        probs, target = probs * keep, target * keep
    dice = dice_loss(probs, target)
    return cfg.train.loss.segment * dice.sum() / max(n_st, 1)


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt with a finite (zero) gradient at 0; identical value elsewhere."""
    positive = x > 0
    return torch.where(
        positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x)
    )


def depth_loss(gt: torch.Tensor, pred: torch.Tensor, si_factor: float = 5.0) -> torch.Tensor:
    """L~ = si_factor * SI + REL over paired 1-d tensors (Eq. 6,
    docs/original_implementation.md#depth-si-factor).

    SI = mean(d^2) - (sum d)^2 / n^2 with d = log g - log p; REL = sqrt(mean((1 - p/g)^2)); both g and
    p clamped to >= 1e-6 first (docs/original_implementation.md#depth-clamp). An empty input gives a
    graph-connected 0.
    """
    n = gt.numel()
    if n == 0:
        return graph_zero(pred)
    g = gt.clamp(min=DEPTH_EPS)
    p = pred.clamp(min=DEPTH_EPS)
    diff = torch.log(g) - torch.log(p)
    si = (diff**2).mean() - diff.sum() ** 2 / (n * n)
    rel = _safe_sqrt(((1.0 - p / g) ** 2).mean())
    return si * si_factor + rel


def _shift_prediction(depth_kernels: torch.Tensor, cfg: Config) -> torch.Tensor:
    """Predicted shift d_max/2 * sigma(v_s) (44 m for the released model;
    docs/original_implementation.md#depth-t2)."""
    return 0.5 * cfg.model.depth.max_depth * torch.sigmoid(depth_kernels[..., 0])


def _per_image_depth_loss(parts: list[tuple], b: int, si_factor: float) -> torch.Tensor:
    """(B,) `depth_loss` of each image's selected entries (weight true; none selected: 0), from
    per-image sums over `parts` without compacting them (no host wait), each a
    (gt, pred, weight, image) of flat entries; `image` holds each entry's image, or is None when
    the entries are laid out image by image (B equal blocks: summed by a reshape, which on an
    accelerator stays deterministic)."""
    sums = [0.0, 0.0, 0.0, 0.0]  # count, sum d^2, sum d, sum (1 - p/g)^2 (Eq. 6)
    for gt, pred, weight, image in parts:
        w = weight.to(pred.dtype)
        g = gt.clamp(min=DEPTH_EPS)
        p = pred.clamp(min=DEPTH_EPS)
        diff = (torch.log(g) - torch.log(p)) * w
        for i, values in enumerate((w, diff**2, diff, ((1.0 - p / g) ** 2) * w)):
            if image is None:
                sums[i] = sums[i] + values.view(b, -1).sum(1)
            else:
                sums[i] = sums[i] + values.new_zeros(b).index_add(0, image, values)
    n = sums[0].clamp(min=1.0)
    si = sums[1] / n - sums[2] ** 2 / (n * n)
    return si * si_factor + _safe_sqrt(sums[3] / n)


def _selected_pairs(
    kernels_brq: torch.Tensor,
    sel_brk: torch.Tensor,
    emb_bek: torch.Tensor,
    depth_bk: torch.Tensor,
    cfg: DepthConfig,
    compact: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(true depth, predicted depth, weight, image) of the (kernel row, pixel) pairs that `sel_brk`
    selects, flat, from each image's R rows of depth kernels met with its embedding in one batched
    matmul (the maps of `depth_maps`, Eq. 3).

    Dense: every pair, unselected ones weighted 0 (no host wait, for accelerators; image None: the
    pairs are laid out image by image). Compact: only the selected pairs, all weighted 1; the same
    values and loss up to summation order, without the element-wise work on the ~95 % of pairs a
    thing's mask leaves out (the CPU path; benchmarks/README.md, training step).
    """
    b, r, q = kernels_brq.shape
    k = depth_bk.shape[1]
    response_rk = torch.bmm(kernels_brq[..., 2:], emb_bek).reshape(b * r, k)
    kernels_rq = kernels_brq.reshape(b * r, q)
    if not compact:
        pred = depth_from_response(response_rk, kernels_rq[:, 0:1], kernels_rq[:, 1:2], cfg)
        gt = depth_bk[:, None].expand(b, r, k).reshape(-1)
        return gt, pred.reshape(-1), sel_brk.reshape(-1), None
    flat = sel_brk.reshape(-1).nonzero().squeeze(1)
    rows, cols = torch.div(flat, k, rounding_mode="floor"), flat % k
    pred = depth_from_response(
        response_rk.reshape(-1).index_select(0, flat),
        kernels_rq[:, 0].index_select(0, rows),
        kernels_rq[:, 1].index_select(0, rows),
        cfg,
    )
    image = torch.div(rows, r, rounding_mode="floor")
    gt = depth_bk.reshape(-1).index_select(0, image * k + cols)
    return gt, pred, torch.ones_like(flat, dtype=torch.bool), image


def instance_depth_losses(
    outputs: HeadOutputs,
    targets: Targets,
    things: ThingKernels,
    stuff: StuffKernels,
    cfg: Config,
    compact: bool | None = None,
) -> dict[str, torch.Tensor]:
    """Instance-wise depth: pooled pixel loss and shift loss, per image, mean over B (Eq. 6-9).

    The whole batch at once: every (image, slot) row of kernels meets its image's embedding in one
    batched matmul; a row takes part where it is an assigned thing slot with at least one
    (mask > 0) & (depth > 0) pixel, or a present stuff class with depth pixels; per-image sums
    give each image its own loss. `compact` (default: on the devices of `COMPACT_DEPTH_DEVICES`)
    evaluates the depth maps only at the pixels each row supervises; otherwise every selection is
    a weight, not a compaction, so nothing waits for the device (`_selected_pairs`).
    """
    lc, dc = cfg.train.loss, cfg.model.depth
    emb = outputs.depth_embedding
    if emb is None or things.depth_kernels is None or stuff.depth_kernels is None:
        raise PanopticDepthError(
            "instance depth losses need depth_embedding and depth kernels from the network"
        )
    depth = targets.depth
    compact = depth.device.type in COMPACT_DEPTH_DEVICES if compact is None else compact
    b, n, p, q = things.depth_kernels.shape
    depth_bk = depth.flatten(1)  # (B, K)
    valid_bk = depth_bk > 0
    emb_bek = emb.flatten(2)  # (B, E, K)
    k = depth_bk.shape[1]
    # things: assigned slots with at least one (mask > 0) & (depth > 0) pixel, P kernels each
    kept_bn = things.valid & (things.depth_count > 0)
    sel_bnk = (things.masks.flatten(2) > 0) & valid_bk[:, None] & kept_bn[..., None]
    th_sel = sel_bnk[:, :, None].expand(b, n, p, k).reshape(b, n * p, k)
    th = _selected_pairs(things.depth_kernels.reshape(b, n * p, q), th_sel, emb_bek, depth_bk, dc, compact)
    # stuff: present stuff classes (not thing train ids) with valid pixels
    labels = stuff.labels.flatten(2)  # (B, S, K)
    is_stuff = stuff.valid & (stuff.classes < cfg.model.first_thing_id)
    st_kept = is_stuff & ((labels * valid_bk[:, None]).sum(-1) > 0)
    st_sel = (labels > cfg.train.targets.stuff_depth_threshold) & valid_bk[:, None] & st_kept[..., None]
    st = _selected_pairs(stuff.depth_kernels, st_sel, emb_bek, depth_bk, dc, compact)
    pixel = _per_image_depth_loss([th, st], b, lc.depth_si_factor)
    zero = graph_zero(emb, things.depth_kernels, stuff.depth_kernels)
    out = {"loss_depth": lc.depth * (pixel.sum() / b + zero)}
    if lc.instance_depth_loss and dc.normalization in ("T1", "T2"):
        stat = things.depth_mean if dc.normalization == "T2" else things.depth_min  # (B, N)
        shift = _shift_prediction(things.depth_kernels, cfg)  # (B, N, P)
        entries = (stat[..., None].expand(b, n, p), shift, kept_bn[..., None].expand(b, n, p))
        instance = _per_image_depth_loss([(*(t.reshape(-1) for t in entries), None)], b, lc.depth_si_factor)
        out["loss_depth_ins"] = lc.depth * lc.depth_instance * (instance.sum() / b + zero)
    return out


def pixel_depth_loss(outputs: HeadOutputs, targets: Targets, cfg: Config) -> dict[str, torch.Tensor]:
    """Variant A (Table 3): L~ of the pixel-wise depth map over valid pixels, per image, mean over B."""
    pred = outputs.pixel_depth
    if pred is None:
        raise PanopticDepthError("depth mode 'pixel' needs HeadOutputs.pixel_depth from the network")
    depth = targets.depth
    b = depth.shape[0]
    gt = depth.flatten()
    per_image = _per_image_depth_loss([(gt, pred.flatten(), gt > 0, None)], b, cfg.train.loss.depth_si_factor)
    return {"loss_depth": cfg.train.loss.depth * (per_image.sum() / b)}


def _float32(outputs: HeadOutputs) -> HeadOutputs:
    """Head outputs in float32 (a bf16/fp16 autocast forward must not lower the losses' precision)."""

    def f(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x.float()

    levels = [
        LevelOutputs(f(lv.center_logits), f(lv.region_logits), f(lv.kernels), f(lv.depth_kernels))
        for lv in outputs.levels
    ]
    return HeadOutputs(
        levels=levels,
        mask_embedding=f(outputs.mask_embedding),
        depth_embedding=f(outputs.depth_embedding),
        pixel_depth=f(outputs.pixel_depth),
        features=outputs.features,
    )


def compute_losses(
    outputs: HeadOutputs, targets: Targets, projection: KernelProjection, cfg: Config
) -> dict[str, torch.Tensor]:
    """The original's loss dict for one (per-GPU) batch (docs/original_implementation.md#loss-normalisers).

    `projection` projects the gathered thing/stuff kernels (the network's `kernel_projection`).

    Runs in float32 with autocast disabled, whatever precision the forward used.
    """
    with torch.autocast(device_type=outputs.mask_embedding.device.type, enabled=False):
        return _compute_losses(_float32(outputs), targets, projection, cfg)


def _compute_losses(
    outputs: HeadOutputs, targets: Targets, projection: KernelProjection, cfg: Config
) -> dict[str, torch.Tensor]:
    tc = cfg.train.targets
    loss_pos_th, loss_pos_st = position_losses(outputs, targets, cfg)
    things = gather_thing_kernels(outputs, targets, projection, tc.pos_num, tc.guidance_threshold)
    stuff = gather_stuff_kernels(outputs, targets, projection)
    slots = SlotIndex.build(targets, things, stuff)
    logits = thing_mask_logits(things, outputs.mask_embedding)
    labeled = None if targets.labeled is None else targets.labeled.flatten(1)  # (B, K)
    losses = {
        "loss_pos_th": loss_pos_th,
        "loss_pos_st": loss_pos_st,
        "loss_seg_th": thing_segment_loss(things, logits, cfg, slots.things, labeled),
        "loss_seg_st": stuff_segment_loss(stuff, outputs.mask_embedding, cfg, slots.stuff, labeled),
    }
    if not cfg.model.depth.enabled:
        return losses
    if targets.depth is None:
        raise PanopticDepthError("the depth branch is enabled but the targets carry no depth map")
    if cfg.model.depth.mode == "pixel":
        losses.update(pixel_depth_loss(outputs, targets, cfg))
    else:
        losses.update(instance_depth_losses(outputs, targets, things, stuff, cfg))
    return losses
