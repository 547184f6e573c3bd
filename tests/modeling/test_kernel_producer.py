"""Kernel producer: candidate selection and fusion against brute-force references written here."""

from __future__ import annotations

import numpy as np
import torch

from panopticdepth.config.model import InferenceConfig
from panopticdepth.modeling.kernel_producer import (
    KernelSet,
    fuse_stuff_kernels,
    fuse_thing_kernels,
    stuff_candidates,
    thing_candidates,
)
from panopticdepth.modeling.outputs import LevelOutputs


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(np.linalg.norm(a), 1e-8) / max(np.linalg.norm(b), 1e-8))


def _brute_force_fusion(kernels, classes, depth, thr):
    """Spec 2.3 read literally, one pair at a time."""
    n = len(kernels)
    label = [
        [j >= i and classes[i] == classes[j] and _cosine(kernels[i], kernels[j]) >= thr for j in range(n)]
        for i in range(n)
    ]
    out_k, out_d, out_c = [], [], []
    for i in range(n):
        claimed_before = any(label[r][i] for r in range(i))  # column i, rows 0..i-1
        if claimed_before:
            continue
        group = [j for j in range(n) if label[i][j] and sum(label[r][j] for r in range(i + 1)) < 2]
        out_k.append(np.mean([kernels[j] for j in group], axis=0))
        out_d.append(np.mean([depth[j] for j in group], axis=0))
        out_c.append(classes[i])
    return np.array(out_k), np.array(out_d), out_c


def test_cosine_fusion_handmade_chain():
    # 0 ~ 1 (same class), 1 ~ 2 but 0 !~ 2: 2 is first claimed by 1, which is itself dropped,
    # so 2 disappears (docs/original_implementation.md#thing-fusion). 3 has the direction of 0 but another
    # class: kept alone.
    e = np.eye(4)
    v0 = e[0]
    v1 = np.cos(0.2) * e[0] + np.sin(0.2) * e[1]
    v2 = np.cos(0.4) * e[0] + np.sin(0.4) * e[1]
    v3 = 2.0 * e[0]
    kernels = np.stack([v0, v1, v2, v3])
    classes = [1, 1, 1, 4]
    depth = np.arange(4 * 3, dtype=np.float64).reshape(4, 3)
    thr = float(np.cos(0.25))
    ref_k, ref_d, ref_c = _brute_force_fusion(kernels, classes, depth, thr)
    assert ref_c == [1, 4]  # the handmade expectation: rows 0 and 3 survive, 2 is lost
    things = KernelSet(
        torch.tensor(kernels),
        torch.tensor(classes),
        torch.tensor([0.9, 0.8, 0.7, 0.6], dtype=torch.float64),
        torch.tensor(depth),
    )
    fused = fuse_thing_kernels(things, thr, class_specific=True)
    assert fused.classes.tolist() == ref_c
    np.testing.assert_allclose(fused.kernels.numpy(), ref_k, atol=1e-12)
    np.testing.assert_allclose(fused.depth_kernels.numpy(), ref_d, atol=1e-12)
    np.testing.assert_allclose(fused.kernels[0].numpy(), (v0 + v1) / 2, atol=1e-12)
    assert fused.scores.tolist() == [0.9, 0.6]


def test_cosine_fusion_random_vs_brute_force():
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(6, 16, generator=gen, dtype=torch.float64)
    kernels = base[torch.randint(0, 6, (40,), generator=gen)] + 0.15 * torch.randn(
        40, 16, generator=gen, dtype=torch.float64
    )
    classes = torch.randint(0, 3, (40,), generator=gen)
    depth = torch.randn(40, 5, generator=gen, dtype=torch.float64)
    scores = torch.linspace(1, 0.1, 40, dtype=torch.float64)
    for class_specific in (True, False):
        cls_ref = classes.tolist() if class_specific else [0] * 40
        ref_k, ref_d, ref_c = _brute_force_fusion(kernels.numpy(), cls_ref, depth.numpy(), 0.97)
        fused = fuse_thing_kernels(KernelSet(kernels, classes, scores, depth), 0.97, class_specific)
        assert len(fused) == len(ref_c) < 40
        np.testing.assert_allclose(fused.kernels.numpy(), ref_k, atol=1e-10)
        np.testing.assert_allclose(fused.depth_kernels.numpy(), ref_d, atol=1e-10)


def test_stuff_fusion_means_per_class():
    kernels = torch.arange(12, dtype=torch.float64).reshape(4, 3)
    stuff = KernelSet(kernels, torch.tensor([5, 2, 5, 7]), torch.tensor([0.2, 0.4, 0.6, 0.8]), kernels * 10)
    fused = fuse_stuff_kernels(stuff)
    assert fused.classes.tolist() == [2, 5, 7]
    np.testing.assert_allclose(fused.kernels[1].numpy(), (kernels[0] + kernels[2]).numpy() / 2)
    np.testing.assert_allclose(fused.scores.numpy(), [0.4, 0.4, 0.8])
    np.testing.assert_allclose(fused.depth_kernels[1].numpy(), (kernels[0] + kernels[2]).numpy() * 5)


def _level(center, region, c=4, e=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    h, w = center.shape[-2:]
    return LevelOutputs(
        center[None],
        region[None],
        torch.randn(1, c, h, w, generator=gen),
        torch.randn(1, e, h, w, generator=gen),
    )


def test_thing_candidates_vs_loops():
    gen = torch.Generator().manual_seed(1)
    center = torch.randn(3, 7, 9, generator=gen) * 3
    cfg = InferenceConfig(thing_threshold=0.3, top_num=20)
    level = _level(center, torch.randn(5, 7, 9, generator=gen))
    found, positions = thing_candidates(level, 0, 3, cfg)
    # Brute force: sigmoid, 3x3 mean with zeros outside counted, peak test, threshold.
    s = torch.sigmoid(center).numpy().astype(np.float64)
    k, h, w = s.shape
    pad = np.pad(s, ((0, 0), (1, 1), (1, 1)))
    smooth = np.zeros_like(s)
    for y in range(h):
        for x in range(w):
            smooth[:, y, x] = (s[:, y, x] + pad[:, y : y + 3, x : x + 3].mean(axis=(1, 2))) / 2
    padm = np.pad(smooth, ((0, 0), (1, 1), (1, 1)), constant_values=-1)
    cands = []
    for c in range(k):
        for y in range(h):
            for x in range(w):
                if smooth[c, y, x] >= padm[c, y : y + 3, x : x + 3].max() - 1e-7:
                    cands.append((smooth[c, y, x], c, y * w + x))
    cands.sort(key=lambda t: -t[0])
    cands = [t for t in cands[: cfg.top_num // 2] if t[0] > cfg.thing_threshold]
    assert len(found) == len(cands) > 3
    np.testing.assert_allclose(found.scores.numpy(), [t[0] for t in cands], atol=1e-6)
    assert sorted(zip(found.classes.tolist(), positions.tolist())) == sorted((t[1], t[2]) for t in cands)
    flat = level.kernels[0].flatten(1)
    np.testing.assert_allclose(found.kernels.numpy(), flat[:, positions].t().numpy())


def test_stuff_candidates_inconsistent_denominators():
    gen = torch.Generator().manual_seed(2)
    region = torch.randn(5, 6, 8, generator=gen) * 2
    level = _level(torch.zeros(3, 6, 8), region, seed=2)
    cfg = InferenceConfig(stuff_threshold=0.1, stuff_region_threshold=0.4)
    found = stuff_candidates(level, 0, cfg)
    prob = torch.sigmoid(region).numpy().astype(np.float64)
    arg = prob.argmax(0)
    g = level.kernels[0].numpy().astype(np.float64)
    d = level.depth_kernels[0].numpy().astype(np.float64)
    expected = []
    for c in range(5):
        n_c = (arg == c).sum()
        if n_c == 0:
            continue
        region_c = (arg == c) & (prob[c] >= 0.4)
        score = (prob[c] * region_c).sum() / n_c
        if score > 0.1:
            kernel = (g * region_c).sum(axis=(1, 2)) / n_c
            depth = (d * region_c).sum(axis=(1, 2)) / max(region_c.sum(), 1)
            expected.append((c, score, kernel, depth))
    assert found.classes.tolist() == [t[0] for t in expected]
    np.testing.assert_allclose(found.scores.numpy(), [t[1] for t in expected], atol=1e-6)
    np.testing.assert_allclose(found.kernels.numpy(), np.stack([t[2] for t in expected]), atol=1e-5)
    np.testing.assert_allclose(found.depth_kernels.numpy(), np.stack([t[3] for t in expected]), atol=1e-5)
