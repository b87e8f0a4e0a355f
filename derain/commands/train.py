"""`derain train`: the two-stage data distillation of Rain O'er Me (see derain.train)."""
from __future__ import annotations

import sys

from ._common import _beta, _decay, _non_negative_int, _odd_positive_int, _positive_float, _positive_int, pick_device


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train Rain O'er Me on unpaired rainy + clean folders (two-stage data distillation)",
        description="Train on a folder of real rainy images and a folder of unrelated clean images. "
                    "Checkpoints (.safetensors) go to RUN_DIR every --ckpt-every steps; a killed or "
                    "interrupted run (Ctrl-C: checkpoint, exit status 130) continues bit-for-bit with "
                    "--resume; RUN_DIR/final.safetensors is written when the run reaches --steps. "
                    "Data-parallel under "
                    "`torchrun --nproc_per_node N -m derain train ...`.")
    p.add_argument("--rainy", required=True, nargs="+", metavar="DIR",
                   help="rainy images (PNG/JPEG, any size); several folders are pooled")
    p.add_argument("--clean", required=True, nargs="+", metavar="DIR",
                   help="clean images, unpaired; several folders are pooled")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder: checkpoints, logs, soft labels")
    p.add_argument("--val-pairs", metavar="DIR", help="paired folder with rain/ and norain/ for validation")
    p.add_argument("--steps", type=_positive_int, default=300_000, help="total iterations of the run (default 300000)")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--batch-size", type=_positive_int, default=8, help="per process (default 8)")
    p.add_argument("--crop", type=_positive_int, default=128, help="square crop size (default 128)")
    p.add_argument("--lr", type=_positive_float, default=2e-4, help="Adam learning rate (default 2e-4, the released code)")
    p.add_argument("--betas", type=_beta, nargs=2, default=(0.5, 0.999), metavar=("B1", "B2"),
                   help="Adam betas (default 0.5 0.999)")
    p.add_argument("--preset", default="tip", choices=["tip", "rain1400", "rain200l", "did"],
                   help="alpha/beta schedule (default tip: alpha=t/1000, beta=1000/(1000+t))")
    p.add_argument("--detail", default="rain1400", choices=["rain1400", "did"],
                   help="detail-enhancement block variant (default rain1400)")
    p.add_argument("--kernel-size", type=_odd_positive_int, default=31,
                   help="median kernel of the soft labels, odd (default 31)")
    p.add_argument("--padding", default="reflect", choices=["reflect", "replicate", "zeros"],
                   help="median border (default reflect)")
    p.add_argument("--min-composite", action="store_true", help="soft label = min(X, median(X)) (CVPR-W)")
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--workers", type=_non_negative_int, default=2, help="DataLoader worker processes (default 2)")
    p.add_argument("--ckpt-every", type=_positive_int, default=500, help="checkpoint every N steps (default 500)")
    p.add_argument("--keep", type=_positive_int, default=3, help="step checkpoints kept (default 3)")
    p.add_argument("--val-every", type=_positive_int, default=1000, help="validate every N steps (default 1000)")
    p.add_argument("--val-limit", type=_positive_int, default=None, help="validate on the first N pairs only")
    p.add_argument("--log-every", type=_positive_int, default=10, help="CSV log row every N steps (default 10)")
    p.add_argument("--max-minutes", type=_positive_float, default=None,
                   help="stop cleanly after this many minutes of training: a step checkpoint to --resume "
                        "from, no final.safetensors (exit status 0)")
    p.add_argument("--cache-dir", default=None, help="soft-label cache (default RUN_DIR/soft_labels)")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="keep contiguous tensors (channels-last is faster on CPU)")
    p.add_argument("--no-preload", dest="preload", action="store_false",
                   help="decode images per sample instead of holding them in memory")
    p.add_argument("--threads", type=_positive_int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--ema", type=_decay, default=None, metavar="DECAY",
                   help="also keep an exponential moving average of the weights with this decay (e.g. 0.999): "
                        "validated beside the weights, a candidate for best.safetensors, and the run's "
                        "final.safetensors; on --resume the run's own setting unless given (it may start then)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from derain.train import TrainConfig, train

    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        raise ValueError(f"--device: expected cpu, cuda or cuda:N, got {args.device!r}")
    pick_device(args.device)    # cuda without CUDA: an error naming --device
    cfg = TrainConfig(
        rainy=_one_or_all(args.rainy), clean=_one_or_all(args.clean), out=args.out, steps=args.steps, val_pairs=args.val_pairs,
        batch_size=args.batch_size, crop=args.crop, lr=args.lr, betas=tuple(args.betas), preset=args.preset,
        detail=args.detail, kernel_size=args.kernel_size, padding=args.padding,
        min_composite=args.min_composite, seed=args.seed, workers=args.workers, ckpt_every=args.ckpt_every,
        keep=args.keep, val_every=args.val_every, val_limit=args.val_limit, log_every=args.log_every,
        max_minutes=args.max_minutes, cache_dir=args.cache_dir, channels_last=args.channels_last,
        preload=args.preload, progress=args.progress, threads=args.threads, device=args.device,
        resume=args.resume, ema=args.ema)
    result = train(cfg, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    import os
    if int(os.environ.get("RANK", "0")) == 0:
        final = result.run_dir / "final.safetensors"
        state = ("unfinished, continue with --resume" if result.stopped_early else
                 f"finished, weights in {final}" if final.is_file() else "finished")
        print(f"step {result.step} of {cfg.steps} done ({state}); run folder {result.run_dir}")
    if result.interrupted is not None:
        return 128 + int(result.interrupted)     # 130 for Ctrl-C (SIGINT), 143 for SIGTERM
    return 0


def _one_or_all(folders: list[str]):
    """One folder as a str (as runs have always recorded it), several as a list."""
    return folders[0] if len(folders) == 1 else folders
