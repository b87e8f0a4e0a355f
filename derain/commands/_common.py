"""Helpers shared by the infer / eval / demo commands."""
from __future__ import annotations

import argparse
import sys

import torch

EFFICIENT_TILE = 128    # smaller --tile values compute more than twice the pixels (31-pixel halo): warned

WEIGHTS_HELP = ("weights: a name, ours (the packaged weights, the default) or rain1400, rain200l, did (the "
                "authors' released checkpoints, downloaded on first use into torch.hub's folder, or "
                "$DERAIN_WEIGHTS_DIR), or a path: "
                "a derain .safetensors, an authors' .pth, a `derain train` checkpoint or a finished run folder")


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", "-w", default=None, metavar="W", help=WEIGHTS_HELP)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda if available)")
    p.add_argument("--tile", type=_non_negative_int, default=None, metavar="N",
                   help="tile size in pixels for large images (exact: tiles overlap by the receptive field, "
                        "31 pixels, so tiles below 128 cost over twice the work and get a warning); "
                        "0 = never tile; default: tile 512 above 1024x1024 pixels")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads for torch (default: torch's)")


def _int_at_least(lowest: int, what: str):
    """argparse type: an int >= lowest, with a message naming what was expected."""
    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {s!r}") from None
        if v < lowest:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {s!r}")
        return v
    return parse


_positive_int = _int_at_least(1, "positive")
_non_negative_int = _int_at_least(0, "non-negative")


def _odd_positive_int(s: str) -> int:
    v = _positive_int(s)
    if v % 2 == 0:
        raise argparse.ArgumentTypeError(f"expected an odd positive integer, got {s!r}")
    return v


def _float_in(low: float, high: float | None, what: str, low_open: bool = False, high_open: bool = True):
    """argparse type: a finite float in the interval [low, high) (or (low, ...) with low_open)."""
    import math

    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}") from None
        ok = math.isfinite(v) and (v > low if low_open else v >= low)
        if high is not None:
            ok = ok and (v < high if high_open else v <= high)
        if not ok:
            raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}")
        return v
    return parse


_positive_float = _float_in(0.0, None, "a positive number", low_open=True)
_beta = _float_in(0.0, 1.0, "a number in [0, 1)")
_decay = _float_in(0.0, 1.0, "a decay in (0, 1), e.g. 0.999", low_open=True)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device: unknown device {name!r} (cpu, cuda, cuda:N or auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return dev


def load_model(args, weights=None):
    """(Derainer, label of the weights) from the parsed --weights/--device/--tile/--threads."""
    from derain.inference import Derainer
    from derain.models import RainOerMeNet
    from derain.models.checkpoint import DEFAULT_WEIGHTS, resolve_weights

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    spec = weights if weights is not None else args.weights
    try:
        path, label = resolve_weights(spec)
    except (FileNotFoundError, ValueError) as exc:     # name the option; the same exception type
        given = f"--weights {spec}" if spec is not None else f"--weights {DEFAULT_WEIGHTS} (the default)"
        raise type(exc)(f"{given}: {exc}") from None
    device = pick_device(args.device)
    model = RainOerMeNet.from_checkpoint(path, map_location=device)
    derainer = Derainer(model, device=device, tile=args.tile)
    if args.tile and args.tile < EFFICIENT_TILE:
        t, halo = args.tile, derainer.halo
        cost = ((t + 2 * halo) / t) ** 2
        print(f"derain {getattr(args, 'command', '')}: warning: --tile {t} is small: each tile is computed with "
              f"{halo} pixels of context on every side, so about {cost:.0f}x the pixels of an untiled run are "
              f"computed (--tile {EFFICIENT_TILE}: {((EFFICIENT_TILE + 2 * halo) / EFFICIENT_TILE) ** 2:.1f}x, "
              f"512: {((512 + 2 * halo) / 512) ** 2:.1f}x); use a larger --tile, or 0 not to tile, unless memory "
              f"is short", file=sys.stderr)
    return derainer, label, path


def progress(iterable=None, **kwargs):
    """tqdm on stderr, shown only on a terminal."""
    from tqdm import tqdm

    kwargs.setdefault("disable", None)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
