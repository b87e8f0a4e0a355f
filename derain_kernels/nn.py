"""Modules on the fused ops: `SelfCorrectingBlock` and `FusedRainOerMe`.

SelfCorrectingBlock's parameter names follow the authors' block (`conv1.0`,
`dilated_conv`), so a network built from it loads their checkpoints as they are.
"""
from __future__ import annotations

import torch
from torch import nn as _nn

from .ops.block import check_dilation, self_correcting_block
from .ops.network import check_params, rain_oer_me_derain
from .ops.ssim import SSIMLoss  # noqa: F401  (also derain_kernels.SSIMLoss)


class SelfCorrectingBlock(_nn.Module):
    """la = ReLU(conv1(x)); out = ReLU(dilated_conv(x − la) + la), as one fused op.

    Parameters (the authors' keys): `conv1.0.weight` (C, C, 3, 3), `conv1.0.bias`,
    `dilated_conv.weight` (C, C, 3, 3, dilation `dilation`), `dilated_conv.bias`.
    Initialised like nn.Conv2d. Input (N, C, H, W) float32/float64 -> same shape.
    `recompute=True`: the backward recomputes la instead of saving it (see
    `derain_kernels.self_correcting_block`).
    """

    def __init__(self, channels: int = 16, dilation: int = 3, recompute: bool = False):
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, int):
            raise TypeError(f"channels must be an int, got {type(channels).__name__}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.channels = channels
        self.dilation = check_dilation(dilation)
        if not isinstance(recompute, bool):
            raise TypeError(f"recompute must be a bool, got {type(recompute).__name__}")
        self.recompute = recompute
        # parameter containers only: forward calls the fused op
        self.conv1 = _nn.Sequential(_nn.Conv2d(channels, channels, 3, padding=1))
        self.dilated_conv = _nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv1 = self.conv1[0]
        return self_correcting_block(x, conv1.weight, conv1.bias, self.dilated_conv.weight,
                                     self.dilated_conv.bias, self.dilation, recompute=self.recompute)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, dilation={self.dilation}" + (", recompute=True" if self.recompute else "")


class FusedRainOerMe(_nn.Module):
    """Inference of the Rain O'er Me network G from its weights: forward(x) = X − tanh(G(X)).

    `params`: the 38 tensors of G (weight and bias of its 19 convolutions) in the order of
    `derain_kernels.ops.network` (the model maps its checkpoint keys to it:
    `derain.models.rain_oer_me.fused_params(state_dict)`, or `RainOerMeNet.fused()`).
    The tensors are copied into buffers. Input (B, Cin, H, W) float32/float64, any
    size -> derained image of the same shape, computed under no_grad (the C++ kernel
    on CPU; the plain reference elsewhere).
    """

    def __init__(self, params, dilation: int = 3):
        super().__init__()
        check_params(params)
        self.dilation = check_dilation(dilation)
        self._names = []
        for i, p in enumerate(params):
            name = f"conv{i // 2:02d}_{'weight' if i % 2 == 0 else 'bias'}"
            self.register_buffer(name, p.detach().clone())
            self._names.append(name)

    def params(self) -> list[torch.Tensor]:
        return [getattr(self, n) for n in self._names]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rain_oer_me_derain(x, self.params(), self.dilation)

    def extra_repr(self) -> str:
        c = getattr(self, self._names[0]).shape[0]
        return f"channels={c}, dilation={self.dilation}"


__all__ = ["SelfCorrectingBlock", "FusedRainOerMe", "SSIMLoss"]
