"""Ground-truth generation for training (docs/original_implementation.md#target-sizes and the sections after
it).

`build_targets` turns a list of Samples (as `collate_samples` batches them) into per-level targets at the
sizes of the network's outputs: Gaussian centre heat maps and thing slots per FPN level, soft stuff score maps
and compacted stuff slots, and the stride-4 depth map. It reproduces the original's `GenerateGT`
numerically (bilinear point-sampling downsampling, "mass" centres, the CenterNet radius that divides
every root by 2, inclusive scale ranges) but stores the thing slots truncated to
`T_l = max(1, max_b #assigned)` instead of the original's 150 (the losses truncate to exactly that,
so nothing changes except memory); unused slots still hold 255 (docs/original_implementation.md#target-slots).

Shapes: B images, K = 8 thing classes, C = 19 classes, (Hp, Wp) padded batch, (H4, W4) mask
embedding, (h, w) one FPN level, T / S = thing / stuff slots of that level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..config.schema import Config
from ..config.training import TargetConfig
from ..data.sample import boxes_from_masks
from ..errors import DataError
from ..modeling.outputs import HeadOutputs
from ..utils.device import index_tensor


@dataclass
class LevelTargets:
    """Targets of one FPN level for the whole batch."""

    center: torch.Tensor  # (B, K, h, w) float32 Gaussian centre heat maps
    thing_masks: torch.Tensor  # (B, T, H4, W4) soft 1/4-res masks; 255 in unused slots
    thing_valid: torch.Tensor  # (B, T) bool, True for assigned slots (the original's index_mask)
    thing_classes: torch.Tensor  # (B, T) int64 thing index 0..K-1 (0 in unused slots)
    thing_index: torch.Tensor  # (B, T) int64 centre position cy * w + cx (unused by the losses)
    stuff_scores: torch.Tensor  # (B, C, h, w) soft focal targets, values < 0.5 zeroed
    stuff_labels: torch.Tensor  # (B, S, H4, W4) soft 1/4-res class maps of the present classes
    stuff_masks: torch.Tensor  # (B, S, h, w) binary region (score > 0) used for kernel averaging
    stuff_valid: torch.Tensor  # (B, S) bool
    stuff_classes: torch.Tensor  # (B, S) int64 train id (0 in unused slots)
    # Per-instance depth statistics over (mask > 0) & (depth > 0) at 1/4 res; None without depth.
    thing_depth_mean: torch.Tensor | None = None  # (B, T) metres, 0 where no valid pixel
    thing_depth_min: torch.Tensor | None = None  # (B, T) metres, 0 where no valid pixel
    thing_depth_count: torch.Tensor | None = None  # (B, T) int64 number of valid pixels
    # Sparse labels only (train.loss.labeled_pixels_only): (B, 1, h, w) 1 where the level sees a
    # labelled pixel; the region loss averages over these positions only.
    labeled: torch.Tensor | None = None

    @property
    def num_things(self) -> torch.Tensor:
        """(B,) number of assigned instances per image."""
        return self.thing_valid.sum(1)

    @property
    def num_stuff(self) -> torch.Tensor:
        """(B,) number of present classes per image."""
        return self.stuff_valid.sum(1)


@dataclass
class Targets:
    """Everything the losses need; `levels` follow the head levels p3..p7."""

    levels: list[LevelTargets]
    depth: torch.Tensor | None  # (B, 1, H4, W4) metres at stride 4, 0 = invalid (and padding)
    padded_size: tuple[int, int]  # (Hp, Wp)
    mask_size: tuple[int, int]  # (H4, W4)
    # Host copies of the slot counts [level][image]: assigned instances, present classes.
    thing_counts: list[list[int]] | None = None
    stuff_counts: list[list[int]] | None = None
    # Sparse labels only: (B, 1, H4, W4) 1 where a labelled pixel falls (the dice losses' pixels).
    labeled: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.levels[0].center.shape[0])

    @property
    def num_things(self) -> int:
        """N_th: (instance, level) assignments over the batch (the focal and dice normaliser)."""
        if self.thing_counts is not None:
            return sum(sum(row) for row in self.thing_counts)
        return int(sum(int(lv.thing_valid.sum()) for lv in self.levels))

    @property
    def num_stuff(self) -> int:
        """N_st: (image, level, present class) entries over the batch."""
        if self.stuff_counts is not None:
            return sum(sum(row) for row in self.stuff_counts)
        return int(sum(int(lv.stuff_valid.sum()) for lv in self.levels))

    def thing_slots(self) -> list[list[int]]:
        """Per image, the positions of its assigned slots in the level-concatenated slot axis
        (the layout of `kernel_gather.ThingKernels`), from the host counts."""
        counts = self.thing_counts or [lv.thing_valid.sum(1).tolist() for lv in self.levels]
        return _slot_positions(counts, [lv.thing_valid.shape[1] for lv in self.levels])

    def stuff_slots(self) -> list[list[int]]:
        """Per image, the positions of its present-class slots in the concatenated stuff axis."""
        counts = self.stuff_counts or [lv.stuff_valid.sum(1).tolist() for lv in self.levels]
        return _slot_positions(counts, [lv.stuff_valid.shape[1] for lv in self.levels])


def _slot_positions(counts: list[list[int]], widths: list[int]) -> list[list[int]]:
    """Slots are filled from the front of each level's block of `widths[l]` slots."""
    batch = len(counts[0]) if counts else 0
    out: list[list[int]] = [[] for _ in range(batch)]
    offset = 0
    for row, width in zip(counts, widths):
        for b, n in enumerate(row):
            out[b].extend(range(offset, offset + n))
        offset += width
    return out


def gaussian_radius(wh_n2: torch.Tensor, min_overlap: float) -> torch.Tensor:
    """CornerNet radius with every root divided by 2 (the CenterNet variant,
    docs/original_implementation.md#gaussian-radius).

    `wh_n2` is the box size on the level (float32); returns the float radius (before clamp/int).
    The operation order follows the original so float32 rounding (hence the int cut) agrees.
    """
    width, height = wh_n2[..., 0], wh_n2[..., 1]
    o = min_overlap
    b1 = height + width
    c1 = width * height * (1 - o) / (1 + o)
    r1 = (b1 + torch.sqrt(b1**2 - 4 * 1 * c1)) / 2
    b2 = 2 * (height + width)
    c2 = (1 - o) * width * height
    r2 = (b2 + torch.sqrt(b2**2 - 4 * 4 * c2)) / 2
    a3 = 4 * o
    b3 = -2 * o * (height + width)
    c3 = (o - 1) * width * height
    r3 = (b3 + torch.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return torch.minimum(r1, torch.minimum(r2, r3))


def draw_heatmap(
    centers_n2: torch.Tensor, radius_n: torch.Tensor, classes_n: torch.Tensor, num_classes: int,
    size: tuple[int, int], sigma_factor: float,
) -> torch.Tensor:  # fmt: skip
    """Max-merge one (2r+1)^2 Gaussian per instance into its class channel -> (K, h, w) float32.

    sigma = (2r + 1) / sigma_factor; values < float64-eps * max are zeroed; the window is clipped at
    the borders (a centre at x = w, allowed by the original's clamp, still draws its left part).
    Computed in float64 and cast, like the original's numpy kernel. A batch draws into the channels
    image * K + class of one call (`num_classes` = B * K).
    """
    h, w = size
    device = centers_n2.device
    heat = torch.zeros((num_classes, h * w), dtype=torch.float32, device=device)
    if centers_n2.shape[0] == 0:
        return heat.view(num_classes, h, w)
    cx = centers_n2[:, 0].double().view(-1, 1, 1)
    cy = centers_n2[:, 1].double().view(-1, 1, 1)
    r = radius_n.double().view(-1, 1, 1)
    sigma = (2 * r + 1) / sigma_factor
    dx = torch.arange(w, dtype=torch.float64, device=device).view(1, 1, w) - cx
    dy = torch.arange(h, dtype=torch.float64, device=device).view(1, h, 1) - cy
    g_nhw = torch.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))
    g_nhw = torch.where(g_nhw < np.finfo(np.float64).eps, torch.zeros_like(g_nhw), g_nhw)  # max is 1
    inside = (dx.abs() <= r) & (dy.abs() <= r)
    g_nhw = (g_nhw * inside).float().view(-1, h * w)
    index = classes_n.view(-1, 1).expand(-1, h * w)
    heat.scatter_reduce_(0, index, g_nhw, reduce="amax", include_self=True)
    return heat.view(num_classes, h, w)


def _downsampled_size(h: int, w: int, stride: int) -> tuple[int, int]:
    """`int(h / stride + 0.5)` as the original (docs/original_implementation.md#target-sizes)."""
    scale = 1.0 / stride
    return int(h * scale + 0.5), int(w * scale + 0.5)


def _bilinear_chunked(
    masks_nhw: torch.Tensor, size: tuple[int, int], chunk: int = 8, mode: str = "bilinear"
) -> torch.Tensor:
    """Bilinear (align_corners=False, no antialias: docs/original_implementation.md#bilinear-no-antialias)
    resize of binary maps -> (N, h, w) float32.

    Converted to float a few maps at a time: a 1024x2048 float map is 8 MB, 19 classes or 100
    instances at once would be hundreds of MB. Same numbers as one batched call (per-map op).
    `mode="area"` (pixel averages) serves sparse labels, whose scan lines bilinear sampling of two
    rows in four would miss (docs/label_spaces.md#sparse-labels).
    """
    if mode == "bilinear" and masks_nhw.dtype == torch.bool:
        taps = _bilinear_taps(masks_nhw, size)
        if taps is not None:
            return _mean_of_taps(taps)
    extra = {"align_corners": False} if mode == "bilinear" else {}
    parts = [
        F.interpolate(masks_nhw[i : i + chunk].float()[None], size=size, mode=mode, **extra)[0]
        for i in range(0, masks_nhw.shape[0], chunk)
    ]
    if not parts:
        return torch.zeros((0, *size), device=masks_nhw.device)
    return torch.cat(parts)


def _bilinear_taps(x_nhw: torch.Tensor, size: tuple[int, int]) -> list[torch.Tensor] | None:
    """The four (N, h, w) grids that bilinear resizing (align_corners=False) to `size` averages,
    each with weight 1/4, when both sides shrink by an even integer factor s (x4: the central 2x2
    of every 4x4 block, docs/original_implementation.md#bilinear-no-antialias): output row i lies
    halfway between input rows s*i + s/2 - 1 and s*i + s/2, likewise for columns. None otherwise.
    """
    (big_h, big_w), (h, w) = x_nhw.shape[-2:], size
    if h <= 0 or w <= 0 or big_h % h or big_w % w or (big_h // h) % 2 or (big_w // w) % 2:
        return None
    sh, sw = big_h // h, big_w // w
    rows = [x_nhw[..., sh // 2 - 1 :: sh, :], x_nhw[..., sh // 2 :: sh, :]]
    return [r[..., c::sw] for r in rows for c in (sw // 2 - 1, sw // 2)]


def _mean_of_taps(taps: list[torch.Tensor]) -> torch.Tensor:
    """Mean of four boolean grids as float32: count / 4, exactly the value the bilinear kernel
    computes from 0/1 inputs with weights 1/4 (every partial sum is a multiple of 1/4), read from
    a quarter of the pixels and without a float copy of the full-resolution maps."""
    count = taps[0].to(torch.uint8)
    for tap in taps[1:]:
        count = count + tap.to(torch.uint8)
    return count.float() * 0.25


def _mass_centers(soft_nhw: torch.Tensor) -> torch.Tensor:
    """Unweighted mean (x, y) of the pixels where the soft mask > 0
    (docs/original_implementation.md#mass-centre) -> (N, 2) float32.

    Sums in float64 (exact for integer coordinates). An empty mask gives NaN in the original, whose
    integer cast is clamped to 0; it is set to 0 here directly.
    """
    pos = (soft_nhw > 0).double()
    n, h, w = soft_nhw.shape
    count = pos.sum((1, 2))
    ys = torch.arange(h, dtype=torch.float64, device=soft_nhw.device)
    xs = torch.arange(w, dtype=torch.float64, device=soft_nhw.device)
    cx = (pos.sum(1) * xs).sum(1) / count.clamp(min=1)
    cy = (pos.sum(2) * ys).sum(1) / count.clamp(min=1)
    centers = torch.stack([cx, cy], 1).float()
    return torch.where(count.view(-1, 1) > 0, centers, torch.zeros_like(centers))


@dataclass
class _ImageThings:
    soft_nhw: torch.Tensor  # (N, h4, w4) bilinear-downsampled masks
    centers_n2: torch.Tensor  # (N, 2) float32 mass centres at 1/4 res
    boxes_n4: torch.Tensor  # (N, 4) float32
    scales_n: torch.Tensor  # (N,) sqrt(box area)
    classes_n: torch.Tensor  # (N,) int64


@dataclass
class _BatchThings:
    """Every image's instances in one list (image-major), soft masks pasted at the mask size."""

    masks_nHW: torch.Tensor  # (N, H4, W4) soft masks, zero outside the image
    centers_n2: torch.Tensor
    boxes_n4: torch.Tensor
    classes_n: torch.Tensor
    images_n: torch.Tensor  # (N,) int64 image of each instance

    @classmethod
    def concat(cls, things: list[_ImageThings], mask_size) -> _BatchThings:
        device = things[0].classes_n.device
        sizes = [t.classes_n.numel() for t in things]  # host-known: no wait for the device
        images = index_tensor([b for b, n in enumerate(sizes) for _ in range(n)], device)
        return cls(
            masks_nHW=torch.cat([_paste(t.soft_nhw, mask_size) for t in things]),
            centers_n2=torch.cat([t.centers_n2 for t in things]),
            boxes_n4=torch.cat([t.boxes_n4 for t in things]),
            classes_n=torch.cat([t.classes_n for t in things]),
            images_n=images,
        )


def _path(sample: dict) -> str:
    return sample.get("meta", {}).get("image_path", "<unknown image>")


def _image_things(
    sample: dict, stride: int, num_classes: int, device: torch.device, labeled: torch.Tensor | None = None
) -> _ImageThings:
    masks = sample.get("instance_masks")
    classes = sample.get("instance_classes")
    n_cls = 0 if classes is None else classes.numel()
    if masks is not None and masks.shape[0] != n_cls:  # shapes: known on the host
        raise DataError(f"{_path(sample)}: instance masks/classes inconsistent ({masks.shape[0]} vs {n_cls})")
    h, w = sample["semantic"].shape[-2:]
    h4, w4 = _downsampled_size(h, w, stride)
    if masks is None or masks.shape[0] == 0:
        return _ImageThings(
            torch.zeros((0, h4, w4), device=device), torch.zeros((0, 2), device=device),
            torch.zeros((0, 4), device=device), torch.zeros((0,), device=device),
            torch.zeros((0,), dtype=torch.int64, device=device),
        )  # fmt: skip
    masks = masks.to(device=device, dtype=torch.bool)
    if labeled is None:
        soft = _bilinear_chunked(masks, (h4, w4))
    else:
        soft = _per_labeled(_bilinear_chunked(masks, (h4, w4), mode="area"), labeled)
    # The dataset's box rule when it provides boxes ((min, max + 1) in the panoptic-segmentation
    # pipeline, docs/augmentation.md); otherwise the DVPS rule with inclusive maxima.
    given = sample.get("instance_boxes")
    if given is not None and tuple(given.shape) != (masks.shape[0], 4):
        path = sample.get("meta", {}).get("image_path", "<unknown image>")
        raise DataError(
            f"{path}: instance_boxes has shape {tuple(given.shape)}, expected ({masks.shape[0]}, 4)"
        )
    boxes = boxes_from_masks(masks) if given is None else given.to(device=device, dtype=torch.float32)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    classes = sample["instance_classes"].to(device=device, dtype=torch.int64)
    return _ImageThings(soft, _mass_centers(soft), boxes, torch.sqrt(area), classes)


def _labeled_fraction(sample: dict, ignore: int, stride: int, device) -> torch.Tensor:
    """(1, h4, w4) 1/4-res share of labelled (not ignored) pixels (sparse labels; area average)."""
    sem = sample["semantic"].to(device=device, dtype=torch.int64)
    return _bilinear_chunked((sem != ignore).unsqueeze(0), _downsampled_size(*sem.shape, stride), mode="area")


def _per_labeled(soft_nhw: torch.Tensor, labeled_1hw: torch.Tensor) -> torch.Tensor:
    """Soft maps as shares of the labelled pixels instead of all pixels: unlabelled pixels count
    neither for nor against a class (docs/label_spaces.md#sparse-labels)."""
    return torch.where(labeled_1hw > 0, soft_nhw / labeled_1hw.clamp(min=1e-6), torch.zeros_like(soft_nhw))


def _paste(small_chw: torch.Tensor, mask_size) -> torch.Tensor:
    out = torch.zeros((small_chw.shape[0], *mask_size), device=small_chw.device)
    out[:, : small_chw.shape[1], : small_chw.shape[2]] = small_chw[:, : mask_size[0], : mask_size[1]]
    return out


def _stuff_semantics(
    sample: dict, num_classes: int, ignore: int, stride: int, mask_size, device, labeled=None
) -> torch.Tensor:
    """One-hot (ignore and any id outside 0..C-1 -> all zero,
    docs/original_implementation.md#ignore-negatives), bilinear to 1/4 res,
    pasted top-left -> (C, H4, W4). With `labeled` (sparse labels): shares of the labelled pixels."""
    sem = sample["semantic"].to(device=device, dtype=torch.int64)
    h4, w4 = _downsampled_size(*sem.shape, stride)
    classes = torch.arange(num_classes, device=device).view(-1, 1, 1)
    taps = _bilinear_taps(sem.unsqueeze(0), (h4, w4)) if labeled is None else None
    if taps is not None:  # one-hot of the sampled pixels only: the same values, 1/4 of the work
        small = _mean_of_taps([tap == classes for tap in taps])
    elif labeled is None:
        small = _bilinear_chunked(sem.unsqueeze(0) == classes, (h4, w4))
    else:
        small = _per_labeled(_bilinear_chunked(sem.unsqueeze(0) == classes, (h4, w4), mode="area"), labeled)
    out = torch.zeros((num_classes, *mask_size), device=device)
    out[:, :h4, :w4] = small[:, : mask_size[0], : mask_size[1]]
    return out


def _depth_target(sample: dict, stride: int, mask_size, device) -> torch.Tensor:
    """Legacy-nearest downsampling (pixel (4i, 4j), docs/original_implementation.md#legacy-nearest-depth),
    pasted into zeros -> (1, H4, W4)."""
    depth = sample["depth"].to(device=device, dtype=torch.float32)
    h4, w4 = _downsampled_size(*depth.shape, stride)
    small = F.interpolate(depth[None, None], size=(h4, w4), mode="nearest")[0]
    out = torch.zeros((1, *mask_size), device=device)
    out[:, :h4, :w4] = small[:, : mask_size[0], : mask_size[1]]
    return out


def _assigned(things: _ImageThings, scale_range) -> torch.Tensor:
    """(N,) bool: instances whose scale falls in the level's inclusive range."""
    lo, hi = scale_range
    return (things.scales_n >= lo) & (things.scales_n <= hi)


@dataclass
class _LevelThings:
    """One level's thing targets for the batch (the thing fields of `LevelTargets`)."""

    center: torch.Tensor
    masks: torch.Tensor
    valid: torch.Tensor
    classes: torch.Tensor
    index: torch.Tensor


def _level_things(
    things: _BatchThings,
    plan: _LevelPlan,
    batch: int,
    level_size,
    padded_size,
    tcfg: TargetConfig,
    num_classes: int,
) -> _LevelThings:
    """One level, all images at once: heat maps (B, K, h, w) and the thing slots (B, T, ...),
    T = max(1, max_b #assigned) (docs/original_implementation.md#target-slots)."""
    h, w = level_size
    mask_size = tuple(things.masks_nHW.shape[-2:])
    idx = plan.selected
    centers = things.centers_n2[idx]
    # Centre rescale in float32 then truncation toward zero, clamp with the original's off-by-one.
    ratio = torch.tensor([w / mask_size[1], h / mask_size[0]], dtype=torch.float32, device=centers.device)
    centers_int = (centers * ratio).to(torch.int64)
    centers_int[:, 0].clamp_(min=0, max=w)
    centers_int[:, 1].clamp_(min=0, max=h)
    boxes = things.boxes_n4[idx]
    box_ratio = torch.tensor(
        [w / padded_size[1], h / padded_size[0]], dtype=torch.float32, device=boxes.device
    )
    wh = (boxes[:, 2:] - boxes[:, :2]) * box_ratio
    radius = gaussian_radius(wh, tcfg.min_overlap).clamp(min=0).to(torch.int32)
    classes = things.classes_n[idx]
    channels = things.images_n[idx] * num_classes + classes
    heat = draw_heatmap(centers_int, radius, channels, batch * num_classes, (h, w), tcfg.gaussian_sigma)
    t_slots = plan.num_slots
    device = centers.device
    masks = torch.full((batch * t_slots, *mask_size), float(tcfg.ignore_value), device=device)
    masks[plan.slots] = things.masks_nHW[idx]
    valid = torch.zeros(batch * t_slots, dtype=torch.bool, device=device)
    valid[plan.slots] = True
    slot_classes = torch.zeros(batch * t_slots, dtype=torch.int64, device=device)
    slot_classes[plan.slots] = classes
    slot_index = torch.zeros(batch * t_slots, dtype=torch.int64, device=device)
    slot_index[plan.slots] = centers_int[:, 1] * w + centers_int[:, 0]
    return _LevelThings(
        center=heat.view(batch, num_classes, h, w),
        masks=masks.view(batch, t_slots, *mask_size),
        valid=valid.view(batch, t_slots),
        classes=slot_classes.view(batch, t_slots),
        index=slot_index.view(batch, t_slots),
    )


def _stuff_scores(gt_sem_bchw: torch.Tensor, level_size, threshold: float, labeled=None) -> torch.Tensor:
    """Soft score maps at the level (clamp <= 1, < threshold -> 0) -> (B, C, h, w); present classes
    have a sum > 0. With `labeled` ((B, 1, H4, W4) 0/1, sparse labels) the resize averages over
    labelled pixels only. Every map is resized on its own, as one image at a time would be."""
    if labeled is None:
        scores = F.interpolate(gt_sem_bchw, size=level_size, mode="bilinear", align_corners=False)
    else:  # area averages of the labelled positions only
        scores = F.interpolate(gt_sem_bchw * labeled, size=level_size, mode="area")
        scores = _per_labeled(scores, F.interpolate(labeled, size=level_size, mode="area"))
    scores = scores.clamp(max=1.0)
    return torch.where(scores < threshold, torch.zeros_like(scores), scores)


def _resize_labeled(labeled_1hw: torch.Tensor, size) -> torch.Tensor:
    """(1, h, w) area share of labelled 1/4-res positions at a level's size."""
    return F.interpolate(labeled_1hw[None], size=size, mode="area")[0]


def _depth_stats(masks_btHW: torch.Tensor, valid_bt: torch.Tensor, depth_b1HW: torch.Tensor):
    """Mean / min depth and pixel count over (mask > 0) & (depth > 0) per slot
    (docs/original_implementation.md#depth-losses)."""
    sel = (masks_btHW > 0) & valid_bt[..., None, None] & (depth_b1HW > 0)
    count = sel.sum((-1, -2))
    depth = depth_b1HW.expand_as(masks_btHW)
    mean = (depth * sel).sum((-1, -2)) / count.clamp(min=1)
    big = torch.full_like(depth, float("inf"))
    dmin = torch.where(sel, depth, big).amin((-1, -2))
    dmin = torch.where(count > 0, dmin, torch.zeros_like(dmin))
    return mean, dmin, count


def build_targets(
    samples: list[dict], outputs: HeadOutputs, padded_size: tuple[int, int], cfg: Config
) -> Targets:
    """Samples + the network's output shapes -> `Targets` (the original's `GenerateGT`).

    `padded_size` = (Hp, Wp) of the batch tensor (box sizes are scaled by level size / padded size,
    as the original). Level and mask sizes are read from `outputs`. Targets live on the device of
    `outputs.mask_embedding` and carry no gradient. Which instances each level takes and which
    classes it sees depend on the data: they travel to the host in one transfer for the whole
    batch, so that building the targets waits for the device once (docs/distributed_training.md).
    """
    tcfg = cfg.train.targets
    mcfg = cfg.model
    device = outputs.mask_embedding.device
    mask_size = tuple(int(s) for s in outputs.mask_embedding.shape[-2:])
    level_sizes = [tuple(int(s) for s in lv.center_logits.shape[-2:]) for lv in outputs.levels]
    if len(level_sizes) != len(tcfg.instance_scales):
        raise ValueError(
            f"{len(level_sizes)} head levels (model.heads.levels) but {len(tcfg.instance_scales)} "
            "train.targets.instance_scales: give one [min, max] per level"
        )
    if len(samples) != outputs.mask_embedding.shape[0]:
        raise ValueError(f"{len(samples)} samples for a batch of {outputs.mask_embedding.shape[0]}")
    kth, ncls = mcfg.num_thing_classes, mcfg.num_classes
    with_depth = bool(mcfg.depth.enabled)
    sparse = cfg.train.loss.labeled_pixels_only
    with torch.no_grad():
        things, gt_sems, depths, labeled = [], [], [], []
        for sample in samples:
            lab = _labeled_fraction(sample, tcfg.ignore_value, tcfg.common_stride, device) if sparse else None
            things.append(_image_things(sample, tcfg.common_stride, kth, device, lab))
            gt_sems.append(
                _stuff_semantics(sample, ncls, tcfg.ignore_value, tcfg.common_stride, mask_size, device, lab)
            )
            if sparse:
                labeled.append((_paste(lab, mask_size) > 0).float())
            if with_depth:
                if sample.get("depth") is None:
                    raise DataError(
                        f"{_path(sample)}: the depth branch is enabled but the sample has no depth map"
                    )
                depths.append(_depth_target(sample, tcfg.common_stride, mask_size, device))
        depth = torch.stack(depths) if with_depth else None
        labeled_b1hw = torch.stack(labeled) if sparse else None
        gt_sem = torch.stack(gt_sems)
        threshold = tcfg.stuff_score_threshold
        scores = [_stuff_scores(gt_sem, lsize, threshold, labeled_b1hw) for lsize in level_sizes]
        plan = _plan_on_host(samples, things, scores, tcfg.instance_scales, kth, tcfg.tensor_dim)
        batch_things = _BatchThings.concat(things, mask_size)
        levels = []
        for li, lsize in enumerate(level_sizes):
            things_l = _level_things(
                batch_things, plan.things[li], len(samples), lsize, padded_size, tcfg, kth
            )
            levels.append(_stack_level(things_l, plan.stuff[li], gt_sem, scores[li], depth))
            if sparse:
                levels[-1].labeled = (_resize_labeled(labeled_b1hw[:, 0], lsize)[:, None] > 0).float()
    return Targets(
        levels=levels,
        depth=depth,
        padded_size=tuple(padded_size),
        mask_size=mask_size,
        thing_counts=plan.thing_counts,
        stuff_counts=plan.stuff_counts,
        labeled=labeled_b1hw,
    )


@dataclass
class _LevelPlan:
    """A level's selected entries as device indices: the assigned instances (positions in the
    batch's instance list, image-major) or the present stuff classes (image * C + class), and
    their flat image * T + slot positions in the level's slot tensors, T = `num_slots`."""

    selected: torch.Tensor
    slots: torch.Tensor
    num_slots: int


@dataclass
class _HostPlan:
    """What the host learns from the one transfer: per level the assigned instances and the present
    stuff classes as device indices (`_LevelPlan`), and the counts [level][image] (Python ints)."""

    things: list[_LevelPlan]
    stuff: list[_LevelPlan]
    thing_counts: list[list[int]]
    stuff_counts: list[list[int]]


def _level_plan(per_image: list[list[int]], offsets: list[int]) -> tuple[list[int], list[int], int]:
    """Selected entries [image][k] -> (flat positions offsets[image] + k, their image * T + slot
    positions, T = max(1, max count))."""
    width = max(1, max((len(x) for x in per_image), default=0))
    flat = [offsets[b] + i for b, idx in enumerate(per_image) for i in idx]
    slots = [b * width + j for b, idx in enumerate(per_image) for j in range(len(idx))]
    return flat, slots, width


def _plan_on_host(
    samples: list[dict],
    things: list[_ImageThings],
    scores: list[torch.Tensor],
    scale_ranges,
    kth: int,
    tensor_dim: int,
) -> _HostPlan:
    """One device-to-host copy for the whole batch: class checks, level assignment, present classes."""
    b = len(things)
    flags = [((t.classes_n < 0) | (t.classes_n >= kth)).any().view(1) for t in things]
    flags += [_assigned(t, srange) for srange in scale_ranges for t in things]
    flags += [(level_scores.flatten(2).sum(-1) > 0).flatten() for level_scores in scores]
    host = torch.cat(flags).tolist()  # the single wait for the device
    bad = [i for i in range(b) if host[i]]
    if bad:
        raise DataError(f"{_path(samples[bad[0]])}: instance classes outside 0..{kth - 1}")
    pos = b

    def take(n: int) -> list[int]:
        nonlocal pos
        picked = [i for i, keep in enumerate(host[pos : pos + n]) if keep]
        pos += n
        return picked

    sizes = [t.classes_n.numel() for t in things]
    thing_sel = [[take(n) for n in sizes] for _ in scale_ranges]  # [level][image]
    for row in thing_sel:
        if max((len(x) for x in row), default=0) > tensor_dim:
            raise DataError(
                f"{max(len(x) for x in row)} instances of one image on one level exceed train.targets."
                f"tensor_dim={tensor_dim} (the original's TENSOR_DIM limit); raise it in the config"
            )
    num_classes = scores[0].shape[1] if scores else 0
    stuff_sel = [[take(num_classes) for _ in range(b)] for _ in scores]
    thing_offsets = [sum(sizes[:i]) for i in range(b)]
    stuff_offsets = [i * num_classes for i in range(b)]
    plans = [_level_plan(row, thing_offsets) for row in thing_sel]
    plans += [_level_plan(row, stuff_offsets) for row in stuff_sel]
    device = things[0].classes_n.device if things else torch.device("cpu")
    tensors = _indices_to_device([p[0] for p in plans] + [p[1] for p in plans], device)
    levels = [_LevelPlan(f, s, p[2]) for f, s, p in zip(tensors[: len(plans)], tensors[len(plans) :], plans)]
    return _HostPlan(
        things=levels[: len(thing_sel)],
        stuff=levels[len(thing_sel) :],
        thing_counts=[[len(x) for x in row] for row in thing_sel],
        stuff_counts=[[len(x) for x in row] for row in stuff_sel],
    )


def _indices_to_device(lists: list[list[int]], device: torch.device) -> list[torch.Tensor]:
    """Index lists -> int64 device tensors, from one host buffer copied without waiting (pinned
    memory on CUDA)."""
    buffer = index_tensor([i for idx in lists for i in idx], device)
    return list(buffer.split([len(idx) for idx in lists]))


def _stack_level(
    things_l: _LevelThings, plan: _LevelPlan, gt_sem: torch.Tensor, scores: torch.Tensor, depth
) -> LevelTargets:
    """The level's thing slots and its stuff slots (the present classes of each image, in class
    order), truncated to max(1, max count) (docs/original_implementation.md#target-slots)."""
    b, c, *mask_size = gt_sem.shape
    level_size = scores.shape[-2:]
    rows = b * plan.num_slots
    device = gt_sem.device
    stuff_labels = torch.zeros((rows, *mask_size), device=device)
    stuff_labels[plan.slots] = gt_sem.reshape(b * c, *mask_size)[plan.selected]
    stuff_masks = torch.zeros((rows, *level_size), device=device)
    stuff_masks[plan.slots] = (scores.reshape(b * c, *level_size)[plan.selected] > 0).float()
    stuff_valid = torch.zeros(rows, dtype=torch.bool, device=device)
    stuff_valid[plan.slots] = True
    stuff_classes = torch.zeros(rows, dtype=torch.int64, device=device)
    stuff_classes[plan.slots] = plan.selected % c
    level = LevelTargets(
        center=things_l.center,
        thing_masks=things_l.masks, thing_valid=things_l.valid,
        thing_classes=things_l.classes, thing_index=things_l.index,
        stuff_scores=scores,
        stuff_labels=stuff_labels.view(b, plan.num_slots, *mask_size),
        stuff_masks=stuff_masks.view(b, plan.num_slots, *level_size),
        stuff_valid=stuff_valid.view(b, plan.num_slots),
        stuff_classes=stuff_classes.view(b, plan.num_slots),
    )  # fmt: skip
    if depth is not None:
        level.thing_depth_mean, level.thing_depth_min, level.thing_depth_count = _depth_stats(
            things_l.masks, things_l.valid, depth
        )
    return level
