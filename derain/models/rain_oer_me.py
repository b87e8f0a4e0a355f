"""The Rain O'er Me network (docs/method.md#network), with the authors' module names.

Submodule names reproduce the keys of the authors' state_dicts
(`inc.0`, `block{1,2,3}.conv{1,2}.conv1.0`, `block{k}.conv{j}.dilated_conv`,
`block{k}.merge.0`, `merge11.0`, `merge12.0`, `outc.0`, `out2.*`), so their
checkpoints load as they are; `fused_params` maps them to the fused network op's order.
"""
from __future__ import annotations

import torch
from torch import nn

import derain_kernels


class _ConvReLU(nn.Sequential):
    """ReLU(conv3x3(cat(x, x2))) as one op (derain_kernels.conv3x3_relu: no concatenated tensor, the
    ReLU fused); an nn.Sequential(Conv2d, ReLU), so the authors' parameter names (`inc.0.weight`) stay.
    `fused_op = False` runs torch.cat, nn.Conv2d and ReLU instead (the plain network, for comparisons)."""

    fused_op = True

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=False))

    def forward(self, x: torch.Tensor, x2: torch.Tensor | None = None) -> torch.Tensor:
        if self.fused_op:
            return derain_kernels.conv3x3_relu(x, self[0].weight, self[0].bias, x2)
        return self[1](self[0](x if x2 is None else torch.cat([x, x2], dim=1)))


class _Tree(nn.Module):
    """a1 = block(x); a2 = block(a1); ReLU(conv 32->16 (cat(a1, a2)))."""

    def __init__(self, channels: int = 16, dilation: int = 3):
        super().__init__()
        self.conv1 = derain_kernels.nn.SelfCorrectingBlock(channels, dilation)
        self.conv2 = derain_kernels.nn.SelfCorrectingBlock(channels, dilation)
        self.merge = _ConvReLU(2 * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a1 = self.conv1(x)
        a2 = self.conv2(a1)
        return self.merge(a1, a2)


class RainOerMeNet(nn.Module):
    """G (rain residual) and the detail-enhancement block g of Rain O'er Me.

    `model(x)` -> derained image Ŷ = X − G(X), shape (B, 3, H, W) like x.
    `model.forward_train(x)` -> (R, Ŷ, R_e, Ŷ_e) with R = G(X), R_e = g(R), Ŷ_e = X − R_e.
    x: a 4-D float tensor (B, 3, H, W), RGB in [0, 1], with the dtype and device of the weights;
    anything else raises TypeError/ValueError naming `x` and the shape/dtype given.
    `detail="rain1400"` is the 3-conv g (conv 3→16, ReLU, conv 16→16, ReLU, conv 16→3);
    `detail="did"` the DID variant (conv 3→16, ReLU, conv 16→3, ReLU).
    """

    def __init__(self, channels: int = 16, dilation: int = 3, detail: str = "rain1400"):
        super().__init__()
        if detail not in ("rain1400", "did"):
            raise ValueError(f"detail must be 'rain1400' or 'did', got {detail!r}")
        self.config = {"channels": channels, "dilation": dilation, "detail": detail}
        # convolution + ReLU layers as derain_kernels.conv3x3_relu (see _ConvReLU), the output layers
        # (16 -> 3 with tanh, the detail block's last) as derain_kernels.conv3x3
        self.fused_layers = True
        c = channels
        self.inc = _ConvReLU(3, c)
        self.block1 = _Tree(c, dilation)
        self.block2 = _Tree(c, dilation)
        self.merge11 = _ConvReLU(2 * c, c)
        self.block3 = _Tree(c, dilation)
        self.merge12 = _ConvReLU(2 * c, c)
        self.outc = nn.Sequential(nn.Conv2d(c, 3, 3, padding=1))
        if detail == "rain1400":
            self.out2 = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1),
                                      nn.ReLU(), nn.Conv2d(c, 3, 3, padding=1))
        else:
            self.out2 = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, 3, 3, padding=1),
                                      nn.ReLU())
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Weights N(0, 0.02), biases 0 (the authors' initialisation)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    def _check_input(self, x, name: str = "x") -> None:
        """The caller's image must be (B, 3, H, W), floating point, with the weights' dtype and device."""
        weight = self.inc[0].weight
        _check_image(x, name, dtypes=(weight.dtype,), device=weight.device)

    @classmethod
    def from_checkpoint(cls, path, map_location="cpu") -> "RainOerMeNet":
        """Weights by name or path: "ours" (the packaged weights), "rain1400", "rain200l", "did" (the authors'
        released checkpoints, downloaded once into a cache: derain.models.hub), or a path to an authors'
        .pth (detail variant from the out2 keys), our .safetensors + .json, a `derain train` checkpoint or
        a finished run folder. A `str` equal to a name is the name; a pathlib.Path is always a path."""
        from .checkpoint import load_checkpoint

        return load_checkpoint(path, map_location=map_location)

    def save(self, path, metadata: dict | None = None):
        """Our format: `path` .safetensors (or folder/rain_oer_me.safetensors) + JSON config. Returns the path."""
        from .checkpoint import save_checkpoint

        return save_checkpoint(self, path, metadata=metadata)

    def parameter_count(self) -> dict:
        """{"G": {"weights": 51552, "with_biases": 51843}, "g": {...}} as TIP Table IV counts them."""
        from .checkpoint import parameter_count

        return parameter_count(self)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """R = G(X) = tanh(outc(...)), shape like x."""
        self._check_input(x)
        return self._residual(x)

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        fi = self.inc(x)
        f0 = self.block1(fi)
        f1 = self.block2(f0)
        f01 = self.merge11(f0, f1)
        f3 = self.block3(f01)
        f33 = self.merge12(f01, f3)
        if self.fused_layers:  # 16 -> 3 and tanh as one op
            return derain_kernels.conv3x3(f33, self.outc[0].weight, self.outc[0].bias, "tanh")
        return torch.tanh(self.outc(f33))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return x - self._residual(x)

    def fused(self) -> nn.Module:
        """Fused CPU inference of this network: a module whose call equals `self(x)` (float32 round-off).

        Built from a snapshot of the current weights (derain_kernels.nn.FusedRainOerMe),
        in eval mode; no gradient. Rebuild it after changing the weights.
        """
        return _CheckedFusedRainOerMe(fused_params(self.state_dict()), dilation=self.config["dilation"]).eval()

    def forward_train(self, x: torch.Tensor):
        self._check_input(x)
        r = self._residual(x)
        r_e = self._detail(r)
        return r, x - r, r_e, x - r_e

    def _detail(self, r: torch.Tensor) -> torch.Tensor:
        """R_e = g(R): out2's layers, each convolution + ReLU as one op, the last convolution as
        derain_kernels.conv3x3 (as out2 runs them with `fused_layers = False`)."""
        g = self.out2
        if not self.fused_layers:
            return g(r)
        h = derain_kernels.conv3x3_relu(r, g[0].weight, g[0].bias)
        if self.config["detail"] == "rain1400":
            h = derain_kernels.conv3x3_relu(h, g[2].weight, g[2].bias)
            return derain_kernels.conv3x3(h, g[4].weight, g[4].bias)
        return derain_kernels.conv3x3_relu(h, g[2].weight, g[2].bias)


# G's 19 convolutions under the authors' module names, in the order of the fused op's
# weight list (derain_kernels.ops.network): input conv, tree 1 (two blocks, merge),
# tree 2, merge11, tree 3, merge12, output conv.
_TREE = ("conv1.conv1.0", "conv1.dilated_conv", "conv2.conv1.0", "conv2.dilated_conv", "merge.0")
FUSED_CONV_KEYS = (("inc.0",) + tuple(f"block1.{m}" for m in _TREE) + tuple(f"block2.{m}" for m in _TREE)
                   + ("merge11.0",) + tuple(f"block3.{m}" for m in _TREE) + ("merge12.0", "outc.0"))
FUSED_PARAM_KEYS = tuple(f"{k}.{p}" for k in FUSED_CONV_KEYS for p in ("weight", "bias"))


def fused_params(state_dict) -> list[torch.Tensor]:
    """The 38 tensors of G from a state dict with the authors' keys, in the fused op's order.

    For `derain_kernels.nn.FusedRainOerMe(fused_params(sd))` and
    `derain_kernels.reference.rain_oer_me_derain(x, fused_params(sd))`; other keys
    (`out2.*` of the detail block g) are ignored.
    """
    missing = [k for k in FUSED_PARAM_KEYS if k not in state_dict]
    if missing:
        raise ValueError(f"state_dict is missing {len(missing)} key(s) of G, e.g. {missing[:3]}")
    return [state_dict[k] for k in FUSED_PARAM_KEYS]


class _CheckedFusedRainOerMe(derain_kernels.nn.FusedRainOerMe):
    """FusedRainOerMe that checks the caller's image first (3 channels: the network's input is RGB)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x, "x", dtypes=(torch.float32, torch.float64), device=self.conv00_weight.device)
        return super().forward(x)


def _check_image(x, name: str, dtypes, device) -> None:
    """TypeError/ValueError naming `name` unless x is a (B, 3, H, W) tensor of one of `dtypes` on `device`."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, 3, H, W), got {type(x).__name__}")
    shape = tuple(x.shape)
    if x.dim() != 4:
        hint = f" (for one image use {name}.unsqueeze(0))" if x.dim() == 3 else ""
        raise ValueError(f"{name} must be a 4-D tensor (B, 3, H, W), got shape {shape}{hint}")
    if shape[1] != 3:
        raise ValueError(f"{name} must have 3 (RGB) channels in dimension 1, i.e. shape (B, 3, H, W), "
                         f"got shape {shape}")
    if shape[2] < 1 or shape[3] < 1:
        raise ValueError(f"{name} must have a height and width of at least 1 pixel, got shape {shape}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point image in [0, 1], got dtype {x.dtype} "
                        f"(shape {shape}); convert it, e.g. {name}.float() / 255 for 8-bit values")
    if x.dtype not in dtypes:
        want = " or ".join(str(d) for d in dtypes)
        raise TypeError(f"{name} must have dtype {want} (what the network computes in), got {x.dtype}: "
                        f"convert the image ({name}.to({dtypes[0]})) or the model (model.to(dtype))")
    if x.device != device:
        raise ValueError(f"{name} is on {x.device} but the network's weights are on {device}: move one of them "
                         f"({name}.to(device) or model.to(device))")
