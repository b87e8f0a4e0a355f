"""Helpers shared by the op tests: layouts of one tensor, triton availability."""
import importlib.util
import os

import pytest
import torch

HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")


def triton_device() -> str:
    return "cuda" if os.environ.get("DERAIN_TEST_CUDA", "0") == "1" else "cpu"


def layouts(x: torch.Tensor):
    """(name, tensor) pairs with the same values as 4-D x: contiguous, channels-last, non-contiguous."""
    yield "contiguous", x.contiguous()
    yield "channels_last", x.contiguous(memory_format=torch.channels_last)
    # a strided view: every other column of a wider tensor
    wide = torch.empty(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype, device=x.device)
    wide[..., ::2] = x
    yield "strided", wide[..., ::2]
    # a transposed view (H and W swapped back)
    yield "transposed", x.transpose(-1, -2).contiguous().transpose(-1, -2)
