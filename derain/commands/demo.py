"""`derain demo`: derain a few sample images and write a before/after picture. No arguments needed.

Samples: real rainy photos from the shared data folder when present (SIRR real rain), otherwise
procedurally generated rainy scenes (nothing is shipped). Weights: `--weights`, by default the packaged
ones ("ours"), as every command.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ._common import add_model_args, load_model, progress

REAL_RAIN = ("data", "real-rain", "sirr147")
PAIRED_RAIN = ("data", "paired", "rain100h-dev", "rain")
MAX_SIDE = 480


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="derain sample images and write a before/after picture",
                       description="Derain a few sample images (real rain from the shared data folder, or "
                                   "generated rainy scenes on a fresh machine) and write before_after.png.")
    p.add_argument("--out", "-o", default="demo", metavar="DIR", help="output folder (default: ./demo)")
    p.add_argument("--images", "-n", type=int, default=3, metavar="N", help="number of sample images (default 3)")
    p.add_argument("--synthetic", action="store_true", help="use generated rainy scenes even if real ones exist")
    add_model_args(p)
    p.set_defaults(func=run)


# ----------------------------------------------------------------------------------- generated rain

def synthetic_scene(h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """A simple landscape (sky, sun, hills, a house, textured ground): float (3, h, w) in [0, 1]."""
    yy = torch.linspace(0, 1, h).view(h, 1).expand(h, w)
    xx = torch.linspace(0, 1, w).view(1, w).expand(h, w)
    sky_top, sky_low = torch.tensor([0.30, 0.45, 0.70]), torch.tensor([0.75, 0.80, 0.85])
    img = sky_top.view(3, 1, 1) * (1 - yy) + sky_low.view(3, 1, 1) * yy
    sx, sy = 0.2 + 0.6 * torch.rand((), generator=gen).item(), 0.18
    sun = ((xx - sx) ** 2 * (w / h) ** 2 + (yy - sy) ** 2) < 0.006
    img = torch.where(sun, torch.tensor([0.98, 0.92, 0.70]).view(3, 1, 1), img)
    phase = 2 * math.pi * torch.rand((), generator=gen).item()
    horizon = 0.55 + 0.08 * torch.sin(6 * xx + phase) + 0.04 * torch.sin(17 * xx + 2 * phase)
    hill_col = torch.tensor([0.22, 0.45, 0.20]).view(3, 1, 1) * (0.8 + 0.4 * yy)
    texture = 0.06 * torch.rand(1, h, w, generator=gen)
    img = torch.where(yy > horizon, (hill_col + texture).clamp(0, 1), img)
    hx0, hw, hy1 = 0.15 + 0.5 * torch.rand((), generator=gen).item(), 0.18, 0.78
    wall = (xx > hx0) & (xx < hx0 + hw) & (yy > hy1 - 0.18) & (yy < hy1)
    roof = (yy <= hy1 - 0.18) & (yy > hy1 - 0.30) & ((xx - hx0 - hw / 2).abs() < (yy - (hy1 - 0.30)) * 0.75 * hw / 0.12)
    door = (xx > hx0 + 0.07) & (xx < hx0 + 0.11) & (yy > hy1 - 0.09) & (yy < hy1)
    img = torch.where(wall, torch.tensor([0.80, 0.72, 0.55]).view(3, 1, 1), img)
    img = torch.where(roof, torch.tensor([0.55, 0.18, 0.15]).view(3, 1, 1), img)
    img = torch.where(door, torch.tensor([0.30, 0.20, 0.12]).view(3, 1, 1), img)
    return img.clamp(0, 1)


def rain_streaks(h: int, w: int, gen: torch.Generator, density: float = 0.004, length: int = 17,
                 angle_deg: float = 75.0, strength: float = 0.8) -> torch.Tensor:
    """Rain layer (1, h, w) in [0, 1]: sparse drops smeared along a line at angle_deg (90 = vertical)."""
    drops = (torch.rand(1, 1, h, w, generator=gen) < density).float()
    drops = drops * (0.5 + 0.5 * torch.rand(1, 1, h, w, generator=gen))
    k = torch.zeros(length, length)
    c, t = (length - 1) / 2, math.radians(angle_deg)
    for s in torch.linspace(-c, c, 4 * length):
        k[round(c + s.item() * math.sin(t)), round(c + s.item() * math.cos(t))] = 1.0
    k = k / k.sum() * length / 3
    layer = F.conv2d(drops, k.view(1, 1, length, length), padding=length // 2)
    layer = F.avg_pool2d(layer, 3, stride=1, padding=1)  # soften
    return (strength * layer[0]).clamp(0, 1)


def synthetic_rainy(n: int, h: int = 240, w: int = 360, seed: int = 2020) -> list[tuple[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        scene = synthetic_scene(h, w, gen)
        angle = 65 + 30 * torch.rand((), generator=gen).item()
        rain = rain_streaks(h, w, gen, angle_deg=angle)
        out.append((f"generated-{i + 1}", (scene + rain).clamp(0, 1)))
    return out


# ----------------------------------------------------------------------------------- samples

def sample_images(n: int, synthetic: bool) -> tuple[list[tuple[str, torch.Tensor]], str]:
    """[(name, (3, H, W) image)] and a description of where they come from."""
    from derain.io import ImageReadError, list_images, read_image
    from derain.models.checkpoint import shared_dir

    base = None if synthetic else shared_dir()
    if base is not None:
        for parts, what in ((REAL_RAIN, "real rain (SIRR)"), (PAIRED_RAIN, "synthetic rain (Rain100H)")):
            folder = base.joinpath(*parts)
            if not folder.is_dir():
                continue
            try:
                files = list_images(folder)
            except ValueError:
                continue
            picked = []
            for f in files:
                try:
                    picked.append((f.stem, _fit(read_image(f)[0])))
                except ImageReadError:
                    continue
                if len(picked) == n:
                    break
            if picked:
                return picked, f"{what} from {folder}"
    return synthetic_rainy(n), "generated rainy scenes"


def _fit(x: torch.Tensor, max_side: int = MAX_SIDE) -> torch.Tensor:
    h, w = x.shape[1:]
    s = max(h, w) / max_side
    if s <= 1:
        return x
    size = (max(1, round(h / s)), max(1, round(w / s)))
    return F.interpolate(x.unsqueeze(0), size=size, mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)


def before_after(rows: list[tuple[torch.Tensor, torch.Tensor]], labels=("rainy input", "derained"),
                 gap: int = 8, header: int = 22):
    """Grid of (before, after) rows with a caption line -> PIL image."""
    import numpy as np
    from PIL import Image, ImageDraw

    col_w = max(max(b.shape[2], a.shape[2]) for b, a in rows)
    height = header + sum(max(b.shape[1], a.shape[1]) for b, a in rows) + gap * (len(rows) - 1)
    canvas = torch.ones(3, height, 2 * col_w + gap)
    y = header
    for b, a in rows:
        canvas[:, y:y + b.shape[1], :b.shape[2]] = b.clamp(0, 1)
        canvas[:, y:y + a.shape[1], col_w + gap:col_w + gap + a.shape[2]] = a.clamp(0, 1)
        y += max(b.shape[1], a.shape[1]) + gap
    arr = torch.round(canvas.permute(1, 2, 0) * 255).to(torch.uint8).numpy()
    im = Image.fromarray(np.ascontiguousarray(arr))
    draw = ImageDraw.Draw(im)
    draw.text((4, 4), labels[0], fill=(0, 0, 0))
    draw.text((col_w + gap + 4, 4), labels[1], fill=(0, 0, 0))
    return im


def run(args) -> int:
    if args.images < 1:
        raise ValueError(f"--images must be >= 1, got {args.images}")
    derainer, label, _ = load_model(args)
    samples, source = sample_images(args.images, args.synthetic)
    rows = []
    for name, x in progress(samples, desc="demo", unit="img"):
        rows.append((x, derainer(x).cpu()))
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out {str(out_dir)!r} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "before_after.png"
    before_after(rows, labels=("rainy input", f"derained ({label})")).save(path)
    print(f"derained {len(rows)} sample image{'s' if len(rows) != 1 else ''} ({source}) with weights {label}")
    print(f"wrote {path}")
    return 0
