"""Loading and saving RainOerMeNet weights, and finding the weights the command line uses.

Formats read by `load_checkpoint(path)`:
- the authors' checkpoints (`.pth`/`.pt`, a plain state_dict, `out2.4.*` present -> detail "rain1400",
  absent -> "did"); also a dict wrapping one under "state_dict"/"model"/"net", and "module." prefixes;
- ours: `NAME.safetensors` + `NAME.json` (config, format version, parameter counts, free metadata).
  The config is also stored in the safetensors header, so a lone `.safetensors` loads too;
- `derain train` checkpoints (`step_*.safetensors`: "model.*" tensors, optimizer state, run config);
- a folder: a training run or weights folder (rain_oer_me / final / best .safetensors, else the newest
  step_*.safetensors, else its only .safetensors).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

FORMAT = "derain-kernels/rain-oer-me"
FORMAT_VERSION = 1
TRAIN_FORMAT = "derain-train-checkpoint/1"    # `derain train`'s step_*.safetensors (derain.train.checkpoint)
DEFAULT_NAME = "rain_oer_me"

# Weights that ship in the package (written by the trainer at the end of its run).
PACKAGED_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / f"{DEFAULT_NAME}.safetensors"
AUTHORS_NAMES = ("rain1400", "rain200l", "did")


# ----------------------------------------------------------------------------------------------- load

def load_checkpoint(path, map_location="cpu"):
    """path -> RainOerMeNet with the checkpoint's weights (eval mode). See module doc for formats."""
    from .rain_oer_me import RainOerMeNet

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weights file not found: {str(path)!r}")
    if path.is_dir():
        path = _checkpoint_in_folder(path)
    if path.suffix == ".safetensors":
        config, state = _read_ours(path)
    else:
        state = _read_torch(path, map_location)
        config = _config_from_state(path, state)
    model = RainOerMeNet(**config)
    _load_strict(model, state, path)
    model.to(map_location if map_location is not None else "cpu")
    return model.eval()


def _checkpoint_in_folder(folder: Path) -> Path:
    """A training run or weights folder -> its weights: rain_oer_me / final / best .safetensors, else the
    newest training checkpoint step_*.safetensors, else its only .safetensors."""
    for name in (DEFAULT_NAME, "final", "best"):
        p = folder / f"{name}.safetensors"
        if p.is_file():
            return p
    steps = sorted(folder.glob("step_*.safetensors"))
    if steps:
        return steps[-1]
    found = sorted(folder.glob("*.safetensors"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(f"no weights (*.safetensors) in folder {str(folder)!r}")
    raise ValueError(f"folder {str(folder)!r} holds several checkpoints "
                     f"({', '.join(p.name for p in found)}); name one of them")


def _read_torch(path: Path, map_location) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # a garbage pickle can raise anything (UnpicklingError, IndexError, ...)
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot read weights {str(path)!r}: not a readable PyTorch checkpoint ({msg})") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "net", "netG", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"weights {str(path)!r} are not a state_dict of tensors (got {type(obj).__name__})")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def _config_from_state(path: Path, state: dict) -> dict:
    w = state.get("inc.0.weight")
    if w is None or w.dim() != 4:
        raise ValueError(f"weights {str(path)!r} are not Rain O'er Me weights: no 'inc.0.weight' "
                         f"(keys start with {_preview(sorted(state))})")
    return {"channels": int(w.shape[0]), "dilation": 3,
            "detail": "rain1400" if "out2.4.weight" in state else "did"}


def _read_ours(path: Path):
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        state = load_file(str(path))
    except FileNotFoundError:
        raise
    except Exception as exc:  # SafetensorError, header JSON errors, ...
        raise ValueError(f"cannot read weights {str(path)!r}: not a readable safetensors file ({exc})") from None
    if header.get("format") == TRAIN_FORMAT:     # a `derain train` checkpoint: model.* tensors + optimizer
        state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
        config = _config_from_state(path, state)
        try:
            run = json.loads(header.get("config", "{}"))
        except ValueError:
            run = {}
        if isinstance(run, dict) and isinstance(run.get("dilation"), int):
            config["dilation"] = run["dilation"]
        return config, state
    meta = None
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read the config {str(sidecar)!r} of {str(path)!r}: {exc}") from None
    elif "config" in header:
        try:
            meta = {"format": header.get("format"), "format_version": int(header.get("format_version", 0)),
                    "config": json.loads(header["config"])}
        except ValueError as exc:
            raise ValueError(f"weights {str(path)!r} have an unreadable config in their header: {exc}") from None
    if meta is None:
        raise ValueError(f"weights {str(path)!r} have no config: expected {str(sidecar)!r} next to them")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "config" not in meta:
        raise ValueError(f"config {str(sidecar)!r} is not a {FORMAT} config (format={meta.get('format')!r})"
                         if isinstance(meta, dict) else f"config {str(sidecar)!r} is not a JSON object")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"weights {str(path)!r} have format version {version!r}; this derain reads "
                         f"versions up to {FORMAT_VERSION} (upgrade derain)")
    config = meta["config"]
    allowed = {"channels", "dilation", "detail"}
    if not isinstance(config, dict):
        raise ValueError(f"config of {str(path)!r} is not a JSON object: {config!r}")
    if set(config) - allowed:
        raise ValueError(f"config of {str(path)!r} has unknown entries: {sorted(set(config) - allowed)}")
    return config, state


def _preview(keys, n: int = 6) -> str:
    keys = list(keys)
    head = ", ".join(repr(k) for k in keys[:n])
    return f"[{head}{', ...' if len(keys) > n else ''}] ({len(keys)})"


def _load_strict(model, state: dict, path: Path) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_preview(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_preview(unexpected)}")
        raise ValueError(f"weights {str(path)!r} do not fit RainOerMeNet({_fmt_config(model.config)}): "
                         + "; ".join(parts))
    bad = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
           if tuple(state[k].shape) != tuple(v.shape)]
    if bad:
        raise ValueError(f"weights {str(path)!r} do not fit RainOerMeNet({_fmt_config(model.config)}): "
                         f"shape mismatch (checkpoint vs model) {'; '.join(bad[:4])}"
                         + (" ..." if len(bad) > 4 else ""))
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)


def _fmt_config(config: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in config.items())


# ----------------------------------------------------------------------------------------------- save

def save_checkpoint(model, path, metadata: dict | None = None) -> Path:
    """Write `path` (.safetensors, or a folder -> folder/rain_oer_me.safetensors) and its JSON sidecar.

    The JSON holds format, format_version, config, parameter counts and `metadata` (any JSON-able dict,
    e.g. the training iteration). Returns the .safetensors path.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.is_dir() or (not path.suffix and not path.exists()):
        path = path / f"{DEFAULT_NAME}.safetensors"
    if path.suffix != ".safetensors":
        raise ValueError(f"save path must end in .safetensors (or be a folder), got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "config": json.dumps(model.config)}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=header)
    os.replace(tmp, path)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": dict(model.config),
            "parameters": parameter_count(model), "metadata": metadata or {}}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    return path


# ----------------------------------------------------------------------------------------------- counts

def parameter_count(model) -> dict:
    """{"G": {"weights", "with_biases"}, "g": {...}}: convolution weights only (TIP Table IV) and total."""
    out = {}
    for part, modules in (("G", [m for n, m in model.named_children() if n != "out2"]), ("g", [model.out2])):
        weights = biases = 0
        for mod in modules:
            for name, p in mod.named_parameters():
                if name.endswith("bias"):
                    biases += p.numel()
                else:
                    weights += p.numel()
        out[part] = {"weights": weights, "with_biases": weights + biases}
    return out


# ----------------------------------------------------------------------------------------------- lookup

def shared_dir() -> Path | None:
    """The project's shared data folder: $DERAIN_SHARED if set, else `shared/` next to the checkout."""
    env = os.environ.get("DERAIN_SHARED")
    p = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared"
    return p if p.is_dir() else None


def authors_weights(name: str) -> Path | None:
    base = shared_dir()
    p = None if base is None else base / "weights" / "rain-over-me" / f"{name}.pth"
    return p if p is not None and p.is_file() else None


def packaged_weights() -> Path | None:
    return PACKAGED_WEIGHTS if PACKAGED_WEIGHTS.is_file() else None


HOW_TO_GET_WEIGHTS = (
    "get weights in one of these ways: pass --weights PATH (one of our .safetensors checkpoints, or an "
    "authors' .pth from HuangxingLin123/Rain-Over-Me); put the authors' checkpoints in "
    "SHARED/weights/rain-over-me/{rain1400,rain200l,did}.pth and set DERAIN_SHARED=SHARED; or train "
    "your own with `derain train`")


def resolve_weights(spec: str | os.PathLike | None) -> tuple[Path, str]:
    """A --weights argument -> (path, label).

    spec: a path; "rain1400" / "rain200l" / "did" (the authors', from the shared folder); "ours" (the
    packaged weights); None -> "ours" if packaged, else the authors' rain1400, else FileNotFoundError.
    """
    if spec is None:
        if packaged_weights() is not None:
            return PACKAGED_WEIGHTS, "ours"
        p = authors_weights("rain1400")
        if p is not None:
            return p, "rain1400 (authors')"
        raise FileNotFoundError("no weights available: the packaged weights "
                                f"({PACKAGED_WEIGHTS}) are missing and no shared folder with the "
                                f"authors' checkpoints was found; {HOW_TO_GET_WEIGHTS}")
    spec_s = str(spec)
    if spec_s == "ours":
        if packaged_weights() is None:
            raise FileNotFoundError(f"--weights ours: the packaged weights are missing ({PACKAGED_WEIGHTS}); "
                                    f"{HOW_TO_GET_WEIGHTS}")
        return PACKAGED_WEIGHTS, "ours"
    if spec_s in AUTHORS_NAMES:
        p = authors_weights(spec_s)
        if p is None:
            base = shared_dir()
            where = (f"{base / 'weights' / 'rain-over-me' / (spec_s + '.pth')} does not exist" if base else
                     "no shared folder found ($DERAIN_SHARED or shared/ next to the checkout)")
            raise FileNotFoundError(f"--weights {spec_s}: the authors' checkpoint is not available: {where}; "
                                    f"{HOW_TO_GET_WEIGHTS}")
        return p, f"{spec_s} (authors')"
    p = Path(spec_s).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"--weights: no such file or folder: {spec_s!r} (or use one of the names "
                                f"ours, {', '.join(AUTHORS_NAMES)})")
    return p, p.name
