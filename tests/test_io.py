"""derain.io: image files <-> tensors, written back like their input."""
import numpy as np
import pytest
import torch
from PIL import Image

from derain.io import ImageReadError, list_images, read_image, write_image


def u8(h, w, c, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, c) if c else (h, w), dtype=np.uint8)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "LA"])
def test_png_round_trip_is_exact(tmp_path, mode):
    arr = u8(9, 13, {"RGB": 3, "L": 0, "RGBA": 4, "LA": 2}[mode])
    Image.fromarray(arr).save(tmp_path / "a.png")
    x, info = read_image(tmp_path / "a.png")
    assert x.shape == (3, 9, 13) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert info.grey == (mode in ("L", "LA")) and (info.alpha is not None) == (mode in ("RGBA", "LA"))
    write_image(tmp_path / "b.png", x, info)
    back = Image.open(tmp_path / "b.png")
    assert back.mode == mode
    assert np.array_equal(np.asarray(back), arr)


def test_16bit_grey_round_trip(tmp_path):
    arr = np.random.default_rng(1).integers(0, 65536, size=(7, 11), dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "a.png")
    x, info = read_image(tmp_path / "a.png")
    assert info.bits == 16 and info.grey
    torch.testing.assert_close(x[1].double(), torch.from_numpy(arr.astype(np.float64) / 65535), atol=1e-7, rtol=0)
    write_image(tmp_path / "b.png", x, info)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), arr)


def test_palette_and_cmyk_are_read_as_rgb(tmp_path):
    Image.fromarray(u8(8, 8, 3)).convert("P").save(tmp_path / "p.png")
    x, info = read_image(tmp_path / "p.png")
    assert x.shape == (3, 8, 8) and not info.grey and info.alpha is None
    Image.fromarray(u8(8, 8, 3)).convert("CMYK").save(tmp_path / "c.jpg")
    x, info = read_image(tmp_path / "c.jpg")
    assert x.shape == (3, 8, 8) and info.format == "JPEG"


def test_jpeg_keeps_exif_and_size(tmp_path):
    im = Image.fromarray(u8(15, 21, 3))
    exif = Image.Exif()
    exif[0x010F] = "derain test camera"   # Make
    im.save(tmp_path / "a.jpg", exif=exif.tobytes())
    x, info = read_image(tmp_path / "a.jpg")
    write_image(tmp_path / "b.jpg", x, info)
    back = Image.open(tmp_path / "b.jpg")
    assert back.format == "JPEG" and back.size == (21, 15)
    assert back.getexif()[0x010F] == "derain test camera"
    assert np.abs(np.asarray(back).astype(int) - np.round(x.permute(1, 2, 0).numpy() * 255)).mean() < 3


def test_unreadable_files(tmp_path):
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ImageReadError, match="cannot read image .*text.png"):
        read_image(tmp_path / "text.png")
    Image.fromarray(u8(64, 64, 3)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cut.png"):
        read_image(tmp_path / "cut.png")
    assert issubclass(ImageReadError, ValueError)


def test_list_images(tmp_path):
    for name in ("10.png", "2.png", "1.JPG", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "3.png").write_bytes(b"")
    files = list_images([tmp_path, tmp_path / "2.png"])
    assert [f.name for f in files] == ["1.JPG", "2.png", "10.png"]     # natural order, no duplicates
    with pytest.raises(FileNotFoundError, match="nothing"):
        list_images(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="X: folder .*empty.* contains no images"):
        list_images(tmp_path / "empty", name="X")


# ------------------------------------------------------------------ 16-bit colour (Pillow reads and writes it at 8 bits)

def png16_bytes(a16: np.ndarray) -> bytes:
    """A 16-bit PNG built by hand (no filter, one IDAT): grey, grey + alpha, RGB or RGBA by channel count."""
    import struct
    import zlib

    h, w, c = a16.shape
    body = b"".join(b"\x00" + a16[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(body)) + chunk(b"IEND", b"")


def png16_values(data: bytes) -> tuple[np.ndarray, int]:
    """(H, W, C) uint16 and the colour type of a non-interlaced 16-bit PNG, decoded by hand
    (filters None, Sub, Up, Average, Paeth)."""
    import struct
    import zlib

    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", data[pos + 8:pos + 8 + n])
        elif kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + n]
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = ihdr
    assert depth == 16 and interlace == 0
    c = {0: 1, 4: 2, 2: 3, 6: 4}[ctype]
    bpp, stride = 2 * c, 2 * c * w
    raw = zlib.decompress(idat)
    out = np.zeros((h, stride), np.int64)
    for y in range(h):
        f, line = raw[y * (stride + 1)], np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int64)
        prev = out[y - 1] if y else np.zeros(stride, np.int64)
        cur = out[y]
        for x in range(stride):
            a = cur[x - bpp] if x >= bpp else 0
            b, cc = prev[x], (prev[x - bpp] if x >= bpp else 0)
            pred = {0: 0, 1: a, 2: b, 3: (a + b) // 2}.get(f)
            if f == 4:
                p = a + b - cc
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - cc)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else cc)
            cur[x] = (line[x] + pred) % 256
    return (out[:, 0::2] * 256 + out[:, 1::2]).reshape(h, w, c).astype(np.uint16), ctype


@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_colour_png_is_read_and_written_at_16_bits(tmp_path, channels):
    a16 = np.random.default_rng(2).integers(0, 65536, size=(9, 14, channels), dtype=np.uint16)
    (tmp_path / "deep.png").write_bytes(png16_bytes(a16))
    x, info = read_image(tmp_path / "deep.png")
    assert info.bits == 16 and not info.grey and not info.reduced and (info.alpha is not None) == (channels == 4)
    want = torch.from_numpy(a16[..., :3].astype(np.float64) / 65535).permute(2, 0, 1)
    torch.testing.assert_close(x.double(), want, atol=1e-7, rtol=0)       # all 16 bits, not the high byte
    write_image(tmp_path / "out.png", x, info)
    back, ctype = png16_values((tmp_path / "out.png").read_bytes())
    assert ctype == (6 if channels == 4 else 2)
    assert np.array_equal(back, a16)                                      # a lossless 16-bit round trip
    with Image.open(tmp_path / "out.png") as im:                          # a valid PNG for other readers too
        im.load()
        assert im.size == (14, 9) and np.array_equal(np.asarray(im)[..., :3], (a16[..., :3] >> 8).astype(np.uint8))


def test_16bit_grey_with_alpha_is_not_silently_reduced(tmp_path):
    a16 = np.random.default_rng(3).integers(0, 65536, size=(6, 5, 2), dtype=np.uint16)
    (tmp_path / "la.png").write_bytes(png16_bytes(a16))
    x, info = read_image(tmp_path / "la.png")
    if info.bits == 16:         # read at full depth: written back at full depth
        write_image(tmp_path / "out.png", x, info)
        assert np.array_equal(png16_values((tmp_path / "out.png").read_bytes())[0], a16)
    else:                       # this Pillow cannot: it is flagged, so the command line warns
        assert info.reduced
