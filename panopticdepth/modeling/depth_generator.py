"""Instance-wise depth map generator (paper Eq. 3 with the normalisations of Eq. 4 / Eq. 5).

A depth-kernel vector is `[v_s, v_r, k_1..k_e]` (shift logit, range logit, e kernel weights,
docs/original_implementation.md#heads-per-level). The normalised map is `D' = sigma(k . E^d)` (dynamic
convolution with the depth embedding, no bias). With `d_max = cfg.max_depth` (88 for the released models):

* ``T2`` (the original's code, docs/original_implementation.md#depth-t2): shift `d_s = d_max/2 * sigma(v_s)`,
  range `d_r = d_max * sigma(v_r)`, `D = ReLU(d_r * (2 D' - 1) + d_s)`. The paper writes
  `d_max * [d_r (D' - 0.5) + d_s]` with d_r, d_s in [0, 1]; the code's scales are 44 / 176 about
  the centre plus a ReLU, which is what a converted checkpoint needs.
* ``T1`` (Eq. 4, min-based; not in the original code): `D = d_min + d_r * D'` with the same scales,
  `d_min = d_max/2 * sigma(v_s)`, `d_r = d_max * sigma(v_r)` (non-negative by construction).
* ``none`` (Table 3, variant B; not in the original code): no per-instance shift and range, the
  kernel response alone gives the depth through the pixel-wise variant's fixed output mapping,
  `D = d_max * sigma(k . E^d)`; the shift/range channels are ignored. A and B then differ only in
  where the depth map comes from (one pixel-wise head against a kernel per segment). An unbounded
  `ReLU(k . E^d)` was tried first: its depth died (0 everywhere, no gradient) in one of three seeds
  at 200 steps and in the first seed at 1200 steps (benchmarks/README.md, depth ablation).

The pixel-wise variant A has no kernels: the network emits `HeadOutputs.pixel_depth` directly and
the post-processing only resizes and clamps it.
"""

from __future__ import annotations

import torch

from ..config.model import DepthConfig


def depth_from_response(
    response: torch.Tensor, shift_logit: torch.Tensor, range_logit: torch.Tensor, cfg: DepthConfig
) -> torch.Tensor:
    """Depth in metres from the kernel response `k . E^d` and the (broadcastable) shift/range logits."""
    if cfg.normalization == "none":
        return cfg.max_depth * torch.sigmoid(response)
    shift = 0.5 * cfg.max_depth * torch.sigmoid(shift_logit)
    rng = cfg.max_depth * torch.sigmoid(range_logit)
    normalised = torch.sigmoid(response)
    if cfg.normalization == "T2":
        return torch.relu(rng * (2.0 * normalised - 1.0) + shift)
    if cfg.normalization == "T1":
        return shift + rng * normalised
    raise ValueError(f"unknown depth normalization {cfg.normalization!r} (none, T1, T2)")


def depth_maps(depth_kernels: torch.Tensor, embedding: torch.Tensor, cfg: DepthConfig) -> torch.Tensor:
    """(N, kernel_dim + 2) depth-kernel vectors x (kernel_dim, H, W) embedding -> (N, H, W) metres (Eq. 3)."""
    n = depth_kernels.shape[0]
    e, h, w = embedding.shape
    if depth_kernels.shape[1] != e + 2:
        raise ValueError(f"depth kernels have {depth_kernels.shape[1]} channels, expected {e} + 2")
    response_nhw = (depth_kernels[:, 2:] @ embedding.reshape(e, h * w)).reshape(n, h, w)
    shift_n11 = depth_kernels[:, 0].view(n, 1, 1)
    range_n11 = depth_kernels[:, 1].view(n, 1, 1)
    return depth_from_response(response_nhw, shift_n11, range_n11, cfg)


def gathered_depth(
    depth_kernels: torch.Tensor,
    index_hw: torch.Tensor,
    embedding: torch.Tensor,
    cfg: DepthConfig,
    chunk: int = 1 << 18,
) -> torch.Tensor:
    """Depth of segment `index_hw[y, x]` at every pixel: `depth_maps(...).gather(0, index)`.

    The merge picks one segment per pixel, so only the chosen response is turned into depth; the
    responses are computed as one matmul per block of `chunk` pixels to bound memory.
    """
    e, h, w = embedding.shape
    emb_ep = embedding.reshape(e, h * w)
    index_p = index_hw.reshape(-1)
    weights_ne = depth_kernels[:, 2:]
    response_p = torch.empty(h * w, dtype=embedding.dtype, device=embedding.device)
    for start in range(0, h * w, chunk):
        stop = min(start + chunk, h * w)
        block_np = weights_ne @ emb_ep[:, start:stop]
        response_p[start:stop] = block_np.gather(0, index_p[None, start:stop])[0]
    shift_p = depth_kernels[index_p, 0]
    range_p = depth_kernels[index_p, 1]
    return depth_from_response(response_p, shift_p, range_p, cfg).reshape(h, w)
