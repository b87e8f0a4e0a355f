"""The authors' released checkpoints by name ("rain1400", "rain200l", "did"), fetched on first use.

Where `authors_checkpoint(name)` looks, in order:
1. the shared folder, `SHARED/weights/rain-over-me/NAME.pth` (SHARED: `$DERAIN_SHARED`, else `shared/`
   next to the checkout), when it has the file;
2. the download cache, `CACHE/rain-over-me-NAME-<sha256 prefix>.pth`. CACHE is `$DERAIN_WEIGHTS_DIR` if
   set, else `checkpoints/derain` under torch.hub's folder (`$TORCH_HOME/hub`, by default
   `$XDG_CACHE_HOME/torch/hub` or `~/.cache/torch/hub`);
3. a download from the authors' GitHub repository (HuangxingLin123/Rain-Over-Me, pinned to one commit)
   into the cache: written to a temporary file, checked against the pinned sha256, then renamed, so a
   cache never holds a partial or altered file. `$DERAIN_WEIGHTS_URL` (or the module attribute
   `BASE_URL`) replaces the repository's base URL, e.g. a mirror or a `file://` folder laid out like the
   repository.

Every file is checked against the pinned sha256 before it is used. Without network access, download
the file named in the error elsewhere and put it at the cache path the error gives.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

AUTHORS_REPO = "HuangxingLin123/Rain-Over-Me"
AUTHORS_COMMIT = "81e0e7933ad9c4a3bd1d5343475471675df93bdf"
DEFAULT_BASE_URL = f"https://raw.githubusercontent.com/{AUTHORS_REPO}/{AUTHORS_COMMIT}"
BASE_URL: str | None = None          # overrides DEFAULT_BASE_URL (after $DERAIN_WEIGHTS_URL)
TIMEOUT_S = 60

# name -> (path in the authors' repository, sha256 of the file)
AUTHORS_CHECKPOINTS = {
    "rain1400": ("code_for_Rain1400/checkpoints/pretrained/latest_net_G.pth",
                 "7859923451765d9b87b891f73728c58bf1767598bda92accad8774ffc971f29c"),
    "rain200l": ("code_for_Rain200L/checkpoints/pretrained/latest_net_G.pth",
                 "838b45ca8e5adcaf8c214d3a5542f1abdf72ded82445abf6a0d0094f5a9bb2e9"),
    "did": ("code_for_DID_data/checkpoints/pretrained/latest_net_G.pth",
            "1c228b0c5cd5e9e02441b1e00fd31efbd55c0844e8f730ecf602036495197390"),
}


class WeightsUnavailableError(FileNotFoundError):
    """Named weights are not on this machine and could not be downloaded."""


def base_url() -> str:
    return (os.environ.get("DERAIN_WEIGHTS_URL") or BASE_URL or DEFAULT_BASE_URL).rstrip("/")


def url(name: str) -> str:
    return f"{base_url()}/{_entry(name)[0]}"


def cache_dir() -> Path:
    """$DERAIN_WEIGHTS_DIR, else torch.hub's folder + checkpoints/derain."""
    env = os.environ.get("DERAIN_WEIGHTS_DIR")
    if env:
        return Path(env).expanduser()
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / "derain"


def cache_path(name: str) -> Path:
    return cache_dir() / f"rain-over-me-{name}-{_entry(name)[1][:8]}.pth"


def shared_path(name: str) -> Path | None:
    """SHARED/weights/rain-over-me/NAME.pth when that file exists."""
    from .checkpoint import shared_dir

    base = shared_dir()
    p = None if base is None else base / "weights" / "rain-over-me" / f"{name}.pth"
    return p if p is not None and p.is_file() else None


def local_checkpoint(name: str) -> Path | None:
    """The shared or cached copy of an authors' checkpoint, if there is one (no download, no check)."""
    p = shared_path(name)
    if p is not None:
        return p
    p = cache_path(name)
    return p if p.is_file() else None


def authors_checkpoint(name: str, download: bool = True) -> Path:
    """Path of the authors' checkpoint `name`: shared folder, else cache, else downloaded into the cache.

    Raises ValueError for an unknown name or a local file whose sha256 is not the released one,
    WeightsUnavailableError (a FileNotFoundError) when it is not here and cannot be downloaded.
    """
    _, sha = _entry(name)
    shared = shared_path(name)
    if shared is not None:
        digest = sha256_of(shared)
        if digest != sha:
            raise ValueError(f"{str(shared)!r} is not the authors' released {name} checkpoint (sha256 {digest}, "
                             f"expected {sha}); remove it to download the released file, or load it by path")
        return shared
    dest = cache_path(name)
    if dest.is_file():
        digest = sha256_of(dest)
        if digest == sha:
            return dest
        print(f"derain: the cached {name} checkpoint {dest} is damaged (sha256 {digest}, expected {sha}); "
              f"deleting it and downloading it again", file=sys.stderr)
        dest.unlink()
    if not download:
        raise WeightsUnavailableError(f"the authors' {name} checkpoint is not on this machine: "
                                      f"{_manual_hint(name, dest)}")
    _download(name, dest)
    return dest


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _entry(name: str) -> tuple[str, str]:
    try:
        return AUTHORS_CHECKPOINTS[name]
    except KeyError:
        raise ValueError(f"unknown authors' checkpoint {name!r}; one of {', '.join(AUTHORS_CHECKPOINTS)}") from None


def _manual_hint(name: str, dest: Path) -> str:
    _, sha = _entry(name)
    return (f"download {url(name)} on a machine with network access and save it as {dest} (sha256 {sha}), "
            f"or load the file by its path; $DERAIN_WEIGHTS_DIR sets the download folder, $DERAIN_WEIGHTS_URL "
            f"a mirror of the repository")


def _download(name: str, dest: Path) -> None:
    """url(name) -> dest, through a temporary file in dest's folder, checked against the pinned sha256."""
    source, (_, sha) = url(name), _entry(name)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as exc:
        raise WeightsUnavailableError(f"cannot write the download folder {str(dest.parent)!r} ({exc.strerror or exc}); "
                                      f"set $DERAIN_WEIGHTS_DIR to a writable folder") from None
    print(f"derain: downloading the authors' {name} checkpoint from {source} to {dest}", file=sys.stderr)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as f:
            try:
                with urllib.request.urlopen(source, timeout=TIMEOUT_S) as response:
                    for chunk in iter(lambda: response.read(1 << 16), b""):
                        f.write(chunk)
                        h.update(chunk)
            except (urllib.error.URLError, OSError, ValueError) as exc:   # ValueError: a malformed URL
                reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
                raise WeightsUnavailableError(f"could not download the authors' {name} checkpoint from {source} "
                                              f"({reason}); {_manual_hint(name, dest)}") from None
        digest = h.hexdigest()
        if digest != sha:
            raise ValueError(f"the file downloaded from {source} is not the authors' released {name} checkpoint "
                             f"(sha256 {digest}, expected {sha}); it was deleted. {_manual_hint(name, dest)}")
        os.chmod(tmp, _file_mode())
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _file_mode() -> int:
    """0o666 less the process umask: the mode open() would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask
