from __future__ import annotations

import pytest
import torch

from panopticdepth.utils.device import DeviceError, resolve_device


def test_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    for bad in ("gpu", "cuda:x", "cuda:-1", "tpu", ""):
        with pytest.raises(DeviceError, match="unknown device"):
            resolve_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_cuda_without_gpu_is_a_clear_error():
    for name in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(DeviceError, match="no CUDA GPU is available"):
            resolve_device(name)
