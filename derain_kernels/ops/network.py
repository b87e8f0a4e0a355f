"""Fused inference of the Rain O'er Me network G (SPEC §1): Ŷ = X − tanh(G(X)).

The C++ kernel runs all 19 convolutions of G as one row-streaming pipeline per
image band (derain_kernels.nn.FusedRainOerMe is the module users call).
Inference only: no gradient.
"""
from __future__ import annotations

import torch

from .. import reference
from .._backend import has_op
from .._checks import check_tensor
from .block import check_dilation, effective_dilation, empty_like_layout

_CPP = has_op("rain_oer_me_derain")

# The 19 convolutions of G in the order the kernel expects (authors' module names).
CONV_KEYS = (
    ["inc.0"]
    + [f"block1.{m}" for m in ("conv1.conv1.0", "conv1.dilated_conv", "conv2.conv1.0", "conv2.dilated_conv", "merge.0")]
    + [f"block2.{m}" for m in ("conv1.conv1.0", "conv1.dilated_conv", "conv2.conv1.0", "conv2.dilated_conv", "merge.0")]
    + ["merge11.0"]
    + [f"block3.{m}" for m in ("conv1.conv1.0", "conv1.dilated_conv", "conv2.conv1.0", "conv2.dilated_conv", "merge.0")]
    + ["merge12.0", "outc.0"]
)
PARAM_KEYS = tuple(f"{k}.{p}" for k in CONV_KEYS for p in ("weight", "bias"))


def rain_oer_me_derain(x: torch.Tensor, params: list[torch.Tensor], dilation: int = 3) -> torch.Tensor:
    """Ŷ = X − tanh(G(X)) for x (B, Cin, H, W) and the 38 tensors of PARAM_KEYS, in that order.

    Dtypes: float32 or float64 (x's dtype; parameters are cast to it). No gradient.
    """
    check_tensor(x, "x", (torch.float32, torch.float64))
    if x.dim() != 4:
        raise ValueError(f"x must be a 4-D tensor (B, C, H, W), got shape {tuple(x.shape)}")
    check_dilation(dilation)
    if len(params) != len(PARAM_KEYS):
        raise ValueError(f"params must hold {len(PARAM_KEYS)} tensors (weight and bias of 19 convolutions), "
                         f"got {len(params)}")
    cin, c = x.shape[1], params[0].shape[0]
    for i, (key, p) in enumerate(zip(PARAM_KEYS, params)):
        conv = i // 2
        merge = CONV_KEYS[conv].endswith("merge.0") or CONV_KEYS[conv] in ("merge11.0", "merge12.0")
        cout = cin if conv == len(CONV_KEYS) - 1 else c
        cin_k = cin if conv == 0 else (2 * c if merge else c)
        want = (cout, cin_k, 3, 3) if key.endswith("weight") else (cout,)
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"params[{i}] ({key}) must be a torch.Tensor, got {type(p).__name__}")
        if tuple(p.shape) != want:
            raise ValueError(f"params[{i}] ({key}) must have shape {want} for x with {cin} channels, "
                             f"got {tuple(p.shape)}")
        if p.device != x.device:
            raise ValueError(f"params[{i}] ({key}) is on {p.device}, x on {x.device}")
    dilation = effective_dilation(dilation, x.shape[2], x.shape[3])  # the same result (see there)
    params = [p.detach().to(x.dtype) for p in params]
    with torch.no_grad():
        if _CPP and x.device.type == "cpu":
            return torch.ops.derain.rain_oer_me_derain(x.detach(), params, dilation)
        return reference.rain_oer_me_derain(x, dict(zip(PARAM_KEYS, params)), dilation)


if _CPP:
    @torch.library.register_fake("derain::rain_oer_me_derain")
    def _network_fake(x, params, dilation=3):
        return empty_like_layout(x)
