"""conv3x3_relu: ReLU(conv3x3(cat(x, x2); weight) + bias), the layer Rain O'er Me repeats outside its
blocks (the input convolution, and the 32 -> 16 aggregations over two feature maps), as one op.

On the CPU the C++ kernel runs it on the block's convolution engine: x and x2 are read side by side
into one row (no concatenated tensor), the ReLU is the convolution's epilogue, Winograd rows run
where the engine has them, and the backward computes both inputs' gradients with one adjoint
convolution and the weight gradient in the same pass. On CUDA: cuDNN (fused convolution + bias +
ReLU for float32). docs/ops/conv_relu.md.
"""
from __future__ import annotations

import torch

from .. import reference
from .._backend import has_op
from .._checks import check_conv3x3_params, check_same, check_tensor
from .._layout import empty_map
from ._common import explain_failure

_CPP = has_op("conv3x3_relu")
_OP = torch.ops.derain.conv3x3_relu.default if _CPP else None
_DTYPES = (torch.float32, torch.float64)


def _check(x, weight, bias, x2) -> None:
    check_tensor(x, "x", _DTYPES)
    if x.dim() != 4:
        raise ValueError(f"x must be a 4-D tensor (N, C, H, W), got shape {tuple(x.shape)}")
    cin = x.shape[1]
    if x2 is not None:
        check_tensor(x2, "x2", _DTYPES)
        check_same(x, "x", x2, "x2")
        if x2.dim() != 4 or x2.shape[0] != x.shape[0] or x2.shape[2:] != x.shape[2:]:
            raise ValueError(f"x2 must be (N, C2, H, W) with x's N, H, W {tuple(x.shape[2:])}, got {tuple(x2.shape)}")
        cin += x2.shape[1]
    check_conv3x3_params(x, weight, bias, cin, _DTYPES)


def conv3x3_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                 x2: torch.Tensor | None = None) -> torch.Tensor:
    """ReLU(conv2d(cat(x, x2, dim=1), weight, bias, padding=1)), without materialising the cat.

    x (N, C1, H, W); x2 None or (N, C2, H, W); weight (Cout, C1 + C2, 3, 3); bias (Cout,)
    -> (N, Cout, H, W), channels-last when x is. Stride 1, zero padding 1, no dilation.
    Dtypes: float32 or float64, all equal. Gradient: to x, x2, weight and bias; ReLU's
    derivative is 0 at 0 and at NaN (like torch.relu).
    """
    if _CPP:
        try:
            return _OP(x, weight, bias, x2)
        except Exception:
            explain_failure(_check, x, weight, bias, x2)
            raise
    _check(x, weight, bias, x2)
    return reference.conv3x3_relu(x, weight, bias, x2)


if _CPP:
    @torch.library.register_fake("derain::conv3x3_relu")
    def _conv_relu_fake(x, weight, bias, x2=None):
        for name, t in (("weight", weight), ("bias", bias), ("x2", x2)):
            if t is not None:
                check_same(x, "x", t, name)
        return empty_map(x, weight.shape[0])

    @torch.library.register_fake("derain::_conv3x3_relu_backward")
    def _conv_relu_backward_fake(grad, out, x, weight, x2=None, input_grad=True):
        return (empty_map(x, x.shape[1]) if input_grad else x.new_empty(0),
                empty_map(x2, x2.shape[1]) if x2 is not None and input_grad else x.new_empty(0),
                torch.empty_like(weight, memory_format=torch.contiguous_format), weight.new_empty(weight.shape[0]))

    # autograd: registered from C++ (csrc/ops/autograd/conv_relu_autograd.cpp)
