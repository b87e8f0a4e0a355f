"""SSID-KD-style student loss (Cui et al., TCSVT, Eq. 7) built from derain_kernels ops.

    L_S = λ1 · KL(softmax(V_real) ‖ softmax(V_syn)) + λ2 · L_DC(R̂_S) + λ3 · L_TV(B̂_S),  λ = 1e-6

- L_DC (Eq. 10): the paper max-pools the rain map R̂ over channels and a patch and takes
  1 − max: that is the dark channel of 1 − R̂, so `dark_channel_loss(1 - rain, patch)` is the
  drop-in (checked below against the paper's `1 - MaxPool3d(R̂)`);
- L_TV (Eq. 11): ‖∇_h B̂‖₁ + ‖∇_v B̂‖₁ as per-direction means = `tv_loss(derained)`.

Runs in seconds on random tensors:  python examples/ssid_kd_student_loss.py
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

import derain_kernels as dk


class TinyEncoderDecoder(nn.Module):
    """Stand-in for the SSID-KD backbone: encoder features V and a rain map R̂ (B̂ = x − R̂)."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                                     nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU())
        self.decoder = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(width, 3, 3, padding=1), nn.Sigmoid())

    def forward(self, x):
        v = self.encoder(x)
        rain = self.decoder(v)
        return v, rain, x - rain


def student_loss(net: nn.Module, x_syn: torch.Tensor, x_real: torch.Tensor, patch: int = 15,
                 lambdas=(1e-6, 1e-6, 1e-6)) -> torch.Tensor:
    """One SSID-KD second-stage loss; the teacher shares the student's weights (synthetic branch)."""
    v_syn, _, _ = net(x_syn)
    v_real, rain_real, derained_real = net(x_real)
    p_syn = F.softmax(v_syn.flatten(1), dim=1)
    log_p_real = F.log_softmax(v_real.flatten(1), dim=1)
    kl = F.kl_div(log_p_real, p_syn.detach(), reduction="batchmean")
    dc = dk.dark_channel_loss(1 - rain_real, patch)  # = mean(1 - MaxPool3d(R̂)), Eq. 10
    tv = dk.tv_loss(derained_real)  # Eq. 11
    return lambdas[0] * kl + lambdas[1] * dc + lambdas[2] * tv


def papers_dark_channel_term(rain: torch.Tensor, patch: int) -> torch.Tensor:
    """Eq. 10 written as in the paper: 1 − MaxPool3d over (channels, patch, patch), reflect borders."""
    r = patch // 2
    padded = F.pad(rain, (r, r, r, r), mode="reflect").unsqueeze(1)  # (B, 1, C, H+2r, W+2r)
    pooled = F.max_pool3d(padded, (rain.shape[1], patch, patch), stride=1).squeeze(1)
    return (1 - pooled).abs().mean()


def main(size: int = 64, batch: int = 2, steps: int = 2) -> float:
    torch.manual_seed(0)
    net = TinyEncoderDecoder()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x_syn, x_real = torch.rand(batch, 3, size, size), torch.rand(batch, 3, size, size)
    with torch.no_grad():  # the drop-in computes the paper's term exactly
        _, rain, _ = net(x_real)
        ours, theirs = dk.dark_channel_loss(1 - rain, 15), papers_dark_channel_term(rain, 15)
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
    for step in range(steps):
        loss = student_loss(net, x_syn, x_real)
        opt.zero_grad()
        loss.backward()
        opt.step()
        print(f"step {step}: student loss {loss.item():.6e}")
    return loss.item()


if __name__ == "__main__":
    main()
