"""Figures and tables of docs/training.md: evaluate a training run against the baselines.

    python scripts/training_report.py --run RUN_DIR --weights RUN_DIR/best.safetensors \
        [--shared ../shared] [--img docs/img] [--json report.json]

Rows: the rainy input, the median soft label (k=31, reflect; what the network is distilled from),
our weights, and the authors' three released checkpoints; PSNR/SSIM on Y (derain.metrics, docs/method.md#evaluation-protocol)
over the full rain100h-dev (50 pairs) and sirr-test20 (20 pairs) sets. Figures: the loss curves of
RUN_DIR/log.csv (+ val.csv) and before/after crops. Needs matplotlib (a test/bench dependency).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages first

import derain_kernels as dk  # noqa: E402
from derain.io import read_image  # noqa: E402
from derain.metrics import psnr_y, ssim_y  # noqa: E402
from derain.models import RainOerMeNet  # noqa: E402
from derain.train.data import load_pairs  # noqa: E402

SETS = ("rain100h-dev", "sirr-test20")
AUTHORS = ("rain1400", "rain200l", "did")


MEDIAN = {"impl": "op"}


def median_label(x: torch.Tensor, k: int = 31) -> torch.Tensor:
    """soft_label of a float (3, H, W) image in [0, 1] that came from 8 bits: filtered as uint8 (exact).

    impl "op": derain_kernels.soft_label; "opencv": cv2.medianBlur on a reflect-101 padded image
    (the same numbers for uint8: reflect = scipy mirror; for when the op is reference-only and slow).
    """
    q = torch.round(x * 255).to(torch.uint8)
    if MEDIAN["impl"] == "opencv":
        import cv2

        r = k // 2
        a = q.permute(1, 2, 0).numpy()
        pad = cv2.copyMakeBorder(np.ascontiguousarray(a), r, r, r, r, cv2.BORDER_REFLECT_101)
        m = np.stack([cv2.medianBlur(np.ascontiguousarray(pad[:, :, c]), k)[r:-r, r:-r] for c in range(3)], 0)
        return torch.from_numpy(m).float() / 255
    return dk.soft_label(q[None], kernel_size=k)[0].float() / 255


def evaluate(methods: dict, pairs, progress: str) -> dict:
    scores = {m: [[], []] for m in ["rainy input", "median soft label (k=31)", *methods]}
    for i, (rp, cp) in enumerate(pairs):
        rain, _ = read_image(rp)
        clean, _ = read_image(cp)
        outs = {"rainy input": rain, "median soft label (k=31)": median_label(rain)}
        with torch.no_grad():
            for name, net in methods.items():
                outs[name] = net(rain[None].contiguous(memory_format=torch.channels_last))[0].contiguous()
        for name, out in outs.items():
            scores[name][0].append(float(psnr_y(out, clean)))
            scores[name][1].append(float(ssim_y(out, clean)))
        print(f"{progress} {i + 1}/{len(pairs)}", file=sys.stderr, flush=True)
    return {m: {"psnr_y": float(np.mean(p)), "ssim_y": float(np.mean(s)), "n": len(p)} for m, (p, s) in scores.items()}


def _read_csv(path: Path) -> dict:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    # empty cells (e.g. the EMA columns before the run kept an average) are NaN, left out of the plots
    return {k: np.array([float(r[k]) if r[k] else np.nan for r in rows]) for k in rows[0]} if rows else {}


def loss_figure(run: Path, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = _read_csv(run / "log.csv")
    val = _read_csv(run / "val.csv") if (run / "val.csv").exists() else {}
    fig, axes = plt.subplots(1, 3 if val else 2, figsize=(13 if val else 9, 3.4), dpi=90)
    step = log["step"]

    def smooth(v, n=25):
        if len(v) < n:
            return v
        c = np.cumsum(np.insert(v, 0, 0.0))
        head = c[1:n] / np.arange(1, n)
        return np.concatenate([head, (c[n:] - c[:-n]) / n])

    ax = axes[0]
    ax.plot(step, log["loss_label"], color="tab:blue", alpha=0.25, lw=0.8)
    ax.plot(step, smooth(log["loss_label"]), color="tab:blue", label="1 − SSIM(Y_e, Y_s)  (soft)")
    ax.plot(step, log["loss_clean"], color="tab:red", alpha=0.25, lw=0.8)
    ax.plot(step, smooth(log["loss_clean"]), color="tab:red", label="1 − SSIM(Ĉ, C)  (hard)")
    ax.set_xlabel("iteration t")
    ax.set_title("the two objectives (raw, and running mean of 25)")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(step, log["loss"], color="k", alpha=0.3, lw=0.8)
    ax.plot(step, smooth(log["loss"]), color="k", label="L = β·soft + α·hard")
    ax.set_xlabel("iteration t")
    ax2 = ax.twinx()
    ax2.plot(step, log["alpha"], color="tab:green", ls="--", label="α(t)")
    ax2.plot(step, log["beta"], color="tab:purple", ls=":", label="β(t)")
    ax2.set_ylabel("α, β")
    ax.set_title("total loss and the weights α, β")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8)
    if val:
        ax = axes[2]
        ax.plot(val["step"], val["psnr_y"], "o-", label="ours (the weights)")
        if "psnr_y_ema" in val and np.isfinite(val["psnr_y_ema"]).any():
            ok = np.isfinite(val["psnr_y_ema"])
            ax.plot(val["step"][ok], val["psnr_y_ema"][ok], "s-", label="ours (their moving average)")
        ax.plot(val["step"], val["psnr_y_input"], "--", color="gray", label="rainy input")
        ax.set_xlabel("iteration t")
        ax.set_ylabel("PSNR on Y (dB)")
        ax.set_title(f"validation (first {int(val['n'][0])} pairs of rain100h-dev)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def before_after(images: list, methods: dict, out_dir: Path, size: int = 256) -> list[Path]:
    """For each (path, top, left) a crop of size×size at full resolution: rainy | soft label | methods."""
    from PIL import Image, ImageDraw

    written = []
    for path, top, left in images:
        img, _ = read_image(path)
        h, w = img.shape[-2:]
        top, left = min(top, h - size), min(left, w - size)
        crop = img[:, top:top + size, left:left + size]
        panels = [("rainy input", crop), ("median k=31", median_label(crop))]
        with torch.no_grad():
            # run the networks on a larger context then crop, so crop borders do not matter
            t0, l0 = max(top - 32, 0), max(left - 32, 0)
            ctx = img[:, t0:top + size + 32, l0:left + size + 32][None].contiguous(memory_format=torch.channels_last)
            for name, net in methods.items():
                y = net(ctx)[0].contiguous()
                panels.append((name, y[:, top - t0:top - t0 + size, left - l0:left - l0 + size]))
        label_h = 16
        canvas = Image.new("RGB", (size * len(panels), size + label_h), "white")
        draw = ImageDraw.Draw(canvas)
        for j, (name, p) in enumerate(panels):
            canvas.paste(Image.fromarray(_to_uint8(p)), (j * size, label_h))
            draw.text((j * size + 4, 2), name, fill="black")
        target = out_dir / f"before_after_{Path(path).stem}.png"
        canvas.save(target, optimize=True)
        written.append(target)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--weights", required=True, type=Path, help="our weights (.safetensors)")
    ap.add_argument("--also", nargs="*", default=[], metavar="LABEL=PATH",
                    help="more of our checkpoints to evaluate (e.g. an earlier step)")
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared")
    ap.add_argument("--img", type=Path, default=Path("docs/img"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--skip-eval", action="store_true")
    ap.add_argument("--median", choices=["op", "opencv"], default="op",
                    help="how the median soft-label row is computed (opencv: same numbers, fast)")
    args = ap.parse_args(argv)
    MEDIAN["impl"] = args.median
    args.img.mkdir(parents=True, exist_ok=True)
    methods = {"ours": RainOerMeNet.from_checkpoint(args.weights)}
    for item in args.also:
        label, _, path = item.partition("=")
        methods[label] = RainOerMeNet.from_checkpoint(path)
    for name in AUTHORS:
        methods[f"authors' {name}"] = RainOerMeNet.from_checkpoint(args.shared / "weights" / "rain-over-me" / f"{name}.pth")
    for net in methods.values():
        net.eval().to(memory_format=torch.channels_last)
    loss_figure(args.run, args.img / "training_loss.png")
    report = {"weights": str(args.weights), "sets": {}}
    if not args.skip_eval:
        for s in SETS:
            t0 = time.time()
            report["sets"][s] = evaluate(methods, load_pairs(args.shared / "data" / "paired" / s), s)
            report["sets"][s]["_seconds"] = time.time() - t0
    real = args.shared / "data" / "real-rain" / "sirr147"
    picks = [(real / n, t, l) for n, t, l in PICKS if (real / n).exists()]
    figs = before_after(picks, {"ours": methods["ours"], "authors' rain1400": methods["authors' rain1400"]},
                        args.img)
    report["figures"] = [str(f) for f in figs]
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    for s, rows in report["sets"].items():
        print(f"\n{s}:")
        for m, v in rows.items():
            if not m.startswith("_"):
                print(f"| {m} | {v['psnr_y']:.2f} | {v['ssim_y']:.4f} |")
    return 0


# before/after crops of real rain: (file name in sirr147, top, left) of a 256x256 crop
PICKS = [("4.jpg", 150, 150), ("10.jpg", 220, 200), ("20.jpg", 80, 160)]

if __name__ == "__main__":
    sys.exit(main())
