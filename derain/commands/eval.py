"""`derain eval --pairs DIR`: mean PSNR/SSIM on Y of the model (and baselines) over rain/norain pairs."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ._common import add_model_args, load_model, progress

BASELINES = ("median", "median-min", "input")
SSIM_WINDOW = 11    # derain.metrics.ssim_y: 11x11 window, valid positions only


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="PSNR/SSIM (Y channel) of the model on paired rainy/clean images",
                       description="Evaluate on DIR/rain/* against DIR/norain/* (matching file names): mean "
                                   "PSNR and SSIM on the Y channel (BT.601) of uint8 images, skimage's SSIM "
                                   "convention. The rainy input itself is always listed as a reference row.")
    p.add_argument("--pairs", required=True, metavar="DIR", help="folder with rain/ and norain/ subfolders")
    p.add_argument("--baseline", nargs="*", default=[], choices=BASELINES[:2], metavar="B",
                   help="extra rows: median (the soft label: median filter of the rainy image), "
                        "median-min (min(X, median(X)), the CVPR-W soft label)")
    p.add_argument("--kernel", type=int, default=31, help="median kernel size of the baselines (default 31)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="evaluate the first N pairs only")
    p.add_argument("--json", metavar="FILE", help="also write the results (means and per image) as JSON; - = stdout")
    add_model_args(p)
    p.set_defaults(func=run)


def find_pairs(folder) -> tuple[list[tuple[Path, Path]], list[str]]:
    """DIR -> ([(rain file, norain file)], [rain names without a clean counterpart])."""
    from derain.io import list_images

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--pairs: no such folder: {str(folder)!r}")
    rain_dir, clean_dir = folder / "rain", folder / "norain"
    for d in (rain_dir, clean_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"--pairs {str(folder)!r}: expected subfolders rain/ and norain/, "
                                    f"{str(d)!r} is missing")
    rain = list_images(rain_dir, name="--pairs")
    clean = list_images(clean_dir, name="--pairs")
    by_name = {p.name: p for p in clean}
    by_stem = {}
    for p in clean:
        by_stem.setdefault(p.stem, p)
    pairs, unmatched = [], []
    for r in rain:
        c = by_name.get(r.name) or by_stem.get(r.stem)
        if c is None:
            unmatched.append(r.name)
        else:
            pairs.append((r, c))
    if not pairs:
        raise ValueError(f"--pairs {str(folder)!r}: no file in rain/ has a counterpart with the same name in norain/")
    return pairs, unmatched


def run(args) -> int:
    import torch

    from derain.io import ImageReadError, read_image
    from derain.metrics import psnr_y, ssim_y

    if args.kernel < 1 or args.kernel % 2 == 0:
        raise ValueError(f"--kernel must be a positive odd integer, got {args.kernel}")
    pairs, unmatched = find_pairs(args.pairs)
    if unmatched:
        print(f"derain eval: warning: {len(unmatched)} rainy image(s) without a clean counterpart skipped "
              f"({', '.join(unmatched[:5])}{', ...' if len(unmatched) > 5 else ''})", file=sys.stderr)
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {args.limit}")
        pairs = pairs[:args.limit]
    soft_label = None
    if args.baseline:
        import derain_kernels as dk

        soft_label = getattr(dk, "soft_label", None)
        if soft_label is None:
            raise ValueError("--baseline median needs derain_kernels.soft_label, which this installation lacks")
    derainer, label, weights_path = load_model(args)

    rows = {label: [], **{_baseline_name(b, args.kernel): [] for b in args.baseline}, "rainy input": []}
    skipped = []

    def skip(rain_path, why):
        print(f"derain eval: warning: skipping {rain_path}: {why}", file=sys.stderr)
        skipped.append({"image": rain_path.name, "reason": why})

    for rain_path, clean_path in progress(pairs, desc="eval", unit="pair"):
        try:
            x, info = read_image(rain_path)
        except (ImageReadError, OSError) as exc:
            skip(rain_path, f"unreadable rainy image ({_reason(exc, rain_path)})")
            continue
        try:
            y, _ = read_image(clean_path)
        except (ImageReadError, OSError) as exc:
            skip(rain_path, f"unreadable clean image {str(clean_path)!r} ({_reason(exc, clean_path)})")
            continue
        if x.shape != y.shape:
            skip(rain_path, f"size mismatch: rainy {x.shape[2]}x{x.shape[1]}, clean {clean_path.name} "
                            f"{y.shape[2]}x{y.shape[1]} (width x height)")
            continue
        if min(x.shape[1:]) < SSIM_WINDOW:
            skip(rain_path, f"too small for SSIM: {x.shape[2]}x{x.shape[1]}, needs at least "
                            f"{SSIM_WINDOW}x{SSIM_WINDOW} pixels")
            continue
        preds = {label: derainer(x).cpu()}
        for b in args.baseline:
            # 8-bit inputs are filtered as uint8: the same medians, exact, with a quarter of the memory
            eight_bit = info.bits == 8
            src = torch.round(x * 255).to(torch.uint8) if eight_bit else x
            with torch.no_grad():
                sl = soft_label(src.unsqueeze(0), kernel_size=args.kernel, min_composite=(b == "median-min"))[0]
            preds[_baseline_name(b, args.kernel)] = sl.float() / 255 if eight_bit else sl
        preds["rainy input"] = x
        for name, pred in preds.items():
            rows[name].append({"image": rain_path.name, "psnr": float(psnr_y(pred, y)), "ssim": float(ssim_y(pred, y))})
    n = len(rows[label])
    if n == 0:
        raise ValueError(f"--pairs {args.pairs!r}: none of the {len(pairs)} pairs could be evaluated "
                         f"({len(skipped)} skipped, see the warnings above)")
    summary = {name: {"psnr": sum(r["psnr"] for r in v) / n, "ssim": sum(r["ssim"] for r in v) / n}
               for name, v in rows.items()}
    width = max(len(k) for k in summary) + 2
    counted = f"{n} evaluated" + (f", {len(skipped)} skipped" if skipped else "")
    table = [f"pairs: {args.pairs} ({counted})    weights: {label} ({weights_path})",
             f"{'method':{width}s} {'PSNR (dB)':>10s} {'SSIM':>8s}"]
    for name, s in summary.items():
        table.append(f"{name:{width}s} {s['psnr']:10.2f} {s['ssim']:8.4f}")
    # with --json - the JSON alone goes to stdout (pipeable) and the table to stderr
    print("\n".join(table), file=sys.stderr if args.json == "-" else sys.stdout)
    if args.json:
        result = {"pairs": str(args.pairs), "weights": str(weights_path), "label": label, "count": n,
                  "skipped": skipped,
                  "convention": "Y (BT.601 16-235) of uint8 images; SSIM gaussian 11x11 sigma 1.5, valid, "
                                "data range 255 (skimage)",
                  "mean": summary, "per_image": rows}
        text = json.dumps(result, indent=1)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(text + "\n")
    return 0


def _reason(exc: Exception, path) -> str:
    """The cause of a read error without repeating the path."""
    text = str(exc.__cause__ or exc)
    return text.replace(f"{str(path)!r}", "").replace(str(path), "").strip(" :") or type(exc).__name__


def _baseline_name(b: str, k: int) -> str:
    return f"median soft label (k={k})" if b == "median" else f"min(X, median) (k={k})"
