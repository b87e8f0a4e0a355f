"""Argument checks shared by the public ops: clear errors that name the argument.

Every check is a few integer / type tests (no tensor data is read), so it costs
the same for any input size.
"""
from __future__ import annotations

import math
import numbers

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor(t, name: str, dtypes=FLOAT_DTYPES, min_dim: int = 0) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} must have dtype in ({allowed}), got {str(t.dtype).replace('torch.', '')}")
    if t.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimensions (..., H, W), got shape {tuple(t.shape)}")


def check_same(a: torch.Tensor, a_name: str, b: torch.Tensor, b_name: str) -> None:
    """Same dtype and device (no implicit promotion or transfer)."""
    if a.dtype != b.dtype:
        raise TypeError(f"{a_name} and {b_name} must have the same dtype, got {a.dtype} and {b.dtype}")
    if a.device != b.device:
        raise ValueError(f"{a_name} and {b_name} must be on the same device, got {a.device} and {b.device}")


def check_broadcastable(a: torch.Tensor, a_name: str, b: torch.Tensor, b_name: str) -> torch.Size:
    try:
        return torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError:
        raise ValueError(
            f"{a_name} (shape {tuple(a.shape)}) and {b_name} (shape {tuple(b.shape)}) are not broadcastable"
        ) from None


def check_int(v, name: str, lo: int | None = None, hi: int | None = None) -> int:
    """A Python int (not a bool, not a float) in [lo, hi]; the message names the argument and the limit."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if lo is not None and v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise ValueError(f"{name} must be <= {hi}, got {v}")
    return int(v)


def check_bool(v, name: str) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"{name} must be a bool, got {type(v).__name__}")
    return v


def check_real(v, name: str, positive: bool = False) -> float:
    """A finite real number (a Python or NumPy scalar; not a bool, not a tensor) -> float."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__}")
    try:
        f = float(v)
    except OverflowError:  # an int beyond the float range
        raise ValueError(f"{name} must be a finite number{' > 0' if positive else ''}, "
                         "got an int beyond the float range") from None
    if not math.isfinite(f) or (positive and f <= 0):
        raise ValueError(f"{name} must be a finite number{' > 0' if positive else ''}, got {v}")
    return f


def check_odd_size(k, name: str, max_size: int | None = None) -> tuple[int, int]:
    """An odd positive int or pair of odd positive ints (each <= max_size) -> (kh, kw)."""
    if isinstance(k, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got bool")
    if isinstance(k, int):
        k = (k, k)
    if not (isinstance(k, (tuple, list)) and len(k) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in k)):
        raise TypeError(f"{name} must be an int or a pair of ints, got {k!r}")
    for v in k:
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
        if v % 2 == 0:
            raise ValueError(f"{name} must be odd, got {v}")
        if max_size is not None and v > max_size:
            raise ValueError(f"{name} must be <= {max_size} (per side), got {v}")
    return int(k[0]), int(k[1])


def check_choice(value, name: str, choices) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, one of {', '.join(repr(c) for c in choices)}; "
                        f"got {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")


def check_conv3x3_params(x: torch.Tensor, weight, bias, cin: int, dtypes) -> None:
    """weight (Cout, cin, 3, 3) and bias (Cout,) of a 3x3 convolution of x: dtype, device, shapes."""
    check_tensor(weight, "weight", dtypes)
    check_same(x, "x", weight, "weight")
    if weight.dim() != 4 or weight.shape[1] != cin or weight.shape[2:] != (3, 3):
        raise ValueError(f"weight must have shape (Cout, {cin}, 3, 3) for {cin} input channels, got {tuple(weight.shape)}")
    check_tensor(bias, "bias", dtypes)
    check_same(x, "x", bias, "bias")
    if tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
