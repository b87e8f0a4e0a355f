"""Pure-PyTorch references of the self-correcting dilated block and the whole network G."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._contracts import effective_dilation


def relu(v: torch.Tensor) -> torch.Tensor:
    """ReLU with the kernels' NaN rule: ReLU(NaN) = NaN (like torch.relu) but its derivative
    is 0 there, as at every v <= 0 (torch.relu passes the gradient of a NaN through)."""
    return torch.where(v > 0, v, torch.where(torch.isnan(v), v.detach(), torch.zeros((), dtype=v.dtype,
                                                                                      device=v.device)))


def self_correcting_block(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w3: torch.Tensor,
                          b3: torch.Tensor, dilation: int = 3) -> torch.Tensor:
    """la = ReLU(conv3x3(x; w1, b1)); out = ReLU(conv3x3_dilated(x - la; w3, b3) + la).

    A dilation >= max(H, W) puts every off-centre tap of the dilated convolution into the
    zero padding, so it runs as max(H, W) (the same result, computable for any dilation).
    """
    dilation = effective_dilation(dilation, x.shape[-2], x.shape[-1])
    if x.numel() == 0:  # an empty map (conv2d refuses images smaller than its kernel)
        return x.clone() + 0 * (w1.sum() + b1.sum() + w3.sum() + b3.sum())
    la = relu(F.conv2d(x, w1, b1, padding=1))
    return relu(F.conv2d(x - la, w3, b3, padding=dilation, dilation=dilation) + la)


def rain_oer_me_derain(x: torch.Tensor, params, dilation: int = 3) -> torch.Tensor:
    """Ŷ = X − tanh(G(X)) from G's 38 tensors in the fused op's order (derain_kernels.ops.network)."""
    w = [params[2 * i] for i in range(19)]
    b = [params[2 * i + 1] for i in range(19)]

    def conv_relu(t, i):
        return F.relu(F.conv2d(t, w[i], b[i], padding=1))

    def tree(t, i):  # convs i .. i + 4: two blocks and their merge
        a1 = self_correcting_block(t, w[i], b[i], w[i + 1], b[i + 1], dilation)
        a2 = self_correcting_block(a1, w[i + 2], b[i + 2], w[i + 3], b[i + 3], dilation)
        return conv_relu(torch.cat([a1, a2], 1), i + 4)

    fi = conv_relu(x, 0)
    f0 = tree(fi, 1)
    f1 = tree(f0, 6)
    f01 = conv_relu(torch.cat([f0, f1], 1), 11)
    f3 = tree(f01, 12)
    f33 = conv_relu(torch.cat([f01, f3], 1), 17)
    r = torch.tanh(F.conv2d(f33, w[18], b[18], padding=1))
    return x - r
