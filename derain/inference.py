"""Whole-image inference with RainOerMeNet: Ŷ = X − G(X), tiled above a size limit.

Tiling is exact: every tile is run with a margin of `receptive_radius(model)` pixels of real
neighbours on each inner side (31 for the authors' network: the deepest path through G has
7 plain 3×3 convs of radius 1 and 6 blocks whose 3×3 conv + dilated conv reach 1 + dilation),
and only the tile's core is kept, so the result equals the untiled one up to float round-off.
"""
from __future__ import annotations

import torch

DEFAULT_TILE = 512
DEFAULT_MAX_PIXELS = 1024 * 1024


def receptive_radius(model) -> int:
    """Radius (pixels) of the receptive field of one output pixel of G: the halo a tile needs."""
    d = int(model.config.get("dilation", 3))
    block = 1 + d                      # conv1 (radius 1) then the dilated conv (radius d)
    tree = 2 * block + 1               # two blocks in sequence, then the 3×3 merge conv
    return 1 + 3 * tree + 1 + 1 + 1    # inc, tree1..3, merge11, merge12, outc


class Derainer:
    """Callable: float (3, H, W) or (B, 3, H, W) rainy image in [0, 1] -> derained image (same shape).

    model: a RainOerMeNet. On CPU uses `model.fused()` when the model has it, else (and on other
    devices) the eager model under torch.inference_mode (channels-last on CPU, faster for its
    16-channel convs).
    tile: tile core size in pixels; None = tile only images above `max_pixels` (tiles of `auto_tile`);
    0 = never tile. The output is not clamped (Ŷ = X − R can leave [0, 1] slightly).
    """

    def __init__(self, model, device="cpu", tile: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 channels_last: bool = True, auto_tile: int = DEFAULT_TILE):
        if tile is not None and (not isinstance(tile, int) or tile < 0):
            raise ValueError(f"tile must be a non-negative int (0 = never tile), got {tile!r}")
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.halo = receptive_radius(model)
        self.tile = tile
        self.max_pixels = max_pixels
        self.auto_tile = auto_tile
        self.channels_last = channels_last and self.device.type == "cpu"
        self.fused = hasattr(model, "fused") and self.device.type == "cpu"
        if self.fused:      # the fused CPU network (derain_kernels.nn.FusedRainOerMe)
            self.net = self.model.fused()
            self.channels_last = False
        else:
            if self.channels_last:
                self.model = self.model.to(memory_format=torch.channels_last)
            self.net = self.model

    def tile_size(self, h: int, w: int) -> int | None:
        """The tile core size used for an h×w image (None: whole image at once)."""
        if self.tile == 0:
            return None
        if self.tile is not None:
            return self.tile if (h > self.tile or w > self.tile) else None
        return self.auto_tile if h * w > self.max_pixels else None

    def tiles(self, h: int, w: int):
        """[(core box, input box)] with boxes (y0, y1, x0, x1); one box for the whole image if untiled."""
        t = self.tile_size(h, w)
        if t is None:
            return [((0, h, 0, w), (0, h, 0, w))]
        out = []
        for y0 in range(0, h, t):
            for x0 in range(0, w, t):
                y1, x1 = min(y0 + t, h), min(x0 + t, w)
                out.append(((y0, y1, x0, x1), (max(0, y0 - self.halo), min(h, y1 + self.halo),
                                               max(0, x0 - self.halo), min(w, x1 + self.halo))))
        return out

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        elif self.fused:
            x = x.contiguous()    # tiles are strided views
        return self.net(x)

    def __call__(self, x: torch.Tensor, progress=None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() not in (3, 4) or x.shape[-3] != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"image must be (3, H, W) or (B, 3, H, W), got {shape}")
        single = x.dim() == 3
        xb = (x.unsqueeze(0) if single else x).to(self.device, torch.float32)
        h, w = xb.shape[-2:]
        boxes = self.tiles(h, w)
        with torch.inference_mode():
            if len(boxes) == 1:
                out = self._run(xb)
            else:
                out = torch.empty_like(xb, memory_format=torch.contiguous_format)
                for (y0, y1, x0, x1), (iy0, iy1, ix0, ix1) in boxes:
                    part = self._run(xb[..., iy0:iy1, ix0:ix1])
                    out[..., y0:y1, x0:x1] = part[..., y0 - iy0:y1 - iy0, x0 - ix0:x1 - ix0]
                    if progress is not None:
                        progress.update(1)
            out = out.contiguous()
        return out[0] if single else out
