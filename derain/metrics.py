"""Evaluation metrics of the derain literature: PSNR and SSIM on the Y channel (docs/method.md#evaluation-protocol).

Convention (as MATLAB `rgb2ycbcr` + `psnr`/`ssim` scripts of derain papers, and skimage):
images are quantised to uint8 (round(clamp(x, 0, 1)·255)), converted to BT.601 luma
Y = 16 + 65.481 R + 128.553 G + 24.966 B (R, G, B in [0, 1], Y in [16, 235], not rounded), and
compared with data range 255. SSIM: Gaussian window 11×11, σ = 1.5, population covariance,
"valid" window positions only (= skimage `structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=255)`), computed by `derain_kernels.ssim`.

Inputs: float (3, H, W) or (B, 3, H, W) RGB in [0, 1]. Outputs: float64 tensors of shape () or (B,),
one value per image. Identical images give PSNR = inf.
"""
from __future__ import annotations

import torch

import derain_kernels

_Y_WEIGHTS = (65.481, 128.553, 24.966)


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma (16–235 range, as MATLAB rgb2ycbcr) of RGB in [0, 1].

    x: (..., 3, H, W) float -> (..., 1, H, W) in [16/255, 235/255], same dtype.
    """
    _check_rgb(x, "x")
    r, g, b = x.unbind(-3)
    y = (16.0 + _Y_WEIGHTS[0] * r + _Y_WEIGHTS[1] * g + _Y_WEIGHTS[2] * b) / 255.0
    return y.unsqueeze(-3)


def quantise(x: torch.Tensor) -> torch.Tensor:
    """The uint8 value an image would be saved with, as float64 in [0, 1]."""
    return torch.round(x.detach().to(torch.float64).clamp(0, 1) * 255.0) / 255.0


def _y255(x: torch.Tensor) -> torch.Tensor:
    """(3, H, W) or (B, 3, H, W) -> (B, 1, H, W) float64 Y in [16, 235] of the uint8-quantised image."""
    if x.dim() == 3:
        x = x.unsqueeze(0)
    return rgb_to_y(quantise(x)) * 255.0


def _pair(pred: torch.Tensor, target: torch.Tensor):
    _check_rgb(pred, "pred")
    _check_rgb(target, "target")
    if pred.dim() not in (3, 4):
        raise ValueError(f"pred must be (3, H, W) or (B, 3, H, W), got shape {tuple(pred.shape)}")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    return _y255(pred), _y255(target.to(pred.device)), pred.dim() == 3


def psnr_y(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) on Y of the uint8-quantised images, data range 255. Shape () or (B,), float64."""
    yp, yt, single = _pair(pred, target)
    mse = (yp - yt).pow(2).mean(dim=(-3, -2, -1))
    out = 10.0 * torch.log10(255.0 ** 2 / mse)
    return out[0] if single else out


def ssim_y(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM on Y of the uint8-quantised images (skimage convention, see module doc). Shape () or (B,)."""
    yp, yt, single = _pair(pred, target)
    h, w = yp.shape[-2:]
    if h < 11 or w < 11:
        raise ValueError(f"ssim_y needs images of at least 11x11 pixels (valid 11x11 window), got {h}x{w}")
    out = _ssim_valid(yp, yt)
    return out[0] if single else out


def _ssim_valid(yp: torch.Tensor, yt: torch.Tensor) -> torch.Tensor:
    """Mean SSIM over the valid window positions, per image: (B, 1, H, W) float64 in [0, 255] -> (B,)."""
    return derain_kernels.ssim(yp, yt, window_size=11, sigma=1.5, data_range=255.0, padding="valid",
                               reduction="none")


def _check_rgb(x, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point image in [0, 1], got dtype {x.dtype}")
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"{name} must be RGB with shape (..., 3, H, W), got {tuple(x.shape)}")
