"""conv3x3: activation(conv3x3(x; weight) + bias) with the activation ('none', 'relu' or 'tanh') fused,
for the layers conv3x3_relu does not cover: a network's output layer to a few channels (Rain O'er Me:
16 -> 3 then tanh for the rain residual, 16 -> 3 at the end of the detail block).

On the CPU the C++ kernel takes up to 4 output channels: vectors over the input channels of
channels-last pixels (AVX-512 or AVX2 rows for 16 float32 channels), the activation applied in the store and its
derivative taken from the output, and a backward that computes the input gradient (skipped when x
needs none) and the weight gradient in one pass. Other shapes and devices: ATen's convolution.
docs/ops/conv3x3.md.
"""
from __future__ import annotations

import torch

from .. import reference
from .._backend import has_op
from .._checks import check_conv3x3_params, check_tensor
from .._layout import empty_map
from ._common import explain_failure

_CPP = has_op("conv3x3")
_OP = torch.ops.derain.conv3x3.default if _CPP else None
_DTYPES = (torch.float32, torch.float64)
_ACTIVATIONS = ("none", "relu", "tanh")


def _check(x, weight, bias, activation) -> None:
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(map(repr, _ACTIVATIONS))}, got {activation!r}")
    check_tensor(x, "x", _DTYPES)
    if x.dim() != 4:
        raise ValueError(f"x must be a 4-D tensor (N, C, H, W), got shape {tuple(x.shape)}")
    cin = x.shape[1]
    check_conv3x3_params(x, weight, bias, cin, _DTYPES)


def conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, activation: str = "none") -> torch.Tensor:
    """activation(conv2d(x, weight, bias, padding=1)) with activation 'none', 'relu' or 'tanh'.

    x (N, C, H, W); weight (Cout, C, 3, 3); bias (Cout,) -> (N, Cout, H, W), channels-last when x is.
    Stride 1, zero padding 1, no dilation. Dtypes: float32 or float64, all equal. Gradient: to x,
    weight and bias (relu's derivative is 0 at 0 and at NaN, like torch.relu). The CPU kernel is
    built for few output channels (up to 4, e.g. an RGB output layer); for convolution + ReLU to
    16 or more channels use conv3x3_relu.
    """
    if _CPP:
        try:
            return _OP(x, weight, bias, activation)
        except Exception:
            explain_failure(_check, x, weight, bias, activation)
            raise
    _check(x, weight, bias, activation)
    return reference.conv3x3(x, weight, bias, activation)


if _CPP:
    @torch.library.register_fake("derain::conv3x3")
    def _conv3x3_fake(x, weight, bias, activation="none"):
        _check(x, weight, bias, activation)
        return empty_map(x, weight.shape[0])

    @torch.library.register_fake("derain::_conv3x3_backward")
    def _conv3x3_backward_fake(grad, out, x, weight, activation, input_grad=True):
        return (empty_map(x, x.shape[1]) if input_grad else x.new_empty(0),
                torch.empty_like(weight, memory_format=torch.contiguous_format), weight.new_empty(weight.shape[0]))

    # autograd: registered from C++ (csrc/ops/autograd/conv3x3_autograd.cpp)
