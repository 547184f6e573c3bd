"""benchmarks/kernel_propagation.py: a kernel applied to an embedding gives the region the kernel
selects, at the image size, and its IoU with the object follows the object."""

from __future__ import annotations

import numpy as np
import torch

from . import load_benchmark


def embedding_with_region(rows: slice, cols: slice) -> torch.Tensor:
    """(4, 16, 32) stride-4 embedding: channel 1 is +8 inside the region, -8 outside."""
    emb = torch.zeros(4, 16, 32)
    emb[1] = -8.0
    emb[1, rows, cols] = 8.0
    return emb


def test_propagated_mask_follows_the_embedding():
    bench = load_benchmark("kernel_propagation")
    kernel = torch.tensor([0.0, 1.0, 0.0, 0.0])
    obj = np.zeros((64, 128), bool)
    obj[16:32, 32:64] = True  # cells 4..7 x 8..15 of the stride-4 map
    same = bench.propagated_iou(kernel, embedding_with_region(slice(4, 8), slice(8, 16)), (64, 128), obj)
    moved = bench.propagated_iou(kernel, embedding_with_region(slice(4, 8), slice(12, 20)), (64, 128), obj)
    other = bench.propagated_iou(-kernel, embedding_with_region(slice(4, 8), slice(8, 16)), (64, 128), obj)
    assert same > 0.8
    assert 0.2 < moved < 0.6  # half the width overlaps
    assert other < 0.01  # the kernel selects everything but the object
