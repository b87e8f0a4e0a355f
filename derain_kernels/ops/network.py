"""Fused inference of the Rain O'er Me network G (see docs/method.md): Ŷ = X − tanh(G(X)).

The C++ kernel runs all 19 convolutions of G as one row-streaming pipeline per
image band (derain_kernels.nn.FusedRainOerMe is the module users call).
Inference only: no gradient.

The op takes G's weights as a plain list of 38 tensors, the weight and bias of each
convolution in this order (C = channels, Cin = image channels; every kernel 3x3):

    conv  0       input conv                      Cin -> C
    convs 1-5     tree 1: block 1 conv (w1), block 1 dilated conv (w3),
                          block 2 conv (w1), block 2 dilated conv (w3), merge (2C -> C)
    convs 6-10    tree 2: the same
    conv  11      merge of trees 1 and 2          2C -> C
    convs 12-16   tree 3: the same as tree 1
    conv  17      merge of conv 11 and tree 3     2C -> C
    conv  18      output conv                     C -> Cin

Mapping a checkpoint's keys to this order is the model's business
(derain.models.rain_oer_me.fused_params for the authors' checkpoints).
"""
from __future__ import annotations

import torch

from .. import reference
from .._backend import has_op
from .._checks import check_tensor
from .._contracts import effective_dilation
from .._layout import empty_like_layout
from .block import check_dilation

_CPP = has_op("_rain_oer_me_derain")

N_CONVS = 19
N_PARAMS = 2 * N_CONVS
MERGE_CONVS = (5, 10, 11, 16, 17)  # the 2C -> C convolutions, on concatenations


def param_shapes(cin: int, channels: int) -> list[tuple[int, ...]]:
    """The shapes of the 38 tensors, in the op's order, for Cin image channels and C feature channels."""
    out = []
    for conv in range(N_CONVS):
        cout = cin if conv == N_CONVS - 1 else channels
        cin_k = cin if conv == 0 else (2 * channels if conv in MERGE_CONVS else channels)
        out += [(cout, cin_k, 3, 3), (cout,)]
    return out


def _param_name(i: int) -> str:
    return f"conv {i // 2} {'weight' if i % 2 == 0 else 'bias'}"


def check_params(params, cin: int | None = None, device=None) -> None:
    """TypeError/ValueError naming `params[i]` unless params holds the 38 tensors in the op's order."""
    if isinstance(params, torch.Tensor) or not isinstance(params, (list, tuple)):
        hint = (" (a state dict with the authors' keys: derain.models.rain_oer_me.fused_params(state_dict) "
                "gives the list)" if hasattr(params, "keys") else "")
        raise TypeError(f"params must be a list of {N_PARAMS} tensors, got {type(params).__name__}{hint}")
    if len(params) != N_PARAMS:
        raise ValueError(f"params must hold {N_PARAMS} tensors (weight and bias of {N_CONVS} convolutions), "
                         f"got {len(params)}")
    for i, p in enumerate(params):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"params[{i}] ({_param_name(i)}) must be a torch.Tensor, got {type(p).__name__}")
    if params[0].dim() != 4:
        raise ValueError(f"params[0] ({_param_name(0)}) must have shape (C, Cin, 3, 3), "
                         f"got {tuple(params[0].shape)}")
    c, cin_w = params[0].shape[0], params[0].shape[1]
    cin = cin_w if cin is None else cin
    for i, (p, want) in enumerate(zip(params, param_shapes(cin, c))):
        if tuple(p.shape) != want:
            raise ValueError(f"params[{i}] ({_param_name(i)}) must have shape {want} for x with {cin} channels, "
                             f"got {tuple(p.shape)}")
        if device is not None and p.device != device:
            raise ValueError(f"params[{i}] ({_param_name(i)}) is on {p.device}, x on {device}")


def rain_oer_me_derain(x: torch.Tensor, params: list[torch.Tensor], dilation: int = 3) -> torch.Tensor:
    """Ŷ = X − tanh(G(X)) for x (B, Cin, H, W) and the 38 tensors of G in the order of this module's docstring.

    Dtypes: float32 or float64 (x's dtype; parameters are cast to it). No gradient.
    """
    check_tensor(x, "x", (torch.float32, torch.float64))
    if x.dim() != 4:
        raise ValueError(f"x must be a 4-D tensor (B, C, H, W), got shape {tuple(x.shape)}")
    check_dilation(dilation)
    check_params(params, x.shape[1], x.device)
    dilation = effective_dilation(dilation, x.shape[2], x.shape[3])  # the same result (see there)
    params = [p.detach().to(x.dtype) for p in params]
    with torch.no_grad():
        if _CPP and (x.device.type == "cpu" or (x.device.type == "cuda" and _compiled_cuda())):
            return torch.ops.derain._rain_oer_me_derain(x.detach(), params, dilation)
        return reference.rain_oer_me_derain(x, params, dilation)


def _compiled_cuda() -> bool:
    """Whether the extension was built with its CUDA kernels (cuDNN convolutions with fused epilogues,
    csrc/ops/cuda/block.cu); the Triton build has no network kernel and runs the reference."""
    global _COMPILED_CUDA
    if _COMPILED_CUDA is None:
        _COMPILED_CUDA = torch._C._dispatch_has_kernel_for_dispatch_key("derain::_rain_oer_me_derain", "CUDA")
    return _COMPILED_CUDA


_COMPILED_CUDA = None


if _CPP:
    @torch.library.register_fake("derain::_rain_oer_me_derain")
    def _network_fake(x, params, dilation=3):
        return empty_like_layout(x)
