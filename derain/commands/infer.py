"""`derain infer INPUT... --weights W --out DIR`: derain image files and folders, keeping format and size."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from ._common import add_model_args, load_model, progress


def add_parser(sub) -> None:
    p = sub.add_parser("infer", help="derain images (files or folders), keeping their format and size",
                       description="Derain images with Rain O'er Me: Ŷ = X − G(X). Each output has its input's "
                                   "file name, format, size and mode (grey, RGBA, 16-bit).")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    p.add_argument("--out", "-o", default="derained", metavar="DIR", help="output folder (default: ./derained)")
    p.add_argument("--compare", action="store_true",
                   help="also write NAME_compare.png: input | output side by side")
    add_model_args(p)
    p.set_defaults(func=run)


def side_by_side(left: torch.Tensor, right: torch.Tensor, gap: int = 8) -> torch.Tensor:
    """Two (3, H, W) images -> (3, H, 2W + gap) with a white gap between them."""
    h = max(left.shape[1], right.shape[1])
    canvas = torch.ones(3, h, left.shape[2] + gap + right.shape[2])
    canvas[:, :left.shape[1], :left.shape[2]] = left.clamp(0, 1)
    canvas[:, :right.shape[1], left.shape[2] + gap:] = right.clamp(0, 1)
    return canvas


def output_names(files, out_dir: Path) -> list[Path]:
    """out_dir/<input name> (PNG when the input's format cannot be written); refuses clashes and overwrites."""
    from derain.io import _FORMAT_BY_EXT

    outs, seen = [], {}
    for f in files:
        name = f.name if f.suffix.lower() in _FORMAT_BY_EXT else f.stem + ".png"
        o = out_dir / name
        if o.resolve() == f.resolve():
            raise ValueError(f"--out {str(out_dir)!r}: would overwrite the input {str(f)!r}; choose another folder")
        if name in seen:
            raise ValueError(f"two inputs would be written to the same file {str(o)!r}: "
                             f"{str(seen[name])!r} and {str(f)!r}")
        seen[name] = f
        outs.append(o)
    return outs


def run(args) -> int:
    from derain.io import ImageReadError, list_images, output_bits, read_image, write_image

    files = list_images(args.inputs, name="INPUT")
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out {str(out_dir)!r} exists and is not a folder")
    outs = output_names(files, out_dir)
    derainer, label, _ = load_model(args)
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    bar = progress(total=len(files), desc="derain", unit="img")
    for f, o in zip(files, outs):
        bar.set_postfix_str(f.name, refresh=False)
        try:
            x, info = read_image(f)
        except ImageReadError as exc:
            print(f"derain infer: error: {exc} (skipped)", file=sys.stderr)
            failed += 1
            bar.update(1)
            continue
        if info.reduced:
            print(f"derain infer: warning: {f}: a 16-bit image in a layout that can only be read at 8 bits per "
                  f"channel; its output is 8-bit", file=sys.stderr)
        elif output_bits(o, info) < info.bits:
            print(f"derain infer: warning: {f}: 16-bit input written as 8-bit {o.suffix} (16-bit output is "
                  f"PNG, or TIFF for grey images)", file=sys.stderr)
        n_tiles = len(derainer.tiles(*x.shape[1:]))
        if n_tiles > 1:
            with progress(total=n_tiles, desc=f"{f.name} tiles", unit="tile", leave=False) as tiles_bar:
                y = derainer(x, progress=tiles_bar).cpu()
        else:
            y = derainer(x).cpu()
        write_image(o, y, info)
        if args.compare:
            write_image(o.with_name(o.stem + "_compare.png"), side_by_side(x, y))
        bar.update(1)
    bar.close()
    done = len(files) - failed
    print(f"derained {done} image{'s' if done != 1 else ''} into {out_dir} (weights: {label})")
    if failed:
        print(f"derain infer: error: {failed} of {len(files)} input(s) could not be read", file=sys.stderr)
        return 1
    return 0
