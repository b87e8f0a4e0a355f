"""median_filter vs kornia, torch unfold+median, scipy and OpenCV (uint8), k in {21, 31, 41, 51}.

Groups: "median k{k} {size}". Peers that take minutes or many GB per call are
skipped with the reason (SPEC §4 quotes their times on this machine).
"""
import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import derain_kernels as dk

SHAPES = {"train-8x3x128": (8, 3, 128, 128), "infer-1x3x512": (1, 3, 512, 512)}
KS = [21, 31, 41, 51]
IMPLS = ["ours", "ours-uint8", "opencv-uint8", "unfold", "scipy", "kornia"]


def _unfold_median(x, k):
    r = k // 2
    win = F.pad(x, (r, r, r, r), mode="reflect").unfold(-2, k, 1).unfold(-2, k, 1)
    return win.reshape(*win.shape[:-2], k * k).median(dim=-1).values


def _skip_reason(impl, k, size):
    big = size == "infer-1x3x512"
    if impl == "kornia":
        if importlib.util.find_spec("kornia") is None:
            return "kornia not installed"
        if big or k > 31:
            return "kornia takes 21-56 s and 6-10 GB per call at these sizes (SPEC §4)"
    if impl == "unfold" and (big or k > 31):
        return "torch unfold+median: 6+ s and 3+ GB per call (SPEC §4)"
    if impl == "scipy":
        if importlib.util.find_spec("scipy") is None:
            return "scipy not installed"
        if big or k > 31:
            return "scipy takes 8+ s per call (one thread, SPEC §4)"
    if impl == "opencv-uint8" and importlib.util.find_spec("cv2") is None:
        return "opencv not installed"
    return None


@pytest.mark.parametrize("size", SHAPES)
@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("impl", IMPLS)
def test_median_forward(benchmark, impl, k, size):
    reason = _skip_reason(impl, k, size)
    if reason:
        pytest.skip(reason)
    if benchmark.disabled and impl in ("kornia", "unfold", "scipy"):
        pytest.skip("seconds per call: only timed runs call the slow peers (CI smoke runs skip them)")
    benchmark.group = f"median k{k} {size}"
    shape = SHAPES[size]
    x = torch.rand(shape)
    xu = (x * 255).round().to(torch.uint8)
    if impl == "ours":
        fn = lambda: dk.median_filter(x, k)  # noqa: E731
    elif impl == "ours-uint8":
        fn = lambda: dk.median_filter(xu, k, "replicate")  # noqa: E731
    elif impl == "opencv-uint8":
        import cv2

        images = [np.ascontiguousarray(xu[b].permute(1, 2, 0).numpy()) for b in range(shape[0])]
        fn = lambda: [cv2.medianBlur(im, k) for im in images]  # noqa: E731
    elif impl == "unfold":
        fn = lambda: _unfold_median(x, k)  # noqa: E731
    elif impl == "scipy":
        import scipy.ndimage as ndi

        xn = x.numpy()
        fn = lambda: ndi.median_filter(xn, size=(1, 1, k, k), mode="mirror")  # noqa: E731
    else:
        from kornia.filters import median_blur

        fn = lambda: median_blur(x, (k, k))  # noqa: E731
    out = benchmark(fn)
    assert out is not None


@pytest.mark.parametrize("size", SHAPES)
def test_median_forward_backward(benchmark, size):
    benchmark.group = f"median fwd+bwd k31 {size}"
    x = torch.rand(SHAPES[size], requires_grad=True)

    def step():
        dk.median_filter(x, 31).sum().backward()

    benchmark(step)
    assert x.grad is not None
