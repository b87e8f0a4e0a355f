"""Data of the two-stage distillation: image folders, the soft-label cache, pairing and sharding.

Every random choice of a training sample is a pure function of (seed, global sample slot), so the
data order of a run does not depend on DataLoader workers, and a resumed run sees exactly the
samples the uninterrupted run would have seen.  Slot s of iteration t (t ≥ 1) on rank r of W
ranks with per-rank batch B is s = (t − 1)·B·W + r·B + j, j < B.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# flip codes shared by a rainy crop and its soft label (the authors' cv2.flip choices)
FLIP_NONE, FLIP_VERTICAL, FLIP_HORIZONTAL, FLIP_BOTH = 0, 1, 2, 3


def list_images(folder, arg_name: str = "folder") -> list[Path]:
    """Image files (by suffix) directly in `folder`, sorted by name.

    Raises FileNotFoundError / NotADirectoryError naming `arg_name` if the folder is missing,
    ValueError if it holds no image file.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{arg_name}: folder not found: {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"{arg_name}: not a folder: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{arg_name}: no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


class UnreadableImage(ValueError):
    """Bytes that are not a decodable image; the message is the reason, without a file name."""


def decode_image(data: bytes) -> np.ndarray:
    """Decode PNG/JPEG/... bytes into an (H, W, 3) RGB array: uint8 for 8-bit images,
    float32 in [0, 1] for 16-bit/float ones. Grey is repeated to RGB; alpha is dropped.
    Raises UnreadableImage (a ValueError) saying why when the bytes are not a readable image."""
    import io

    from PIL import UnidentifiedImageError

    from derain.io import read_16bit_channels

    if not data:
        raise UnreadableImage("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            deep = read_16bit_channels(lambda: Image.open(io.BytesIO(data)))
            if deep is not None:     # 16-bit RGB(A) / grey + alpha, which Pillow alone reads at 8 bits
                arr = deep[:, :, :3 if deep.shape[2] >= 3 else 1].astype(np.float32) / np.float32(65535.0)
                return np.ascontiguousarray(np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr)
            return _decode(io.BytesIO(data))
    except UnidentifiedImageError:
        raise UnreadableImage("not an image in a format Pillow can read") from None
    except Image.DecompressionBombWarning as exc:
        raise UnreadableImage(f"too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UnreadableImage(f"damaged or truncated image ({exc})") from None


def _decode(fp) -> np.ndarray:
    with Image.open(fp) as img:
        img.load()
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(img).astype(np.float32) / 65535.0
            arr = np.clip(arr, 0.0, 1.0)
            return np.repeat(arr[:, :, None], 3, axis=2)
        if img.mode == "F":
            arr = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
            return np.repeat(arr[:, :, None], 3, axis=2)
        if img.mode != "RGB":
            img = img.convert("RGB")
        return np.asarray(img, dtype=np.uint8).copy()


def to_float(arr: np.ndarray) -> np.ndarray:
    """uint8 -> float32/255; float arrays pass through as float32."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255.0)
    return arr.astype(np.float32, copy=False)


@dataclass
class ImageEntry:
    path: Path
    digest: str          # sha256 of the file bytes
    height: int
    width: int
    array: np.ndarray | None = None   # decoded (H, W, 3) when preloaded


class ImageFolder:
    """The readable images of a folder (or of several, in the order given) that are at least
    `min_size` on both sides.

    Unreadable (corrupt, not an image) and too small files are skipped, each reported once through
    `on_skip(message)` (default: a UserWarning) with the file's path and the reason; a folder with no
    usable image raises ValueError naming `arg_name`.
    """

    def __init__(self, folder, min_size: int, arg_name: str, preload: bool = True, on_skip=None):
        folders = [Path(f) for f in ([folder] if isinstance(folder, (str, Path)) else folder)]
        if not folders:
            raise ValueError(f"{arg_name}: no folder given")
        self.folder = folders[0] if len(folders) == 1 else Path(", ".join(str(f) for f in folders))
        self.arg_name = arg_name
        self.on_skip = on_skip
        self.entries: list[ImageEntry] = []
        self.skipped: list[tuple[Path, str]] = []
        paths = [path for f in folders for path in list_images(f, arg_name)]
        for path in paths:
            try:
                data = path.read_bytes()
                arr = decode_image(data)
            except OSError as exc:
                self._skip(path, f"cannot read the file ({exc.strerror or exc})")
                continue
            except Exception as exc:  # noqa: BLE001 - any decoder failure means "skip this file"
                why = str(exc) if isinstance(exc, UnreadableImage) else f"{type(exc).__name__}: {exc}"
                self._skip(path, f"unreadable image: {why}")
                continue
            h, w = arr.shape[:2]
            if h < min_size or w < min_size:
                self._skip(path, f"too small ({w}x{h} < {min_size}x{min_size})")
                continue
            self.entries.append(ImageEntry(path, hashlib.sha256(data).hexdigest(), h, w,
                                           arr if preload else None))
        if not self.entries:
            raise ValueError(f"{arg_name}: no usable image in {self.folder} "
                             f"({len(self.skipped)} skipped: unreadable or smaller than {min_size} px)")

    def _skip(self, path: Path, why: str) -> None:
        self.skipped.append((path, why))
        message = f"{self.arg_name}: skipping {path}: {why}"
        if self.on_skip is not None:
            self.on_skip(message)
        else:
            warnings.warn(message, stacklevel=3)

    def __len__(self) -> int:
        return len(self.entries)

    def image(self, i: int) -> np.ndarray:
        e = self.entries[i]
        return e.array if e.array is not None else decode_image(e.path.read_bytes())


def _atomic_write(path: Path, write) -> None:
    """write(tmp_path) then os.replace onto path (no torn files if the process dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix + ".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())       # mkstemp's 0600 -> what a plain open() would give
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class SoftLabelCache:
    """Soft labels Y_s = soft_label(X) at full resolution, cached on disk.

    Key: sha256 of the image file bytes + kernel size + padding + min_composite flag.  A label of
    an 8-bit image is itself made of 8-bit values (a median/minimum picks input values), so it is
    stored losslessly as an 8-bit PNG; other labels go to a compressed float32 .npz.
    """

    def __init__(self, cache_dir, kernel_size: int = 31, padding: str = "reflect",
                 min_composite: bool = False, device: str | torch.device = "cpu"):
        self.dir = Path(cache_dir)
        self.kernel_size = int(kernel_size)
        self.padding = padding
        self.min_composite = bool(min_composite)
        self.device = torch.device(device)

    def key(self, digest: str) -> str:
        mode = "min" if self.min_composite else "median"
        return f"{digest}-k{self.kernel_size}-{self.padding}-{mode}"

    def _paths(self, digest: str) -> tuple[Path, Path]:
        base = self.dir / self.key(digest)
        return base.with_suffix(".png"), base.with_suffix(".npz")

    def cached(self, digest: str) -> bool:
        return any(p.exists() for p in self._paths(digest))

    def load(self, digest: str) -> np.ndarray | None:
        """The cached label ((H, W, 3) uint8 or float32), or None if absent or unreadable."""
        png, npz = self._paths(digest)
        try:
            if png.exists():
                with Image.open(png) as img:
                    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
            if npz.exists():
                with np.load(npz) as f:
                    return f["label"].astype(np.float32)
        except Exception:  # noqa: BLE001 - a torn/corrupt cache file is recomputed
            return None
        return None

    def compute(self, image: np.ndarray) -> np.ndarray:
        """soft_label of one (H, W, 3) image, same dtype convention as the input (8-bit images are
        filtered as uint8: a median/minimum selects input values, so this equals the float result)."""
        from derain_kernels import soft_label

        x = image if image.dtype == np.uint8 else to_float(image)
        x = torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1).unsqueeze(0).to(self.device)
        y = soft_label(x, kernel_size=self.kernel_size, padding=self.padding, min_composite=self.min_composite)
        y = y[0].permute(1, 2, 0).cpu().numpy()
        return y if y.dtype == np.uint8 else y.astype(np.float32)

    def store(self, digest: str, label: np.ndarray) -> None:
        png, npz = self._paths(digest)
        if label.dtype == np.uint8:
            _atomic_write(png, lambda tmp: Image.fromarray(label).save(tmp, format="PNG", compress_level=1))
        else:
            def write_npz(tmp):
                with open(tmp, "wb") as f:
                    np.savez_compressed(f, label=label.astype(np.float32))
            _atomic_write(npz, write_npz)

    def get(self, digest: str, image: np.ndarray) -> np.ndarray:
        label = self.load(digest)
        if label is None or label.shape[:2] != image.shape[:2]:
            label = self.compute(image)
            self.store(digest, label)
        return label

    def warm(self, folder: ImageFolder, progress: bool = True) -> int:
        """Compute and store the missing labels of `folder`; returns how many were computed."""
        from tqdm import tqdm

        todo = [i for i, e in enumerate(folder.entries) if not self.cached(e.digest)]
        for i in tqdm(todo, desc=f"soft labels (k={self.kernel_size})", disable=not progress or not todo,
                      unit="img", dynamic_ncols=True):
            e = folder.entries[i]
            self.store(e.digest, self.compute(folder.image(i)))
        return len(todo)


def file_mode() -> int:
    """0o666 less the process umask: the permissions a new file gets from open()."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _crop(arr: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    return arr[top:top + size, left:left + size]


def _flip(arr: np.ndarray, code: int) -> np.ndarray:
    if code == FLIP_VERTICAL:
        return arr[::-1]
    if code == FLIP_HORIZONTAL:
        return arr[:, ::-1]
    if code == FLIP_BOTH:
        return arr[::-1, ::-1]
    return arr


def _chw(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(to_float(arr).transpose(2, 0, 1)))


class DistillationSamples(torch.utils.data.Dataset):
    """Sample slot s -> {"x": X crop, "y_s": its soft-label crop, "c": an unpaired clean crop}.

    The rainy image of slot s is entry perm_e[s mod N] with e = s // N and perm_e a permutation
    drawn from (seed, e) (epochs over the rainy set; likewise for the clean set). X and Y_s share
    a crop and a flip (none / vertical / horizontal / both); C gets its own crop, no flip (as the
    authors). All draws come from numpy's PCG64 seeded by (seed, s).
    """

    def __init__(self, rainy: ImageFolder, labels: SoftLabelCache | list, clean: ImageFolder,
                 crop: int, seed: int):
        self.rainy, self.clean, self.crop, self.seed = rainy, clean, int(crop), int(seed)
        self.labels = labels
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def __len__(self) -> int:  # slots are unbounded; this is one epoch of the rainy set
        return len(self.rainy)

    def _perm(self, which: int, epoch: int, n: int) -> np.ndarray:
        key = (which, epoch)
        perm = self._perms.get(key)
        if perm is None:
            if len(self._perms) > 8:
                self._perms.clear()
            perm = np.random.default_rng([self.seed, which, epoch]).permutation(n)
            self._perms[key] = perm
        return perm

    def indices(self, slot: int) -> tuple[int, int]:
        """(rainy index, clean index) of a slot."""
        nr, nc = len(self.rainy), len(self.clean)
        r = int(self._perm(0, slot // nr, nr)[slot % nr])
        c = int(self._perm(1, slot // nc, nc)[slot % nc])
        return r, c

    def label(self, i: int) -> np.ndarray:
        if isinstance(self.labels, SoftLabelCache):
            e = self.rainy.entries[i]
            return self.labels.get(e.digest, self.rainy.image(i))
        return self.labels[i]

    def __getitem__(self, slot: int) -> dict:
        if slot < 0:
            raise IndexError(slot)
        ri, ci = self.indices(slot)
        rng = np.random.default_rng([self.seed, 2, slot])
        size = self.crop
        er, ec = self.rainy.entries[ri], self.clean.entries[ci]
        top = int(rng.integers(0, er.height - size + 1))
        left = int(rng.integers(0, er.width - size + 1))
        flip = int(rng.integers(0, 4))
        ctop = int(rng.integers(0, ec.height - size + 1))
        cleft = int(rng.integers(0, ec.width - size + 1))
        x = _flip(_crop(self.rainy.image(ri), top, left, size), flip)
        y_s = _flip(_crop(self.label(ri), top, left, size), flip)
        c = _crop(self.clean.image(ci), ctop, cleft, size)
        return {"x": _chw(x), "y_s": _chw(y_s), "c": _chw(c), "slot": slot}


class StepBatchSampler(torch.utils.data.Sampler):
    """Batches of slots for iterations first..last (inclusive) of one rank."""

    def __init__(self, first: int, last: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.first, self.last, self.batch, self.rank, self.world = first, last, batch_size, rank, world_size

    def slots(self, t: int) -> list[int]:
        base = (t - 1) * self.batch * self.world + self.rank * self.batch
        return list(range(base, base + self.batch))

    def __iter__(self):
        for t in range(self.first, self.last + 1):
            yield self.slots(t)

    def __len__(self) -> int:
        return max(0, self.last - self.first + 1)


def load_pairs(folder, arg_name: str = "--val-pairs") -> list[tuple[Path, Path]]:
    """(rainy, clean) file pairs of a folder with rain/ and norain/ subfolders, matched by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise (NotADirectoryError if folder.exists() else FileNotFoundError)(
            f"{arg_name}: folder not found: {folder}")
    rain = {p.name: p for p in list_images(folder / "rain", f"{arg_name} rain/")}
    clean = {p.name: p for p in list_images(folder / "norain", f"{arg_name} norain/")}
    names = sorted(set(rain) & set(clean), key=lambda n: (len(n), n))
    if not names:
        raise ValueError(f"{arg_name}: no file name is in both rain/ and norain/ of {folder}")
    return [(rain[n], clean[n]) for n in names]
