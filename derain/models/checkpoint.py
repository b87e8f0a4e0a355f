"""Loading and saving RainOerMeNet weights, and finding weights by name.

Names (a `str` equal to one of WEIGHT_NAMES; a Path is always a path): "ours" (the packaged weights,
the default of every command), "rain1400", "rain200l", "did" (the authors' released checkpoints, from
the shared folder or downloaded once into a cache: derain.models.hub).

Formats read by `load_checkpoint(path)` (recognised by content, not by file extension):
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
WEIGHT_NAMES = ("ours",) + AUTHORS_NAMES
DEFAULT_WEIGHTS = "ours"       # what every command uses without --weights

EXPECTED = ("expected Rain O'er Me weights: an authors' .pth state_dict, a derain .safetensors (with its "
            ".json), a `derain train` step_*.safetensors, a run folder, or a name: " + ", ".join(WEIGHT_NAMES))


# ----------------------------------------------------------------------------------------------- load

def load_checkpoint(path, map_location="cpu"):
    """path or name -> RainOerMeNet with the checkpoint's weights (eval mode). See module doc for formats."""
    from .rain_oer_me import RainOerMeNet

    if isinstance(path, str) and path in WEIGHT_NAMES:
        path, _ = resolve_weights(path)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weights file not found: {str(path)!r} (or use one of the names "
                                f"{', '.join(WEIGHT_NAMES)})")
    if path.is_dir():
        path = _checkpoint_in_folder(path)
    kind = _sniff(path)
    if kind == "safetensors":
        config, state = _read_ours(path)
    elif kind in ("zip", "pickle"):
        state = _read_torch(path, map_location)
        config = _config_from_state(path, state)
    else:
        raise _not_weights(path, {"empty": "the file is empty",
                                  "text": "it is a text file",
                                  "unknown": "it is neither a PyTorch (.pth) nor a safetensors file"}[kind])
    model = RainOerMeNet(**config)
    _load_strict(model, state, path)
    model.to(map_location if map_location is not None else "cpu")
    return model.eval()


def _checkpoint_in_folder(folder: Path) -> Path:
    """A weights folder or a finished training run -> its weights: rain_oer_me.safetensors, else
    final.safetensors, else the folder's only .safetensors. A training run without final.safetensors
    (stopped before --steps) is refused: its checkpoints are loaded only when named as files."""
    for name in (DEFAULT_NAME, "final"):
        p = folder / f"{name}.safetensors"
        if p.is_file():
            return p
    steps = sorted(folder.glob("step_*.safetensors"))
    if steps:
        raise ValueError(_unfinished_run(folder, steps))
    found = sorted(folder.glob("*.safetensors"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(f"no weights (*.safetensors) in folder {str(folder)!r}")
    raise ValueError(f"folder {str(folder)!r} holds several checkpoints "
                     f"({', '.join(p.name for p in found)}); name one of them")


def _unfinished_run(folder: Path, steps: list[Path]) -> str:
    latest = steps[-1]
    where = ""
    try:
        from safetensors import safe_open

        with safe_open(str(latest), framework="pt") as f:
            meta = f.metadata() or {}
        planned = json.loads(meta.get("config", "{}")).get("steps")
        where = f" at step {int(meta['step'])}" + (f" of {planned}" if planned else "")
    except Exception:  # noqa: BLE001 - the message works without the step
        pass
    best = folder / "best.safetensors"
    also = f", or {str(best)!r} (its best validation weights)" if best.is_file() else ""
    return (f"{str(folder)!r} is an unfinished training run (stopped{where}; it has no final.safetensors): "
            f"continue it with `derain train ... --out {folder} --resume`, or load one of its checkpoints "
            f"by its file name, e.g. {str(latest)!r} (the latest){also}")


def _not_weights(path: Path, what: str) -> ValueError:
    return ValueError(f"cannot read weights {str(path)!r}: {what}; {EXPECTED}")


def _sniff(path: Path) -> str:
    """What a file holds, from its first bytes: zip / pickle (PyTorch), safetensors, empty, text, unknown."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
        size = path.stat().st_size
    except OSError as exc:
        raise _not_weights(path, f"the file cannot be read ({exc.strerror or exc})") from None
    if not head:
        return "empty"
    if head[:4] == b"PK\x03\x04":                     # torch.save's zip format
        return "zip"
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:   # a pickle (torch's legacy format)
        return "pickle"
    if len(head) > 8 and 2 <= int.from_bytes(head[:8], "little") <= size - 8 and head[8:9] == b"{":
        return "safetensors"                          # u64 header length, then a JSON header
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "unknown"
    return "text" if all(c.isprintable() or c in "\r\n\t" for c in text) else "unknown"


def _read_torch(path: Path, map_location) -> dict:
    try:
        with open(path, "rb") as f:     # a file object: torch.load reads by content, not by extension
            obj = torch.load(f, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # a garbage pickle can raise anything (UnpicklingError, IndexError, ...)
        if "Unsupported global" in str(exc):
            raise _not_weights(path, "a PyTorch file holding Python objects other than tensors (e.g. a pickled "
                                     "module or optimizer); only state_dicts of tensors are read") from None
        raise _not_weights(path, "a damaged or truncated PyTorch file") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "net", "netG", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        what = "an empty dict" if isinstance(obj, dict) and not obj else (
            "a dict of values other than tensors" if isinstance(obj, dict) else f"a {type(obj).__name__}")
        raise _not_weights(path, f"a PyTorch file holding {what}, not a state_dict of tensors")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def _config_from_state(path: Path, state: dict) -> dict:
    w = state.get("inc.0.weight")
    if w is None or w.dim() != 4:
        raise _not_weights(path, f"the weights of another network (no 'inc.0.weight'; its keys: "
                                 f"{_preview(sorted(state))})")
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
    except Exception:  # SafetensorError, header JSON errors, ...
        raise _not_weights(path, "a damaged or truncated safetensors file") from None
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
    if "inc.0.weight" not in state:
        _config_from_state(path, state)       # a safetensors file of another network: say so
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
    os.chmod(tmp, _file_mode())      # safetensors creates files 0600; give the umask's mode like open()
    os.replace(tmp, path)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": dict(model.config),
            "parameters": parameter_count(model), "metadata": metadata or {}}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    return path


# ----------------------------------------------------------------------------------------------- counts

def _file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


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
    """The local copy (shared folder or download cache) of an authors' checkpoint, or None."""
    from .hub import local_checkpoint

    return local_checkpoint(name)


def packaged_weights() -> Path | None:
    return PACKAGED_WEIGHTS if PACKAGED_WEIGHTS.is_file() else None


def resolve_weights(spec: str | os.PathLike | None = None) -> tuple[Path, str]:
    """Weights by name or path -> (path, label).

    spec: None -> DEFAULT_WEIGHTS ("ours"); "ours" -> the packaged weights; "rain1400" / "rain200l" /
    "did" -> the authors' checkpoint (shared folder, download cache, else downloaded: derain.models.hub);
    anything else is a path (a str equal to a name is the name; pass a Path or "./ours" for such a file).
    """
    if spec is None:
        spec = DEFAULT_WEIGHTS
    if isinstance(spec, str) and spec == "ours":
        if packaged_weights() is None:
            raise FileNotFoundError(f"the packaged weights ('ours') are missing: {str(PACKAGED_WEIGHTS)!r} does not "
                                    f"exist (a broken install?); reinstall derain, or use the authors' weights "
                                    f"by name ({', '.join(AUTHORS_NAMES)}) or a checkpoint by its path")
        return PACKAGED_WEIGHTS, "ours"
    if isinstance(spec, str) and spec in AUTHORS_NAMES:
        from .hub import authors_checkpoint

        return authors_checkpoint(spec), f"{spec} (authors')"
    p = Path(spec).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"no such file or folder: {str(spec)!r} (or use one of the names "
                                f"{', '.join(WEIGHT_NAMES)})")
    return p, p.name
