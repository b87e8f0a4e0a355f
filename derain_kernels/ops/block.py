"""The self-correcting dilated block of Rain O'er Me (docs/method.md#self-correcting-block) as one fused op.

    la  = ReLU(conv3x3(x; w1, b1))                      (padding 1)
    out = ReLU(conv3x3(x - la; w3, b3, dilation d) + la) (padding d, zeros)

exactly the authors' block (TIP Eq. 14 as released). Any channel count C
(16 in the network), float32 or float64, any layout; on CPU the C++ kernel
streams both convolutions, the subtraction, the residual add and both ReLUs
through a few cached rows per band. When a gradient is needed,
`self_correcting_block` runs the training pair: `self_correcting_block_train`
also returns la = ReLU(conv3x3(x)) with the mask of the final ReLU (out > 0) in
its sign bit, which autograd saves with x, and `self_correcting_block_backward_la`
reads it instead of recomputing la and reading the output (one convolution of
the five in the backward and one map less to read; measured 6-10 % faster per
training step on the CPU). `recompute=True` saves x and the output instead (less
memory when the caller keeps the output anyway, as a network does) and the
backward (`self_correcting_block_backward`) recomputes la and e from x; both give
bit-identical results.
"""
from __future__ import annotations

import torch

from .. import reference
from .._backend import has_op
from .._checks import check_bool, check_int, check_same, check_tensor
from .._contracts import effective_dilation
from .._layout import empty_like_layout
from ._common import eager_cache, explain_failure, register_triton_cuda

_CPP = has_op("self_correcting_block")
# self_correcting_block calls the kernel first and checks only when it raises (_common.explain_failure).
_BLOCK = torch.ops.derain.self_correcting_block.default if _CPP else None
_BLOCK_TRAIN = torch.ops.derain._self_correcting_block_train.default if _CPP else None
_DTYPES = (torch.float32, torch.float64)


def check_dilation(dilation, name: str = "dilation") -> int:
    return check_int(dilation, name, 1)


def _check_block(x, w1, b1, w3, b3, dilation) -> None:
    check_tensor(x, "x", _DTYPES)
    if x.dim() != 4:
        raise ValueError(f"x must be a 4-D tensor (N, C, H, W), got shape {tuple(x.shape)}")
    c = x.shape[1]
    for name, w in (("w1", w1), ("w3", w3)):
        check_tensor(w, name, _DTYPES)
        check_same(x, "x", w, name)
        if tuple(w.shape) != (c, c, 3, 3):
            raise ValueError(f"{name} must have shape ({c}, {c}, 3, 3) for x with {c} channels, got {tuple(w.shape)}")
    for name, b in (("b1", b1), ("b3", b3)):
        check_tensor(b, name, _DTYPES)
        check_same(x, "x", b, name)
        if tuple(b.shape) != (c,):
            raise ValueError(f"{name} must have shape ({c},), got {tuple(b.shape)}")
    check_dilation(dilation)


@eager_cache()
def _dilation_for(dilation, h, w) -> int:
    """The checked dilation, as the kernel runs it on H x W maps (effective_dilation)."""
    return effective_dilation(check_dilation(dilation), h, w)


def self_correcting_block(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w3: torch.Tensor,
                          b3: torch.Tensor, dilation: int = 3, *, recompute: bool = False) -> torch.Tensor:
    """Fused self-correcting dilated block: ReLU(conv_d(x − la) + la), la = ReLU(conv(x)).

    Shapes: x (N, C, H, W); w1, w3 (C, C, 3, 3); b1, b3 (C,) -> (N, C, H, W); empty inputs
    give empty outputs (and zero parameter gradients).
    dilation: any int >= 1 (one >= max(H, W) gives the same result as max(H, W), which is
    what runs). Dtypes: float32 or float64, all equal. Output is channels-last when x is.
    Gradient: to x and all four parameters (first order); ReLU's derivative is
    taken as 0 at 0 (like torch.relu) and at NaN. NaN in x propagates to the output.
    Saved for the backward: x and la (one map more than the output alone);
    `recompute=True` saves x and the output and recomputes la in the backward
    (slower; less memory when the caller keeps the output anyway).
    """
    if _CPP and (recompute is False or recompute is True):
        try:
            d = _dilation_for(dilation, x.shape[2], x.shape[3])
            if not recompute and (x.requires_grad or w1.requires_grad or b1.requires_grad or w3.requires_grad
                                  or b3.requires_grad) and torch.is_grad_enabled():
                return _BLOCK_TRAIN(x, w1, b1, w3, b3, d)[0]
            return _BLOCK(x, w1, b1, w3, b3, d)
        except Exception:
            explain_failure(_check_block, x, w1, b1, w3, b3, dilation)
            raise
    _check_block(x, w1, b1, w3, b3, dilation)
    check_bool(recompute, "recompute")
    dilation = effective_dilation(dilation, x.shape[2], x.shape[3])
    if _CPP:
        if not recompute and torch.is_grad_enabled() and any(t.requires_grad for t in (x, w1, b1, w3, b3)):
            return torch.ops.derain._self_correcting_block_train(x, w1, b1, w3, b3, dilation)[0]
        return torch.ops.derain.self_correcting_block(x, w1, b1, w3, b3, dilation)
    return reference.self_correcting_block(x, w1, b1, w3, b3, dilation)


if _CPP:
    def _same_device(x, *params):
        # a meta input takes the fake kernel instead of the kernel's checks
        for name, t in zip(("w1", "b1", "w3", "b3"), params):
            check_same(x, "x", t, name)

    @torch.library.register_fake("derain::self_correcting_block")
    def _block_fake(x, w1, b1, w3, b3, dilation=3):
        _same_device(x, w1, b1, w3, b3)
        return empty_like_layout(x)

    @torch.library.register_fake("derain::_self_correcting_block_backward")
    def _block_backward_fake(grad, x, out, w1, b1, w3, b3, dilation=3):
        return (empty_like_layout(x), torch.empty_like(w1, memory_format=torch.contiguous_format),
                torch.empty_like(b1, memory_format=torch.contiguous_format),
                torch.empty_like(w3, memory_format=torch.contiguous_format),
                torch.empty_like(b3, memory_format=torch.contiguous_format))

    # autograd of self_correcting_block and _self_correcting_block_train: registered from C++
    # (csrc/ops/autograd/block_autograd.cpp)

    @torch.library.register_fake("derain::_self_correcting_block_train")
    def _block_train_fake(x, w1, b1, w3, b3, dilation=3):
        _same_device(x, w1, b1, w3, b3)
        return empty_like_layout(x), empty_like_layout(x)

    @torch.library.register_fake("derain::_self_correcting_block_backward_la")
    def _block_backward_la_fake(grad, x, la, w1, w3, dilation=3):
        c = x.shape[1]
        return (empty_like_layout(x), torch.empty_like(w1, memory_format=torch.contiguous_format), x.new_empty(c),
                torch.empty_like(w3, memory_format=torch.contiguous_format), x.new_empty(c))

    for _op in ("self_correcting_block", "_self_correcting_block_backward", "_self_correcting_block_train",
                "_self_correcting_block_backward_la"):
        register_triton_cuda(_op, "block")
