"""UDRDR's directional kernels and rain-direction regularizer (Eq. 5), fused (docs/method.md#related-methods-that-use-the-same-ops, docs/ops/related.md)."""
from __future__ import annotations

import numbers

import torch

from .. import reference
from .._backend import has_op
from .._checks import check_choice, check_int, check_real, check_same, check_tensor
from .._contracts import line_kernel_bank, select_kernels
from .._layout import empty_like_layout
from ._common import eager_cache, explain_failure, register_triton_cuda

_CPP = has_op("_rain_direction_sums")
# rain_direction_loss calls the kernel first and checks only when it raises (_common.explain_failure).
_RAIN_DIRECTION_LOSS = torch.ops.derain._rain_direction_loss.default if _CPP else None  # sums and reduction
REAL_DTYPES = (torch.float32, torch.float64)
REDUCTIONS = ("mean", "sum", "none")
# The largest bank, n·size² values (8 MiB in float64): the bank is built in Python, one
# kernel row of Python floats at a time, which takes about a second at this size.
MAX_BANK_VALUES = 1 << 20


def _check_bank_args(n, size) -> None:
    n = check_int(n, "n", 1)
    size = check_int(size, "size", 1)
    if size % 2 == 0:
        raise ValueError(f"size must be odd (kernels centred on a pixel), got {size}")
    if n * size * size > MAX_BANK_VALUES:
        raise ValueError(f"the bank holds n·size² values, at most {MAX_BANK_VALUES} (2**20): "
                         f"n={n} and size={size} give {n * size * size}; use fewer or smaller kernels")


def directional_kernels(n: int = 18, size: int = 5, dtype: torch.dtype = torch.float32,
                        device=None) -> torch.Tensor:
    """UDRDR's bank of n line kernels at 0°, 180/n°, …, (n-1)·180/n° (10° steps for n = 18).

    Returns (n, size, size), n·size² <= MAX_BANK_VALUES (2**20), in a floating dtype.
    Angle 0° points right (along +column), angles grow
    counter-clockwise as displayed (90° is vertical). Construction: the line through the
    centre pixel is sampled once per pixel step along its major axis (columns when
    |cos θ| >= |sin θ|, rows otherwise), the unit of mass of each step split linearly
    between the two nearest pixels on the minor axis; the kernel is divided by `size`,
    so each sums to 1. Kernels are point-symmetric (convolution = correlation).
    """
    _check_bank_args(n, size)
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {type(dtype).__name__}")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype (the kernels are fractions summing to 1), got {dtype}")
    if device is not None and not isinstance(device, torch.device):
        if not isinstance(device, (str, int)) or isinstance(device, bool):
            raise TypeError(f"device must be a torch.device, str or int, got {type(device).__name__}")
        try:
            device = torch.device(device)
        except RuntimeError as exc:
            raise ValueError(f"device: {exc}") from None
    return line_kernel_bank(n, size).to(dtype=dtype, device=device, copy=True)  # callers may modify it


def _check(z, z_gt, angle, reduction, n, size):
    """The checks of rain_direction_loss; returns the angle (a float when a number)."""
    check_tensor(z, "z", dtypes=REAL_DTYPES)
    check_tensor(z_gt, "z_gt", dtypes=REAL_DTYPES)
    if z.dim() != 4:
        raise ValueError(f"z must be (B, C, H, W), got shape {tuple(z.shape)}")
    check_same(z, "z", z_gt, "z_gt")
    if z_gt.shape != z.shape:
        raise ValueError(f"z_gt must have z's shape {tuple(z.shape)}, got {tuple(z_gt.shape)}")
    check_choice(reduction, "reduction", REDUCTIONS)
    _check_bank_args(n, size)
    B = z.shape[0]
    if isinstance(angle, torch.Tensor):
        if angle.is_complex() or angle.dtype == torch.bool:
            raise TypeError(f"angle must be a real tensor, got {angle.dtype}")
        if angle.numel() != 1 and tuple(angle.shape) != (B,):
            raise ValueError(f"angle must be a number or a tensor of shape ({B},) (one per image), "
                             f"got shape {tuple(angle.shape)}")
        if angle.device != z.device and angle.device.type != "cpu":
            raise ValueError(f"angle must be on z's device ({z.device}) or on the CPU, got {angle.device}")
    else:
        angle = _number_angle(angle)
    return angle


def _number_angle(angle) -> float:
    """A finite real number (not a bool) as a float."""
    if isinstance(angle, bool) or not isinstance(angle, numbers.Real):
        raise TypeError(f"angle must be a number or a tensor, got {type(angle).__name__}")
    return check_real(angle, "angle")


@eager_cache(maxsize=512)
def _kernels_for(angle, batch, n, size, reduction, dtype, device) -> torch.Tensor:
    """(batch, 2, size, size): the kernels of a number angle (select_kernels), with the scalar checks."""
    check_choice(reduction, "reduction", REDUCTIONS)
    _check_bank_args(n, size)
    return select_kernels(_number_angle(angle), batch, n, size, dtype, device)


def rain_direction_loss(z: torch.Tensor, z_gt: torch.Tensor, angle, reduction: str = "mean",
                        n: int = 18, size: int = 5) -> torch.Tensor:
    """UDRDR's rain-direction regularizer Σ_{k ∈ {k∥, k⊥}} L1(k ⊗ z − k ⊗ z_gt) (Eq. 5).

    z, z_gt: (B, C, H, W), same shape, float32 / float64. angle: rain direction in degrees,
    a tensor of shape (B,) (one per image) on z's device or the CPU, or a number /
    one-element tensor for all images.
    k∥ / k⊥ are the kernels of `directional_kernels(n, size)` nearest to angle and angle + 90°
    (see `kernel_indices`); a non-finite angle in a tensor makes that image's loss NaN.
    Each kernel is applied per channel (depthwise), zero padding
    size // 2, output the input size. "mean": Σ over the two kernels of the mean absolute
    response difference over (B, C, H, W) (F.l1_loss each, summed); "sum": Σ of all absolute
    values; "none": per image (B,), Σ over the two kernels of the mean over (C, H, W).
    Means over no values (empty inputs) are NaN, sums 0 (torch.mean / torch.sum).
    Responses are k ⋆ (z − z_gt) over the kernel's non-zero taps: an infinity in z or z_gt
    gives an infinite loss (NaN where z and z_gt hold the same infinity), NaN propagates.
    Gradients to z and z_gt (= minus z's), sign(0) = 0, sign(NaN) = NaN; none to angle.
    The paper's weight (1.2) is the caller's.
    """
    if _CPP:
        try:
            if not isinstance(angle, torch.Tensor) and z.dim() == 4:
                # a number: the kernels are selected once per (angle, batch, bank, dtype, device)
                kernels = _kernels_for(angle, z.shape[0], n, size, reduction, z.dtype, z.device)
                return _RAIN_DIRECTION_LOSS(z, z_gt, kernels, reduction)
        except Exception:
            explain_failure(_check, z, z_gt, angle, reduction, n, size)
            raise
    angle = _check(z, z_gt, angle, reduction, n, size)
    B, C, H, W = z.shape
    if not _CPP:
        return reference.rain_direction_loss(z, z_gt, angle, reduction, n, size)
    kernels = select_kernels(angle, B, n, size, z.dtype, z.device)  # (B, 2, size, size)
    s = torch.ops.derain._rain_direction_sums(z, z_gt, kernels)
    if reduction == "sum":
        return s.sum()
    if reduction == "mean":
        return s.sum() / z.numel()  # NaN for empty inputs, like torch.mean
    return s.sum(1) / (C * H * W)


if _CPP:
    @torch.library.register_fake("derain::_rain_direction_sums")
    def _sums_fake(z, z_gt, kernels):
        return z.new_empty(z.shape[0], kernels.shape[1])

    @torch.library.register_fake("derain::_rain_direction_sums_backward")
    def _sums_backward_fake(grad, z, z_gt, kernels):
        return empty_like_layout(z)

    # autograd of _rain_direction_sums: registered from C++ (csrc/ops/autograd/related_autograd.cpp)

    for _op in ("_rain_direction_sums", "_rain_direction_sums_backward"):
        register_triton_cuda(_op, "rain_direction")
