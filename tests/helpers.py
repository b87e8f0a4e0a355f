"""Helpers shared by the op tests: layouts of one tensor, triton availability."""
import importlib.util
import os

import pytest
import torch

from contract import LAYOUTS, as_layout

HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")


def triton_device() -> str:
    return "cuda" if os.environ.get("DERAIN_TEST_CUDA", "0") == "1" else "cpu"


def layouts(x: torch.Tensor):
    """(name, tensor) pairs with the same values as 4-D x: contiguous, channels-last, strided, transposed."""
    for name in LAYOUTS:
        yield name, as_layout(x, name)
