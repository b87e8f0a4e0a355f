"""Bench cases of median_filter (k = 31, the soft label) against kornia, torch unfold, scipy, OpenCV.

Peers that take more than ~10 s per call on this machine are skipped with a note
(benchmarks/RESULTS.md lists their times), except kornia, timed once at every size because the
issue's goal is a ratio against it (about 21 s and 5.8 GB at 1x3x512x512). OpenCV's medianBlur works on uint8 only (for k > 5)
with replicate borders: it is timed on the uint8 version of the same image, as
is our op's uint8 path.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import torch
import torch.nn.functional as F

import derain_kernels as dk

from .harness import Case, Contender, on_device

K = 31
SHAPES = [(8, 3, 128, 128), (1, 3, 512, 512)]


def unfold_median(x: torch.Tensor, k: int) -> torch.Tensor:
    """pad + unfold + torch.median: the plain-PyTorch way (k*k copies of the image)."""
    r = k // 2
    p = F.pad(x, (r, r, r, r), mode="reflect")
    win = p.unfold(-2, k, 1).unfold(-2, k, 1)
    return win.reshape(*win.shape[:-2], k * k).median(dim=-1).values


def _fwd_bwd(f, x):
    def run():
        xs = x.detach().requires_grad_()
        f(xs).sum().backward()
    return run


SMOKE_SHAPES = [(2, 3, 40, 36)]


def cases(quick: bool = False, smoke: bool = False, device: str = "cpu") -> list[Case]:
    """smoke: tiny images (a window larger than the image) to check that every contender runs.

    device "cuda": the CPU-only peers (OpenCV, scipy) are left out; torch unfold+median and
    kornia run on the GPU at every size (k² copies of the image fit in its memory).
    """
    shapes = SMOKE_SHAPES if smoke else SHAPES[:1] if quick else SHAPES
    return [case for shape in shapes for case in on_device(_cases_for(shape, quick and not smoke, device), device)]


def _cases_for(shape, quick, device="cpu") -> list[Case]:
    s = "x".join(map(str, shape))
    gpu = device != "cpu"
    big = shape[-1] >= 512
    x = torch.rand(shape).to(device)
    xu = (x * 255).round().to(torch.uint8)
    fwd = Case("median_filter", "forward", f"{s} k{K}", [
        Contender("derain_kernels", lambda: (lambda: dk.median_filter(x, K)), ours=True, note="float32, reflect"),
        Contender("derain_kernels uint8", lambda: (lambda: dk.median_filter(xu, K, "replicate")),
                  note="uint8, replicate" + ("" if gpu else " (OpenCV's case)")),
    ])
    if gpu:
        fwd.missing.append("opencv medianBlur, scipy median_filter: CPU only")
    elif importlib.util.find_spec("cv2") is not None:
        import cv2

        images = [np.ascontiguousarray(xu[b].permute(1, 2, 0).numpy()) for b in range(shape[0])]
        fwd.contenders.append(Contender(
            "opencv medianBlur uint8", lambda: (lambda: [cv2.medianBlur(im, K) for im in images]),
            note="uint8 only, replicate only"))
    else:
        fwd.missing.append("opencv: not installed")
    slow = not gpu and (quick or big)  # on a GPU the k² copies of unfold+median take milliseconds
    if slow:
        fwd.missing.append("torch unfold+median: " + ("skipped in --quick" if quick else
                                                       "~6 s and 2.9 GB per call (benchmarks/RESULTS.md); skipped"))
        fwd.missing.append("scipy.ndimage.median_filter: " + ("skipped in --quick" if quick else
                                                               "~8.4 s per call, one thread (benchmarks/RESULTS.md); skipped"))
    else:
        fwd.contenders.append(Contender("torch unfold+median", lambda: (lambda: unfold_median(x, K)),
                                        note="k² copies of the image" if gpu else ""))
        if not gpu and importlib.util.find_spec("scipy") is not None:
            import scipy.ndimage as ndi

            xn = x.numpy()
            fwd.contenders.append(Contender(
                "scipy median_filter", lambda: (lambda: ndi.median_filter(xn, size=(1, 1, K, K), mode="mirror")),
                note="one thread"))
        elif not gpu:
            fwd.missing.append("scipy: not installed")
    if quick or importlib.util.find_spec("kornia") is None:
        fwd.missing.append("kornia median_blur: " + ("skipped in --quick" if quick else "not installed"))
    else:
        from kornia.filters import median_blur

        # the ">= 500x faster than kornia" is measured side by side: one call at 512²
        note = "" if gpu else "~21 s and 5.8 GB per call" if big else "~9 s per call"
        fwd.contenders.append(Contender("kornia median_blur", lambda: (lambda: median_blur(x, (K, K))), note=note))

    bwd = Case("median_filter", "forward+backward", f"{s} k{K}", [
        Contender("derain_kernels", lambda: _fwd_bwd(lambda t: dk.median_filter(t, K), x), ours=True),
    ])
    if slow:
        bwd.missing.append("torch unfold+median: " + ("skipped in --quick" if quick else "too slow at this size"))
    else:
        bwd.contenders.append(Contender("torch unfold+median", lambda: _fwd_bwd(lambda t: unfold_median(t, K), x)))
    return [fwd, bwd]
