"""Image files <-> float tensors, keeping what is needed to write a result back in the input's format.

`read_image(path)` -> (image, info): image is float32 (3, H, W) in [0, 1]; grey images are replicated
to 3 channels, an alpha channel is set aside in `info` (re-attached by `write_image`), 16-bit images
(grey, grey + alpha, RGB, RGBA) are read at 16 bits and scaled by 1/65535. `write_image(path, image,
info)` writes with the input's mode (grey stays grey, RGBA gets its alpha back, 16-bit stays 16-bit in
PNG, and for grey in TIFF) in the format of `path`'s extension; `output_bits` says which depth a file
will get.
Unreadable files raise `ImageReadError` (a ValueError), missing files FileNotFoundError.
"""
from __future__ import annotations

import os
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# Formats Pillow writes, by extension (the output keeps the input's extension).
_FORMAT_BY_EXT = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF",
                  ".tiff": "TIFF", ".webp": "WEBP"}


class ImageReadError(ValueError):
    """A file exists but is not a readable image (corrupt, truncated, not an image)."""


@dataclass
class ImageInfo:
    """What `write_image` needs to write a result like its input."""

    path: str
    format: str | None = None     # "PNG", "JPEG", ... as Pillow reports it
    grey: bool = False            # input had one colour channel: written back as grey
    bits: int = 8                 # 8, or 16 for 16-bit images (grey, grey + alpha, RGB, RGBA)
    reduced: bool = False         # a 16-bit file that could only be read at 8 bits per channel
    alpha: torch.Tensor | None = field(default=None, repr=False)   # (H, W) float in [0, 1]
    icc_profile: bytes | None = field(default=None, repr=False)
    exif: bytes | None = field(default=None, repr=False)


def is_image_file(path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(inputs, name: str = "INPUT") -> list[Path]:
    """Files and folders -> the image files (folders: their images, sorted, not recursive).

    Raises FileNotFoundError naming a missing path, ValueError for a folder without images.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files: list[Path] = []
    seen: set[Path] = set()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted((f for f in p.iterdir() if f.is_file() and is_image_file(f)), key=_natural_key)
            if not found:
                raise ValueError(f"{name}: folder {str(p)!r} contains no images ({', '.join(IMAGE_EXTENSIONS)})")
            files.extend(f for f in found if f.resolve() not in seen)
            seen.update(f.resolve() for f in found)
        elif p.is_file():
            if p.resolve() not in seen:
                files.append(p)
                seen.add(p.resolve())
        else:
            raise FileNotFoundError(f"{name}: no such file or folder: {str(p)!r}")
    return files


def _natural_key(p: Path):
    """'2.png' before '10.png'."""
    stem = p.name
    parts, num = [], ""
    for ch in stem:
        if ch.isdigit():
            num += ch
        else:
            if num:
                parts.append((0, int(num), ""))
                num = ""
            parts.append((1, 0, ch))
    if num:
        parts.append((0, int(num), ""))
    return parts


def read_image(path) -> tuple[torch.Tensor, ImageInfo]:
    """Read an image file -> (float32 tensor (3, H, W) in [0, 1], ImageInfo)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such image file: {str(path)!r}")
    if path.is_dir():
        raise IsADirectoryError(f"expected an image file, got a folder: {str(path)!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            deep = read_16bit_channels(lambda: Image.open(path))
            with Image.open(path) as im:
                raw = _rawmode(im)
                im.load()
                fmt = im.format
                info = ImageInfo(path=str(path), format=fmt, icc_profile=im.info.get("icc_profile"),
                                 exif=im.info.get("exif"))
                if deep is not None:
                    array = _deep_to_array(deep, info)
                else:
                    info.reduced = raw in _SWAP16 or (raw is not None and ";16" in raw and im.mode not in _GREY16)
                    array = _to_array(im, info)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ImageReadError(f"cannot read image {str(path)!r}: {exc}") from exc
    image = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous()
    return image, info


def load_image(path) -> torch.Tensor:
    """`read_image` without the info: float32 (3, H, W) in [0, 1]."""
    return read_image(path)[0]


# 16-bit rawmodes that Pillow reduces to 8 bits per channel -> the same data with the other byte order:
# decoding a file once as it is and once with the swapped rawmode gives the high and the low bytes.
_SWAP16 = {"RGB;16B": "RGB;16L", "RGB;16L": "RGB;16B", "RGBA;16B": "RGBA;16L", "RGBA;16L": "RGBA;16B",
           "LA;16B": "LA;16L", "LA;16L": "LA;16B"}
_GREY16 = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _rawmode(im: Image.Image) -> str | None:
    """The rawmode of an opened (not yet loaded) image's tiles when they share one, else None."""
    modes = set()
    for tile in getattr(im, "tile", None) or []:
        args = tile[3]
        raw = args if isinstance(args, str) else (args[0] if isinstance(args, tuple) and args else None)
        modes.add(raw if isinstance(raw, str) else None)
    return modes.pop() if len(modes) == 1 else None


def read_16bit_channels(open_image) -> np.ndarray | None:
    """(H, W, C) uint16 of a 16-bit grey + alpha, RGB or RGBA image (which Pillow reads at 8 bits),
    else None. `open_image()` returns a new, unloaded Pillow image of the file each time it is called."""
    try:
        with open_image() as im:
            raw = _rawmode(im)
            if raw not in _SWAP16:
                return None
            im.load()
            high = np.asarray(im).astype(np.uint16)
        with open_image() as im:
            swapped = []
            for tile in im.tile:
                args = tile[3]
                args = _SWAP16[raw] if isinstance(args, str) else (_SWAP16[raw], *args[1:])
                swapped.append(tile._replace(args=args) if hasattr(tile, "_replace") else (*tile[:3], args))
            im.tile = swapped
            im.load()
            low = np.asarray(im).astype(np.uint16)
    except Exception:  # noqa: BLE001 - a decoder that cannot do this: the caller reads 8 bits
        return None
    if high.shape != low.shape:
        return None
    return (high << 8) | low


def _deep_to_array(a16: np.ndarray, info: ImageInfo) -> np.ndarray:
    """(H, W, C) uint16 from read_16bit_channels -> float32 (H, W, 3); fills info.grey / bits / alpha."""
    a = a16.astype(np.float32) / 65535.0
    info.bits = 16
    if a.shape[2] in (2, 4):
        info.alpha = torch.from_numpy(np.ascontiguousarray(a[:, :, -1]))
        a = a[:, :, :-1]
    if a.shape[2] == 1:
        info.grey = True
        a = np.repeat(a, 3, axis=2)
    return a


def _to_array(im: Image.Image, info: ImageInfo) -> np.ndarray:
    """Pillow image -> float32 (H, W, 3) in [0, 1]; fills info.grey / bits / alpha."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im).astype(np.float32)
        info.grey, info.bits = True, 16
        a = np.clip(a, 0, 65535) / 65535.0
        return np.repeat(a[:, :, None], 3, axis=2)
    if mode == "F":
        a = np.asarray(im).astype(np.float32)
        info.grey = True
        return np.repeat(np.clip(a, 0.0, 1.0)[:, :, None], 3, axis=2)
    if mode == "P" or mode == "PA":
        im = im.convert("RGBA" if ("transparency" in im.info or mode == "PA") else "RGB")
        mode = im.mode
    if mode == "1":
        im, mode = im.convert("L"), "L"
    if mode in ("L", "LA"):
        a = np.asarray(im).astype(np.float32) / 255.0
        info.grey = True
        if mode == "LA":
            info.alpha = torch.from_numpy(np.ascontiguousarray(a[:, :, 1]))
            a = a[:, :, 0]
        return np.repeat(a[:, :, None], 3, axis=2)
    if mode == "RGBA":
        a = np.asarray(im).astype(np.float32) / 255.0
        info.alpha = torch.from_numpy(np.ascontiguousarray(a[:, :, 3]))
        return a[:, :, :3]
    if mode != "RGB":  # CMYK, YCbCr, LAB, RGBX, ...
        im = im.convert("RGB")
    return np.asarray(im).astype(np.float32) / 255.0


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """Float image in [0, 1] -> uint8 (values clamped, rounded half to even like torch.round)."""
    return torch.round(image.detach().float().clamp(0, 1) * 255.0).to(torch.uint8)


def output_bits(path, info: ImageInfo | None) -> int:
    """Bits per channel `write_image(path, ..., info)` writes: 16 for a 16-bit input written as PNG (any
    mode) or as TIFF (grey without alpha), else 8."""
    if info is None or info.bits != 16:
        return 8
    fmt = _FORMAT_BY_EXT.get(Path(path).suffix.lower())
    if fmt == "PNG":
        return 16
    return 16 if fmt == "TIFF" and info.grey and info.alpha is None else 8


def write_image(path, image: torch.Tensor, info: ImageInfo | None = None, quality: int = 95) -> Path:
    """Write a float (3, H, W) image in [0, 1] (clamped) to `path`, in the format of its extension.

    With `info` from `read_image`: grey inputs are written grey (mean of the 3 channels), an alpha
    channel is re-attached when its size matches, 16-bit inputs stay 16-bit (`output_bits`), the ICC
    profile and EXIF data are kept. JPEG quality 95 with 4:4:4 chroma.
    """
    path = Path(path)
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be a (3, H, W) tensor, got {shape}")
    ext = path.suffix.lower()
    fmt = _FORMAT_BY_EXT.get(ext)
    if fmt is None:
        raise ValueError(f"cannot write {str(path)!r}: unknown image extension {ext!r} "
                         f"(use one of {', '.join(_FORMAT_BY_EXT)})")
    x = image.detach().to("cpu", torch.float64).clamp(0, 1)
    h, w = x.shape[1:]
    grey = info is not None and info.grey
    alpha = info.alpha if info is not None else None
    if alpha is not None and tuple(alpha.shape) != (h, w):
        alpha = None
    if fmt == "JPEG":
        alpha = None  # JPEG has no alpha channel
    if output_bits(path, info) == 16 and fmt == "PNG" and (alpha is not None or not grey):
        planes = [x.mean(0, keepdim=True)] if grey else [x]
        if alpha is not None:
            planes.append(alpha.double().clamp(0, 1).unsqueeze(0))
        a16 = np.round(torch.cat(planes).permute(1, 2, 0).numpy() * 65535.0).astype(np.uint16)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_png16(path, a16, info.icc_profile, info.exif)
        return path
    if grey:
        g = x.mean(0)
        if info.bits == 16 and fmt in ("PNG", "TIFF") and alpha is None:
            a16 = np.round(g.numpy() * 65535.0).astype(np.uint16)
            im = Image.fromarray(a16)  # uint16 -> mode "I;16"
        else:
            a8 = np.round(g.numpy() * 255.0).astype(np.uint8)
            if alpha is not None:
                al = np.round(alpha.double().clamp(0, 1).numpy() * 255.0).astype(np.uint8)
                im = Image.fromarray(np.stack([a8, al], axis=2))  # -> "LA"
            else:
                im = Image.fromarray(a8)
    else:
        rgb = np.round(x.permute(1, 2, 0).numpy() * 255.0).astype(np.uint8)
        if alpha is not None:
            al = np.round(alpha.double().clamp(0, 1).numpy() * 255.0).astype(np.uint8)
            im = Image.fromarray(np.concatenate([rgb, al[:, :, None]], axis=2))  # -> "RGBA"
        else:
            im = Image.fromarray(rgb)
    kwargs = {}
    if info is not None and info.icc_profile and fmt in ("PNG", "JPEG", "TIFF", "WEBP"):
        kwargs["icc_profile"] = info.icc_profile
    if info is not None and info.exif and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        kwargs["exif"] = info.exif
    if fmt == "JPEG":
        kwargs.update(quality=quality, subsampling=0)
    elif fmt == "WEBP":
        kwargs.update(quality=quality)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format=fmt, **kwargs)
    return path


def _write_png16(path: Path, a16: np.ndarray, icc_profile: bytes | None = None, exif: bytes | None = None) -> None:
    """(H, W, C) uint16 -> a 16-bit PNG (C = 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA), which Pillow cannot
    write. Rows use the "Up" filter; the ICC profile (iCCP) and EXIF data (eXIf) are kept."""
    h, w, c = a16.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    rows = np.ascontiguousarray(a16.astype(">u2")).view(np.uint8).reshape(h, w * c * 2)
    up = rows.copy()
    up[1:] -= rows[:-1]                       # uint8 arithmetic wraps modulo 256, as the filter defines
    data = np.concatenate([np.full((h, 1), 2, np.uint8), up], axis=1).tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    parts = [b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))]
    if icc_profile:
        parts.append(chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc_profile)))
    if exif:
        parts.append(chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
    parts += [chunk(b"IDAT", zlib.compress(data, 6)), chunk(b"IEND", b"")]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(b"".join(parts))
    os.replace(tmp, path)
