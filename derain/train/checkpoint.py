"""Training checkpoints: one atomic .safetensors file per saved step.

A checkpoint holds the model state ("model.<key>"), the optimizer state
("optim.<param index>.<name>"), torch's RNG state ("rng.torch") and, in the safetensors
metadata, the step, the optimizer's param_groups and the run config (JSON). The data order
needs no state: it is a pure function of (seed, step) (see derain.train.data).
Files are written to a temporary name in RUN_DIR and renamed with os.replace, so a killed run
never leaves a torn checkpoint.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .data import file_mode

FORMAT = "derain-train-checkpoint/1"
_NAME = re.compile(r"^step_(\d+)\.safetensors$")


def checkpoint_path(run_dir, step: int) -> Path:
    return Path(run_dir) / f"step_{step:08d}.safetensors"


def list_checkpoints(run_dir) -> list[tuple[int, Path]]:
    """(step, path) of the checkpoints in run_dir, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = []
    for p in run_dir.iterdir():
        m = _NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def _atomic_save(tensors: dict, metadata: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())       # mkstemp's 0600 -> the umask's mode, like any file the run writes
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_checkpoint(path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    config: dict, ema: torch.nn.Module | None = None) -> Path:
    """Write the full training state after `step` iterations to `path` atomically (`ema`: the moving
    average of the weights, if the run keeps one, as `ema.*`)."""
    path = Path(path)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()})
    opt = optimizer.state_dict()
    for idx, state in opt["state"].items():
        for name, value in state.items():
            if not torch.is_tensor(value):
                value = torch.tensor(value)
            tensors[f"optim.{idx}.{name}"] = value.detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in opt["param_groups"]]
    metadata = {"format": FORMAT, "step": str(int(step)), "optim_groups": json.dumps(groups),
                "config": json.dumps(config, sort_keys=True)}
    _atomic_save(tensors, metadata, path)
    return path


def read_checkpoint(path) -> tuple[dict, dict]:
    """(tensors, metadata) of a checkpoint; ValueError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{path}: not a readable safetensors checkpoint ({exc})") from exc
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path}: not a derain training checkpoint (format {metadata.get('format')!r})")
    return tensors, metadata


_OPTIM_IMPL = ("fused", "foreach", "capturable", "differentiable")


def checkpoint_has_ema(path) -> bool:
    """Whether the checkpoint holds a moving average of the weights (`ema.*`)."""
    with safe_open(str(path), framework="pt") as f:
        return any(k.startswith("ema.") for k in f.keys())


def load_checkpoint(path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    restore_rng: bool = True, ema: torch.nn.Module | None = None) -> tuple[int, dict]:
    """Restore model (and optimizer, RNG, moving average) in place; returns (step, config).
    `ema` gets the checkpoint's average, or the weights where the checkpoint has none (it starts here)."""
    tensors, metadata = read_checkpoint(path)
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    device = next(model.parameters()).device
    model.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=True)
    if ema is not None:
        avg = {k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")} or state
        ema.load_state_dict({k: v.to(device) for k, v in avg.items()}, strict=True)
    if optimizer is not None:
        groups = json.loads(metadata["optim_groups"])
        opt_state: dict[int, dict] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, idx, name = k.split(".", 2)
                opt_state.setdefault(int(idx), {})[name] = v
        for g in groups:
            if "betas" in g:
                g["betas"] = tuple(g["betas"])
        # how the optimizer runs (fused kernel, foreach loop) is the caller's choice, not part of the state
        impl = [{k: g[k] for k in _OPTIM_IMPL if k in g} for g in optimizer.param_groups]
        optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
        for g, own in zip(optimizer.param_groups, impl):
            g.update(own)
            for p in g["params"]:    # moments in the parameter's layout (channels-last): the fused
                state = optimizer.state.get(p, {})    # kernel walks both as flat memory
                for name, v in state.items():
                    if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                        state[name] = torch.empty_like(p, dtype=v.dtype).copy_(v)
    if restore_rng and "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    return int(metadata["step"]), json.loads(metadata["config"])


def prune_checkpoints(run_dir, keep: int) -> None:
    """Delete all but the newest `keep` step checkpoints."""
    if keep <= 0:
        return
    for _, p in list_checkpoints(run_dir)[:-keep]:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def export_weights(model: torch.nn.Module, path, metadata: dict | None = None) -> Path:
    """Inference weights in the model format of derain.models (safetensors + JSON sidecar)."""
    from derain.models.checkpoint import save_checkpoint as save_model

    return save_model(model, path, metadata=metadata)
