"""Median filter (docs/method.md#soft-label, docs/ops/median.md): median_filter and the soft label of the method.

Exact median of an odd kh x kw window around every pixel of the last two
dimensions, for float16, bfloat16, float32, float64 and uint8 (no
quantisation), any leading dimensions, any odd kernel size up to
MAX_KERNEL_SIZE per side and MAX_KERNEL_AREA elements (also larger than the
image). See docs/ops/median.md for the selection (tie) rule, the padding rules
and the NaN policy, which every kernel (C++, Triton, reference) shares.
"""
from __future__ import annotations

import torch

from .. import reference
from .._backend import has_op
from .._checks import FLOAT_DTYPES, check_bool, check_choice, check_odd_size, check_tensor
from .._contracts import MEDIAN_PADDINGS as PADDINGS
from ._common import eager_cache, explain_failure
from .composite import min_composite as _min_composite

_CPP = has_op("median_filter")
# The public functions call the kernel first and check only when it raises (_common.explain_failure).
_MEDIAN = torch.ops.derain.median_filter.default if _CPP else None
MEDIAN_DTYPES = FLOAT_DTYPES + (torch.uint8,)
# The largest windows. The CPU kernel ranks the padded region of each output tile,
# (tile + window - 1) elements per side, so its scratch grows with the window's sides
# and area: 8191 x 8191 takes about 250 MB and 3 s on an 8 x 8 image, 65535 x 1 16 s on
# 128 x 128, and a window of 2**31 elements would need tens of GB.
MAX_KERNEL_SIZE = 65535  # per side
MAX_KERNEL_AREA = 1 << 26  # kh * kw


def _check(x, kernel_size, padding):
    check_tensor(x, "x", dtypes=MEDIAN_DTYPES, min_dim=2)
    kh, kw = _window.__wrapped__(kernel_size, padding)
    return kh, kw


@eager_cache()
def _window(kernel_size, padding) -> list[int]:
    """[kh, kw] of a checked kernel_size (and a checked padding), once per distinct pair."""
    kh, kw = check_odd_size(kernel_size, "kernel_size", MAX_KERNEL_SIZE)
    if kh * kw > MAX_KERNEL_AREA:
        raise ValueError(f"kernel_size must cover at most {MAX_KERNEL_AREA} (2**26) elements, kh·kw; "
                         f"got {kh}x{kw} = {kh * kw}")
    check_choice(padding, "padding", PADDINGS)
    return [kh, kw]


def _window_of(kernel_size, padding) -> list[int]:
    """_window for any kernel_size, a list too (as a tuple: the cache needs hashable keys)."""
    return _window(tuple(kernel_size) if kernel_size.__class__ is list else kernel_size, padding)


def median_filter(x: torch.Tensor, kernel_size, padding: str = "reflect") -> torch.Tensor:
    """Exact median over the odd kh x kw window around each element of the last two dims.

    x: (..., H, W), float16/bfloat16/float32/float64 or uint8; any layout.
    kernel_size: odd int k or pair (kh, kw), each in [1, 65535], kh·kw <= 2**26 (also > H, W).
    padding: "reflect" (= torch reflect = scipy "mirror"; periodic mirror when
    the window is larger than the image), "replicate" (= OpenCV medianBlur =
    scipy "nearest"), "zeros" (= kornia median_blur).
    Returns the same shape, dtype and layout as x.
    Gradient: the whole output gradient goes to the selected element, the one at
    the middle position when the window is sorted by (value, flat index h*W + w);
    padding copies route it to their source; a zero pad receives none.
    NaN: a window containing a NaN returns NaN and passes no gradient.
    """
    if _CPP:
        try:
            return _MEDIAN(x, _window_of(kernel_size, padding), padding)
        except Exception:
            explain_failure(_check, x, kernel_size, padding)
            raise
    kh, kw = _check(x, kernel_size, padding)
    if _CPP:
        return _MEDIAN(x, [kh, kw], padding)
    return reference.median_filter(x, (kh, kw), padding)


def soft_label(x: torch.Tensor, kernel_size=31, padding: str = "reflect",
               min_composite: bool = False) -> torch.Tensor:
    """The soft label Y_s of Rain O'er Me (docs/method.md#soft-label): median_filter(x, kernel_size, padding).

    With min_composite=True (the CVPR-W variant): min(x, median_filter(x)).
    Shapes/dtypes as median_filter. The result is a label: it is computed without
    autograd and returned detached (no gradient flows to x).
    """
    if _CPP and (min_composite is False or min_composite is True):
        try:  # a label: the op on a detached x records no graph
            xd = x.detach()
            y = _MEDIAN(xd, _window_of(kernel_size, padding), padding)
            if min_composite:
                y = _min_composite(xd, y) if xd.is_floating_point() else torch.minimum(xd, y)
            return y
        except Exception:
            explain_failure(_check, x, kernel_size, padding)
            raise
    kh, kw = _check(x, kernel_size, padding)
    check_bool(min_composite, "min_composite")
    with torch.no_grad():
        x = x.detach()
        y = median_filter(x, (kh, kw), padding)
        if min_composite:
            y = _min_composite(x, y) if x.is_floating_point() else torch.minimum(x, y)
    return y


if _CPP:
    from ._common import register_triton_cuda

    # ---- fake tensors (shapes and strides for torch.compile / meta) ----
    @torch.library.register_fake("derain::median_filter")
    def _median_filter_fake(x, kernel_size, padding="reflect"):
        return torch.empty_like(x, memory_format=torch.preserve_format)

    @torch.library.register_fake("derain::_median_filter_backward")
    def _median_filter_backward_fake(grad, x, kernel_size, padding="reflect"):
        return torch.empty_like(x, memory_format=torch.preserve_format)

    @torch.library.register_fake("derain::_median_filter_with_index")
    def _median_filter_with_index_fake(x, kernel_size, padding="reflect"):
        return (torch.empty_like(x, memory_format=torch.preserve_format),
                x.new_empty(x.shape, dtype=torch.int32))

    # _median_filter_backward_index is made of ATen ops (CompositeImplicitAutograd): no fake needed.
    # autograd of median_filter: registered from C++ (csrc/ops/autograd/median_autograd.cpp)

    # ---- CUDA: Triton ----
    for _op in ("median_filter", "_median_filter_backward"):
        register_triton_cuda(_op, "median")
