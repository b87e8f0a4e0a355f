"""Pure-PyTorch references of the self-correcting dilated block and the whole network G."""
from __future__ import annotations

import torch
import torch.nn.functional as F


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
    dilation = min(dilation, max(x.shape[-2], x.shape[-1], 1))
    if x.numel() == 0:  # an empty map (conv2d refuses images smaller than its kernel)
        return x.clone() + 0 * (w1.sum() + b1.sum() + w3.sum() + b3.sum())
    la = relu(F.conv2d(x, w1, b1, padding=1))
    return relu(F.conv2d(x - la, w3, b3, padding=dilation, dilation=dilation) + la)


def rain_oer_me_derain(x: torch.Tensor, state_dict, dilation: int = 3) -> torch.Tensor:
    """Ŷ = X − tanh(G(X)) of SPEC §1 from a state dict with the authors' key names."""
    sd = state_dict

    def conv_relu(t, key):
        return F.relu(F.conv2d(t, sd[key + ".weight"], sd[key + ".bias"], padding=1))

    def block(t, key):
        return self_correcting_block(t, sd[key + ".conv1.0.weight"], sd[key + ".conv1.0.bias"],
                                     sd[key + ".dilated_conv.weight"], sd[key + ".dilated_conv.bias"], dilation)

    def tree(t, k):
        a1 = block(t, f"block{k}.conv1")
        a2 = block(a1, f"block{k}.conv2")
        return conv_relu(torch.cat([a1, a2], 1), f"block{k}.merge.0")

    fi = conv_relu(x, "inc.0")
    f0 = tree(fi, 1)
    f1 = tree(f0, 2)
    f01 = conv_relu(torch.cat([f0, f1], 1), "merge11.0")
    f3 = tree(f01, 3)
    f33 = conv_relu(torch.cat([f01, f3], 1), "merge12.0")
    r = torch.tanh(F.conv2d(f33, sd["outc.0.weight"], sd["outc.0.bias"], padding=1))
    return x - r
