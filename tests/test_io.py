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
