"""The two-stage data distillation trainer of Rain O'er Me (docs/method.md#the-distillation-loop, TIP Algorithm 1).

Per iteration t (counted from 1 over the whole run):
    R, Ŷ, R_e, Y_e = model.forward_train(X)          # Y_e = X − g(G(X))
    D = rain_composite(C, R_e.detach())              # clamp(C + R_e, 0, 1)
    Ĉ = model(D)                                     # D − G(D)
    L = β(t)·ssim_loss(Y_e, Y_s) + α(t)·ssim_loss(Ĉ, C)
with Adam and a learning rate constant for the first half of the run, then decaying linearly.
Runs data-parallel (DistributedDataParallel) when started under torchrun.
"""
from __future__ import annotations

import copy
import csv
import gc
import json
import math
import os
import shutil
import signal
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .checkpoint import (checkpoint_has_ema, checkpoint_path, export_weights, latest_checkpoint, list_checkpoints,
                         load_checkpoint, prune_checkpoints, save_checkpoint)
from .data import DistillationSamples, ImageFolder, SoftLabelCache, StepBatchSampler, load_pairs
from .schedule import lr_factor, weight_schedule

# options that change the numbers a run computes: a resumed run takes them from its checkpoint
RESULT_OPTIONS = ("batch_size", "crop", "lr", "betas", "preset", "detail", "kernel_size", "padding",
                  "min_composite", "seed", "channels_last")


@dataclass
class TrainConfig:
    rainy: str | list[str]  # one folder, or several whose images are pooled
    clean: str | list[str]
    out: str
    steps: int = 300_000
    val_pairs: str | None = None
    batch_size: int = 8
    crop: int = 128
    lr: float = 2e-4
    betas: tuple = (0.5, 0.999)
    preset: str = "tip"
    detail: str = "rain1400"
    kernel_size: int = 31
    padding: str = "reflect"
    min_composite: bool = False
    seed: int = 0
    workers: int = 2
    ckpt_every: int = 500
    keep: int = 3
    val_every: int = 1000
    val_limit: int | None = None
    log_every: int = 10
    max_minutes: float | None = None
    cache_dir: str | None = None
    channels_last: bool = True
    preload: bool = True
    progress: bool = True
    threads: int | None = None
    device: str = "cpu"
    resume: bool = False
    ema: float | None = None  # decay of an exponential moving average of the weights (None: none kept)

    def check(self) -> None:
        def positive(name):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("steps", "batch_size", "crop", "ckpt_every", "val_every", "log_every", "kernel_size"):
            positive(name)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.keep < 1:
            raise ValueError(f"keep must be >= 1, got {self.keep}")
        weight_schedule(self.preset)
        if self.detail not in ("rain1400", "did"):
            raise ValueError(f"detail must be 'rain1400' or 'did', got {self.detail!r}")
        if self.val_limit is not None and self.val_limit < 1:
            raise ValueError(f"val_limit must be >= 1, got {self.val_limit}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max_minutes must be > 0, got {self.max_minutes}")
        if self.ema is not None and not 0 < self.ema < 1:
            raise ValueError(f"ema must be a decay in (0, 1), e.g. 0.999, got {self.ema}")


class DistillationLoss(nn.Module):
    """One forward of Algorithm 1 as a module (so DistributedDataParallel sees one forward).

    forward(x, y_s, c, alpha, beta) -> (L, 1 − SSIM(Y_e, Y_s), 1 − SSIM(Ĉ, C)); x, y_s, c (B, 3, h, w).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, y_s, c, alpha: float, beta: float):
        from derain_kernels import rain_composite, ssim_loss

        _, _, r_e, y_e = self.model.forward_train(x)
        d = rain_composite(c, r_e.detach())
        c_hat = self.model(d)
        loss_label = ssim_loss(y_e, y_s)
        loss_clean = ssim_loss(c_hat, c)
        return beta * loss_label + alpha * loss_clean, loss_label, loss_clean


@dataclass
class TrainResult:
    model: nn.Module
    step: int                      # iterations done in total (including earlier runs)
    steps_this_run: int
    stopped_early: bool
    run_dir: Path
    last_val: dict | None = None
    sec_per_step: float | None = None
    extra: dict = field(default_factory=dict)
    interrupted: int | None = None  # the signal (SIGINT, SIGTERM) that stopped the run early, if one did


def _adam(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam with PyTorch's fused kernel where it has one for these parameters (one pass over all of them:
    0.4 ms a step here against 2.4 ms for the per-tensor loop), else the multi-tensor (foreach) loop."""
    kw = dict(lr=cfg.lr, betas=tuple(cfg.betas))
    try:
        return torch.optim.Adam(model.parameters(), fused=True, **kw)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.Adam(model.parameters(), foreach=True, **kw)


class _Ema:
    """An exponential moving average of the weights, updated after every optimizer step:
    ema ← decay·ema + (1 − decay)·w. It does not change the training; it is validated beside the
    weights, and exported as the run's final weights."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self._avg = list(self.model.parameters())

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        torch._foreach_lerp_(self._avg, list(model.parameters()), 1.0 - self.decay)


class _Dist:
    """torch.distributed context from torchrun's environment (WORLD_SIZE > 1), else single process."""

    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        self.own_group = False
        if self.enabled and not torch.distributed.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend=backend)
            self.own_group = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def any(self, flag: bool) -> bool:
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0])
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item() > 0)

    def close(self) -> None:
        if self.own_group:
            torch.distributed.destroy_process_group()


class _CsvLog:
    """Append-only CSV; on resume, rows after the resumed step are dropped first."""

    def __init__(self, path: Path, columns: list[str], resume_step: int | None):
        self.path, self.columns = path, columns
        if resume_step is not None and path.exists():
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("step") and int(r["step"]) <= resume_step]
            self._write(rows, "w")
        elif not path.exists() or resume_step is None:
            self._write([], "w")

    def _write(self, rows, mode):
        with open(self.path, mode, newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            if mode == "w":
                w.writeheader()
            w.writerows(rows)

    def add(self, row: dict) -> None:
        self._write([row], "a")


def _run_config(cfg: TrainConfig) -> dict:
    d = asdict(cfg)
    d["betas"] = list(cfg.betas)
    return d


def evaluate_pairs(model: nn.Module, pairs, limit: int | None = None, device="cpu",
                   channels_last: bool = False) -> dict:
    """Mean PSNR/SSIM on Y (docs/method.md#evaluation-protocol, derain.metrics) of the model's outputs and of the
    rainy inputs against the clean images of `pairs` ((rainy path, clean path) list)."""
    from derain.io import read_image
    from derain.metrics import psnr_y, ssim_y

    pairs = list(pairs)[:limit] if limit else list(pairs)
    was_training = model.training
    model.eval()
    sums = {"psnr_y": 0.0, "ssim_y": 0.0, "psnr_y_input": 0.0, "ssim_y_input": 0.0}
    with torch.no_grad():
        for rain_path, clean_path in pairs:
            rain, _ = read_image(rain_path)
            clean, _ = read_image(clean_path)
            x = rain.unsqueeze(0).to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out = model(x)[0].cpu().contiguous()
            sums["psnr_y"] += float(psnr_y(out, clean))
            sums["ssim_y"] += float(ssim_y(out, clean))
            sums["psnr_y_input"] += float(psnr_y(rain, clean))
            sums["ssim_y_input"] += float(ssim_y(rain, clean))
    model.train(was_training)
    n = max(len(pairs), 1)
    return {**{k: v / n for k, v in sums.items()}, "n": len(pairs)}


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # noqa: BLE001 - tensorboard is optional
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def _check_ranks_in_sync(model: nn.Module, dist: _Dist, log) -> None:
    """All ranks must hold bit-identical parameters after DDP training; RuntimeError otherwise."""
    flat = torch.cat([p.detach().reshape(-1).cpu() for p in model.parameters()]).to(torch.float64)
    digest = torch.stack([flat.sum(), (flat * torch.arange(1, flat.numel() + 1, dtype=torch.float64)).sum()])
    gathered = [torch.zeros_like(digest) for _ in range(dist.world)]
    torch.distributed.all_gather(gathered, digest)
    if any(not torch.equal(g, gathered[0]) for g in gathered):
        raise RuntimeError(f"DDP ranks diverged: parameter checksums {[g.tolist() for g in gathered]}")
    if dist.main:
        log(f"ranks in sync: {dist.world} processes hold identical parameters")


def train(cfg: TrainConfig, log=print, on_step=None) -> TrainResult:
    """Run (or resume) the distillation; see the module docstring. Returns the trained model.

    on_step(t) is called after each optimizer step (tests use it to simulate a crash).
    Nothing is written before the data has been read and checked; a start that fails (bad data, an
    error or Ctrl-C before the first step) removes the run folder it created, and leaves the files of a
    folder that existed before alone. SIGINT/SIGTERM stop the run at the end of the current step with
    a step checkpoint (TrainResult.interrupted = the signal); final.safetensors is written only when
    the run reaches cfg.steps.
    """
    from derain.models import RainOerMeNet

    cfg.check()
    device = torch.device(cfg.device)
    dist = _Dist(device)
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run_dir = Path(cfg.out)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else run_dir / "soft_labels"
    created: list[Path] = []        # folders and files this start created, removed again if it fails
    started = False                 # True once the first optimizer step is done
    step_module = loader = None
    try:
        start = 0
        resume_from = None
        if cfg.resume:
            resume_from = latest_checkpoint(run_dir)
            if resume_from is None:
                raise FileNotFoundError(f"--resume: no checkpoint (step_*.safetensors) in {run_dir}")
            from .checkpoint import read_checkpoint
            _, meta = read_checkpoint(resume_from)
            stored = json.loads(meta["config"])
            changed = [k for k in RESULT_OPTIONS if k in stored and
                       (list(getattr(cfg, k)) if k == "betas" else getattr(cfg, k)) != stored[k]]
            if changed and dist.main:
                log(f"resume: keeping the run's own {', '.join(f'{k}={stored[k]!r}' for k in changed)}")
            for k in RESULT_OPTIONS:
                if k in stored:
                    setattr(cfg, k, tuple(stored[k]) if k == "betas" else stored[k])
            if cfg.ema is None and stored.get("ema"):   # the average goes on unless --ema changes it
                cfg.ema = stored["ema"]
        elif list_checkpoints(run_dir):
            raise ValueError(f"--out: {run_dir} already holds checkpoints; pass --resume to continue "
                             f"that run, or choose another folder")
        if run_dir.exists() and not run_dir.is_dir():
            raise NotADirectoryError(f"--out: {run_dir} exists and is not a folder")

        # data first: a folder without usable images fails here, before anything is written
        def skipped(message):
            if dist.main:
                log(f"warning: {message}")
        rainy = ImageFolder(cfg.rainy, cfg.crop, "--rainy", preload=cfg.preload, on_skip=skipped)
        clean = ImageFolder(cfg.clean, cfg.crop, "--clean", preload=cfg.preload, on_skip=skipped)
        val_pairs = (usable_pairs(load_pairs(cfg.val_pairs), cfg.val_limit, on_skip=skipped)
                     if cfg.val_pairs else None)

        torch.manual_seed(cfg.seed)
        model = RainOerMeNet(detail=cfg.detail).to(device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = _adam(model, cfg)
        ema = _Ema(model, cfg.ema) if cfg.ema else None
        if resume_from is not None:
            start, _ = load_checkpoint(resume_from, model, optimizer, ema=ema.model if ema else None)
            if dist.main:
                log(f"resumed from {resume_from.name} (step {start} of {cfg.steps})")
                if ema is not None and not checkpoint_has_ema(resume_from):
                    log(f"ema: the average of the weights starts here, at step {start} (decay {cfg.ema})")
            if start >= cfg.steps:
                log(f"nothing to do: the run is at step {start} >= --steps {cfg.steps}")

        # soft labels (computed once at full resolution, cached on disk)
        if dist.main:
            created += _missing_parents(run_dir) + _missing_parents(cache_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
        cache = SoftLabelCache(cache_dir, cfg.kernel_size, cfg.padding, cfg.min_composite, device=device)
        if dist.main:
            t0 = time.perf_counter()
            n = cache.warm(rainy, progress=cfg.progress)
            if n:
                log(f"soft labels: computed {n} in {time.perf_counter() - t0:.1f} s, cached in {cache.dir}")
        dist.barrier()
        labels = [cache.get(e.digest, rainy.image(i)) for i, e in enumerate(rainy.entries)] if cfg.preload else cache
        dataset = DistillationSamples(rainy, labels, clean, cfg.crop, cfg.seed)
        sampler = StepBatchSampler(start + 1, cfg.steps, cfg.batch_size, dist.rank, dist.world)
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=sampler, num_workers=cfg.workers,
            persistent_workers=cfg.workers > 0, pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(cfg.seed))  # own generator: the global RNG stays untouched

        step_module: nn.Module = DistillationLoss(model)
        if dist.enabled:
            step_module = nn.parallel.DistributedDataParallel(
                step_module, device_ids=[device.index] if device.type == "cuda" else None)
        schedule = weight_schedule(cfg.preset)

        log_csv = val_csv = writer = None
        if dist.main:
            created += [p for p in (run_dir / "config.json", run_dir / "log.csv", run_dir / "val.csv",
                                    run_dir / "tensorboard") if not p.exists()]
            with open(run_dir / "config.json", "w") as f:
                json.dump(_run_config(cfg), f, indent=1)
            cols = ["step", "loss", "loss_label", "loss_clean", "alpha", "beta", "lr", "sec_per_step"]
            log_csv = _CsvLog(run_dir / "log.csv", cols, start if cfg.resume else None)
            if val_pairs:
                val_csv = _CsvLog(run_dir / "val.csv", ["step", "psnr_y", "ssim_y", "psnr_y_input",
                                                        "ssim_y_input", "n", "psnr_y_ema", "ssim_y_ema"],
                                  start if cfg.resume else None)
            writer = _tensorboard(run_dir)

        stop_signal = {"signum": None}
        old_handlers = {}

        main_pid = os.getpid()

        def _on_signal(signum, frame):  # checkpoint at the end of the current step, then stop
            if os.getpid() != main_pid:     # a DataLoader worker (forked with this handler): ignore, the
                return                      # main process finishes the step and shuts the workers down
            stop_signal["signum"] = signum
            sys.stderr.write(f"\n{signal.Signals(signum).name}: stopping after the current step with a "
                             f"checkpoint (press Ctrl-C again to abort at once)\n")
            signal.signal(signum, old_handlers.get(signum, signal.SIG_DFL))  # a second signal is not delayed

        if dist.main or not dist.enabled:
            for s in (signal.SIGTERM, signal.SIGINT):
                try:
                    old_handlers[s] = signal.signal(s, _on_signal)
                except ValueError:  # not in the main thread
                    pass

        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, disable=not (dist.main and cfg.progress), unit="it",
                   dynamic_ncols=True, file=sys.stderr)
        deadline = None if cfg.max_minutes is None else time.monotonic() + 60.0 * cfg.max_minutes
        t = start
        last_val = None
        best_psnr = -math.inf  # best validation PSNR of the run so far (earlier segments count on resume)
        if dist.main and val_csv is not None and cfg.resume:
            with open(val_csv.path, newline="") as f:
                best_psnr = max((float(r[k]) for r in csv.DictReader(f) for k in ("psnr_y", "psnr_y_ema")
                                 if r.get(k)), default=-math.inf)
        times: list[float] = []
        stopped_early = False
        channels_last = torch.channels_last if cfg.channels_last else torch.contiguous_format
        model.train()
        tick = time.perf_counter()
        try:
            for batch in loader:
                t += 1
                x, y_s, c = (batch[k].to(device, non_blocking=True).contiguous(memory_format=channels_last)
                             for k in ("x", "y_s", "c"))
                alpha, beta = schedule(t)
                lr = cfg.lr * lr_factor(t, cfg.steps)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                loss, loss_label, loss_clean = step_module(x, y_s, c, alpha, beta)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if ema is not None:
                    ema.update(model)
                started = True
                if on_step is not None:
                    on_step(t)
                now = time.perf_counter()
                sec = now - tick
                tick = now
                times.append(sec)
                if dist.main:
                    ll, lc, lv = loss_label.item(), loss_clean.item(), loss.item()
                    bar.update(1)
                    bar.set_postfix_str(f"L_s {ll:.4f} L_h {lc:.4f} a {alpha:.3g} b {beta:.3g}", refresh=False)
                    if t % cfg.log_every == 0 or t == cfg.steps or t == start + 1:
                        log_csv.add({"step": t, "loss": f"{lv:.6g}", "loss_label": f"{ll:.6g}",
                                     "loss_clean": f"{lc:.6g}", "alpha": f"{alpha:.6g}", "beta": f"{beta:.6g}",
                                     "lr": f"{lr:.6g}", "sec_per_step": f"{sec:.4f}"})
                        if writer is not None:
                            for k, v in (("loss", lv), ("loss_label", ll), ("loss_clean", lc), ("alpha", alpha),
                                         ("beta", beta), ("lr", lr), ("sec_per_step", sec)):
                                writer.add_scalar(k, v, t)
                stop = (deadline is not None and time.monotonic() > deadline) or stop_signal["signum"] is not None
                stop = dist.any(stop)
                last = t == cfg.steps or stop
                if dist.main and (t % cfg.ckpt_every == 0 or last):
                    save_checkpoint(checkpoint_path(run_dir, t), t, model, optimizer, _run_config(cfg),
                                    ema=ema.model if ema else None)
                    prune_checkpoints(run_dir, cfg.keep)
                if val_pairs and (t % cfg.val_every == 0 or last):
                    if dist.main:
                        v0 = time.perf_counter()
                        last_val = evaluate_pairs(model, val_pairs, cfg.val_limit, device, cfg.channels_last)
                        last_val["step"] = t
                        note = ""
                        if ema is not None:
                            ev = evaluate_pairs(ema.model, val_pairs, cfg.val_limit, device, cfg.channels_last)
                            last_val["psnr_y_ema"], last_val["ssim_y_ema"] = ev["psnr_y"], ev["ssim_y"]
                            note = f"; EMA {ev['psnr_y']:.2f} dB / {ev['ssim_y']:.4f}"
                        val_csv.add({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in last_val.items()})
                        if writer is not None:
                            for k in ("psnr_y", "ssim_y", "psnr_y_ema", "ssim_y_ema"):
                                if k in last_val:
                                    writer.add_scalar(f"val/{k}", last_val[k], t)
                        bar.write(f"step {t}: val PSNR_Y {last_val['psnr_y']:.2f} dB SSIM_Y {last_val['ssim_y']:.4f}"
                                  f"{note} (input {last_val['psnr_y_input']:.2f} / {last_val['ssim_y_input']:.4f}, "
                                  f"n={last_val['n']}, {time.perf_counter() - v0:.0f} s)")
                        for which, net in (("raw", model), ("ema", ema.model if ema else None)):
                            key = "psnr_y" if which == "raw" else "psnr_y_ema"
                            if net is not None and last_val[key] > best_psnr:
                                best_psnr = last_val[key]
                                export_weights(net, run_dir / "best.safetensors",
                                               metadata={"step": t, "steps": cfg.steps, "selected_by": "val psnr_y",
                                                         "weights": which})
                    dist.barrier()
                    tick = time.perf_counter()  # validation time is not training time
                if stop:
                    stopped_early = t < cfg.steps
                    break
        finally:
            bar.close()
            for s, h in old_handlers.items():
                if signal.getsignal(s) is _on_signal:
                    signal.signal(s, h)
        if dist.enabled:
            _check_ranks_in_sync(model, dist, log)
        if dist.main and t == cfg.steps and t > start:     # only a finished run gets final weights
            final_meta = {"step": t, "steps": cfg.steps, "weights": "ema" if ema else "raw"}
            export_weights(ema.model if ema else model, run_dir / "final.safetensors", metadata=final_meta)
        if dist.main and writer is not None:
            writer.close()
        dist.barrier()                  # no rank tears the group down while another still writes
        sec_per_step = float(sorted(times)[len(times) // 2]) if times else None
        interrupted = stop_signal["signum"] if stopped_early else None
        if dist.main and stopped_early:
            why = (f"interrupted ({signal.Signals(interrupted).name})" if interrupted is not None
                   else "stopped by --max-minutes")
            log(f"{why} at step {t} of {cfg.steps}: the run is unfinished (no final.safetensors); its checkpoint "
                f"is {checkpoint_path(run_dir, t)}. Continue it with:\n  {resume_command(cfg)}")
        extra = {"ema": ema.model} if ema is not None else {}
        return TrainResult(model=model, extra=extra, step=t, steps_this_run=t - start, stopped_early=stopped_early,
                           run_dir=run_dir, last_val=last_val, sec_per_step=sec_per_step, interrupted=interrupted)
    except BaseException:
        if dist.main and not started:
            for p in created:               # what this start created; nothing that existed before
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                elif p.exists():
                    p.unlink()
        raise
    finally:
        # The DDP reducer holds gloo work: free it while the interpreter is whole, then the group.
        # Left to interpreter shutdown, a rank can abort ("terminate called without an active exception").
        step_module = loader = None
        if dist.enabled:
            gc.collect()
        dist.close()


def _missing_parents(path: Path) -> list[Path]:
    """The outermost folder that `path.mkdir(parents=True)` would create, as a list (empty if none)."""
    path = Path(path).absolute()
    if path.exists():
        return []
    while not path.parent.exists():
        path = path.parent
    return [path]


def resume_command(cfg: TrainConfig) -> str:
    """The command line that continues the run of `cfg` (its numbers come from the checkpoint)."""
    import shlex

    def folders(value):
        return [value] if isinstance(value, str) else list(value)

    parts = ["derain", "train", "--rainy", *folders(cfg.rainy), "--clean", *folders(cfg.clean), "--out", cfg.out,
             "--steps", str(cfg.steps)]
    if cfg.val_pairs:
        parts += ["--val-pairs", cfg.val_pairs]
    if cfg.cache_dir:
        parts += ["--cache-dir", cfg.cache_dir]
    return " ".join(shlex.quote(str(p)) for p in parts + ["--resume"])


def usable_pairs(pairs, limit: int | None = None, on_skip=None) -> list:
    """The (rainy, clean) pairs (the first `limit` usable ones) that can be validated on: both readable,
    the same size, at least 11x11 (the SSIM window). Others are reported through on_skip(message) (default:
    a UserWarning) and left out; ValueError if none is usable."""
    from derain.io import read_image

    report = on_skip or (lambda m: warnings.warn(m, stacklevel=3))
    good = []
    for rain_path, clean_path in pairs:
        try:
            rain, _ = read_image(rain_path)
            clean, _ = read_image(clean_path)
        except (ValueError, OSError) as exc:
            report(f"--val-pairs: skipping {rain_path}: {exc}")
            continue
        if rain.shape != clean.shape:
            report(f"--val-pairs: skipping {rain_path}: size {rain.shape[2]}x{rain.shape[1]} differs from "
                   f"{clean_path} ({clean.shape[2]}x{clean.shape[1]})")
            continue
        if min(rain.shape[1:]) < 11:
            report(f"--val-pairs: skipping {rain_path}: {rain.shape[2]}x{rain.shape[1]} is smaller than the "
                   f"11x11 SSIM window")
            continue
        good.append((rain_path, clean_path))
        if limit and len(good) == limit:
            break
    if not good:
        raise ValueError("--val-pairs: no usable pair (see the warnings above)")
    return good


warnings.filterwarnings("default", category=UserWarning, module=__name__)
