"""Compositing ops of the method (docs/method.md#rain-composite): min_composite and rain_composite.

Both are element-wise and broadcast like torch's binary ops: inputs of any
broadcastable shapes (a rain layer of shape (1, C, H, W) over a batch, say),
same dtype (float16, bfloat16, float32, float64; no implicit promotion) and
same device. The result has the broadcast shape and, when it equals x's (or
clean's) shape, x's memory layout (channels-last stays channels-last).
Gradients of broadcast inputs are summed over the broadcast dimensions.
"""
from __future__ import annotations

import torch

from .. import reference
from .._backend import has_op
from .._checks import check_bool, check_broadcastable, check_same, check_tensor
from .._layout import empty_elementwise
from ._common import explain_failure, register_triton_cuda

_CPP = has_op("min_composite")
# The public functions call the op first and check their arguments only when it raises: the
# kernels refuse every bad argument (csrc/ops/common/composite_impl.h, cpu/composite_kernel.cpp),
# and the Python checks then name the argument. A good call costs one dispatcher call.
_MIN_COMPOSITE = torch.ops.derain.min_composite.default if _CPP else None
_RAIN_COMPOSITE = torch.ops.derain.rain_composite.default if _CPP else None


def min_composite(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Element-wise minimum of x and y, with the gradient going to the selected input.

    Shapes: x, y broadcastable -> broadcast shape. Dtypes: floating, equal.
    Gradient: all of it to the smaller input; on ties (x == y) all to x — unlike
    torch.minimum, which splits ties ½/½. NaN propagates: a NaN in x is returned
    (gradient to x); a NaN in y where x is not NaN is returned (gradient to y).
    """
    if _CPP:
        try:
            return _MIN_COMPOSITE(x, y)
        except Exception:
            explain_failure(_check_pair, x, "x", y, "y")
            raise
    _check_pair(x, "x", y, "y")
    return reference.min_composite(x, y)


def rain_composite(clean: torch.Tensor, rain: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """The authors' rainy composite D = clamp(clean + rain, 0, 1) (plain sum if clamp=False).

    Shapes: clean, rain broadcastable -> broadcast shape. Dtypes: floating, equal.
    Gradient: to both inputs, equal to the incoming gradient where
    0 <= clean + rain <= 1 (torch.clamp's convention at the bounds) and zero
    where the sum was clamped; NaN sums stay NaN and get zero gradient.
    float16 / bfloat16 are added in float32; value and gradient both follow that
    sum, rounded to the dtype once: bfloat16 0.5 + 0.50390625 = 1.00390625 > 1 is
    clamped (gradient 0, as in exact arithmetic), though the sum rounded to
    bfloat16 first would be 1.0. The trainer detaches `rain` itself (docs/method.md#rain-composite); the op does not.
    """
    if _CPP and (clamp is True or clamp is False):  # the schema would take an int for the bool
        try:
            return _RAIN_COMPOSITE(clean, rain, clamp)
        except Exception:
            explain_failure(_check_rain, clean, rain, clamp)
            raise
    _check_rain(clean, rain, clamp)
    return reference.rain_composite(clean, rain, clamp)


def _check_pair(a, a_name, b, b_name) -> None:
    check_tensor(a, a_name)
    check_tensor(b, b_name)
    check_same(a, a_name, b, b_name)
    check_broadcastable(a, a_name, b, b_name)


def _check_rain(clean, rain, clamp) -> None:
    _check_pair(clean, "clean", rain, "rain")
    check_bool(clamp, "clamp")


if _CPP:
    # ---- fake tensors (shapes and strides for torch.compile / meta) ----
    @torch.library.register_fake("derain::min_composite")
    def _min_composite_fake(x, y):
        check_same(x, "x", y, "y")  # a meta input takes this path instead of the kernel's checks
        return empty_elementwise(x, torch.broadcast_shapes(x.shape, y.shape))

    @torch.library.register_fake("derain::_min_composite_backward")
    def _min_composite_backward_fake(grad, x, y):
        shape = torch.broadcast_shapes(x.shape, y.shape)
        return empty_elementwise(grad, shape), empty_elementwise(grad, shape)

    @torch.library.register_fake("derain::rain_composite")
    def _rain_composite_fake(clean, rain, clamp=True):
        check_same(clean, "clean", rain, "rain")
        return empty_elementwise(clean, torch.broadcast_shapes(clean.shape, rain.shape))

    @torch.library.register_fake("derain::_rain_composite_backward")
    def _rain_composite_backward_fake(grad, clean, rain, clamp=True):
        return empty_elementwise(grad, torch.broadcast_shapes(clean.shape, rain.shape))

    # ---- autograd ----
    # min_composite and rain_composite: registered from C++ (csrc/ops/autograd/composite_autograd.cpp),
    # which calls the backward ops below and sums broadcast gradients; here, the backward ops' own
    # autograd (double backward).
    def _min_bwd_setup(ctx, inputs, output):
        _, x, y = inputs
        ctx.save_for_backward(x, y)

    def _min_bwd_backward(ctx, ggx, ggy):
        # The backward is linear in grad: d(gx, gy)/d grad routes ggx where x was
        # selected and ggy elsewhere. It is piecewise constant in x and y.
        x, y = ctx.saved_tensors
        gg = None
        if ggx is not None:
            gg = torch.ops.derain._min_composite_backward(ggx, x, y)[0]
        if ggy is not None:
            part = torch.ops.derain._min_composite_backward(ggy, x, y)[1]
            gg = part if gg is None else gg + part
        return gg, None, None

    torch.library.register_autograd("derain::_min_composite_backward", _min_bwd_backward,
                                    setup_context=_min_bwd_setup)

    def _rain_bwd_setup(ctx, inputs, output):
        _, clean, rain, clamp = inputs
        ctx.save_for_backward(clean, rain)
        ctx.clamp = clamp

    def _rain_bwd_backward(ctx, gg):
        clean, rain = ctx.saved_tensors
        return torch.ops.derain._rain_composite_backward(gg, clean, rain, ctx.clamp), None, None, None

    torch.library.register_autograd("derain::_rain_composite_backward", _rain_bwd_backward,
                                    setup_context=_rain_bwd_setup)

    # ---- CUDA: Triton ----
    for _op in ("min_composite", "_min_composite_backward", "rain_composite", "_rain_composite_backward"):
        register_triton_cuda(_op, "composite")
