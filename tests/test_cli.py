"""`derain infer / eval / demo` through derain.cli.main: outputs, formats, and error messages."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from derain.cli import main
from derain.commands.demo import rain_streaks, synthetic_scene
from derain.inference import Derainer
from derain.io import ImageReadError, read_image, write_image
from derain.metrics import psnr_y, ssim_y
from derain.models import RainOerMeNet
from derain.models import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def weights(tmp_path):
    """A small-weights model saved in our format (fast, deterministic)."""
    model = RainOerMeNet()
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight, 0, 0.08)
            torch.nn.init.normal_(m.bias, 0, 0.02)
    return model.save(tmp_path / "weights" / "model.safetensors")


@pytest.fixture
def no_shared(monkeypatch, tmp_path):
    """A fresh machine without network: no shared folder, no packaged weights, an empty download cache."""
    monkeypatch.setenv("DERAIN_SHARED", str(tmp_path / "no-such-shared"))
    monkeypatch.setenv("DERAIN_WEIGHTS_DIR", str(tmp_path / "weights-cache"))
    monkeypatch.setenv("DERAIN_WEIGHTS_URL", (tmp_path / "offline").as_uri())
    monkeypatch.setattr(ckpt, "PACKAGED_WEIGHTS", tmp_path / "no-packaged" / "rain_oer_me.safetensors")


def rgb(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, h, w, generator=g)


def write_inputs(folder: Path):
    """PNG RGB, JPEG, grey PNG, RGBA PNG and 16-bit grey PNG, odd sizes."""
    folder.mkdir(parents=True, exist_ok=True)
    u8 = lambda t: np.round(t.permute(1, 2, 0).numpy() * 255).astype(np.uint8)  # noqa: E731
    Image.fromarray(u8(rgb(29, 37, 1))).save(folder / "photo.png")
    Image.fromarray(u8(rgb(31, 23, 2))).save(folder / "photo2.jpg", quality=95)
    Image.fromarray(u8(rgb(17, 41, 3))[..., 0]).save(folder / "grey.png")
    rgba = np.concatenate([u8(rgb(21, 19, 4)), (np.arange(21 * 19) % 256).astype(np.uint8).reshape(21, 19, 1)], 2)
    Image.fromarray(rgba).save(folder / "alpha.png")
    Image.fromarray((np.arange(13 * 15, dtype=np.uint16).reshape(13, 15) * 300)).save(folder / "deep.png")
    return folder


# --------------------------------------------------------------------- infer

def test_infer_keeps_format_size_and_mode(tmp_path, weights, capsys):
    inputs = write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    assert main(["infer", str(inputs), "--weights", str(weights), "--out", str(out)]) == 0
    assert f"derained 5 images into {out}" in capsys.readouterr().out
    model = RainOerMeNet.from_checkpoint(weights)
    for src in sorted(inputs.iterdir()):
        dst = out / src.name
        a, b = Image.open(src), Image.open(dst)
        assert b.format == a.format and b.size == a.size and b.mode == a.mode, src.name
        x, info = read_image(src)
        want = Derainer(model, tile=0)(x).clamp(0, 1)
        y, _ = read_image(dst)
        tol = 0.06 if a.format == "JPEG" else (0.5 / 255 if not info.grey else 1 / 255)
        if info.grey:    # written as the mean of the 3 derained channels
            want = want.mean(0, keepdim=True).expand(3, -1, -1)
        assert (y - want).abs().max() <= tol + 1e-6, src.name
    alpha_in = np.asarray(Image.open(inputs / "alpha.png"))[..., 3]
    assert np.array_equal(np.asarray(Image.open(out / "alpha.png"))[..., 3], alpha_in)
    assert np.asarray(Image.open(out / "deep.png")).dtype == np.uint16


def test_infer_compare_and_single_file(tmp_path, weights):
    inputs = write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    assert main(["infer", str(inputs / "photo.png"), "--weights", str(weights), "--out", str(out),
                 "--compare", "--tile", "16"]) == 0
    cmp_img = Image.open(out / "photo_compare.png")
    assert cmp_img.size == (2 * 37 + 8, 29)
    left = np.asarray(cmp_img)[:, :37]
    assert np.array_equal(left, np.asarray(Image.open(inputs / "photo.png")))
    right = np.asarray(cmp_img)[:, 37 + 8:]
    assert np.array_equal(right, np.asarray(Image.open(out / "photo.png")))


def test_infer_tiled_cli_equals_untiled(tmp_path, weights):
    inputs = write_inputs(tmp_path / "in")
    assert main(["infer", str(inputs / "photo.png"), "-w", str(weights), "--out", str(tmp_path / "a"),
                 "--tile", "0"]) == 0
    assert main(["infer", str(inputs / "photo.png"), "-w", str(weights), "--out", str(tmp_path / "b"),
                 "--tile", "16"]) == 0
    a = np.asarray(Image.open(tmp_path / "a" / "photo.png")).astype(int)
    b = np.asarray(Image.open(tmp_path / "b" / "photo.png")).astype(int)
    assert np.abs(a - b).max() <= 1   # equal up to rounding of values within 1e-5 of a half step


def test_infer_missing_input(tmp_path, weights, capsys):
    rc = main(["infer", str(tmp_path / "missing-folder"), "--weights", str(weights), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "no such file or folder" in err and "missing-folder" in err
    (tmp_path / "empty").mkdir()
    rc = main(["infer", str(tmp_path / "empty"), "--weights", str(weights), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "contains no images" in err and "empty" in err


def test_infer_unreadable_image_is_reported_and_others_done(tmp_path, weights, capsys):
    inputs = write_inputs(tmp_path / "in")
    (inputs / "broken.png").write_bytes(b"definitely not a png")
    out = tmp_path / "out"
    rc = main(["infer", str(inputs), "--weights", str(weights), "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 1
    assert "cannot read image" in captured.err and "broken.png" in captured.err
    assert "1 of 6 input(s) could not be read" in captured.err
    assert (out / "photo.png").is_file() and not (out / "broken.png").exists()


def test_infer_refuses_to_overwrite_inputs(tmp_path, weights, capsys):
    inputs = write_inputs(tmp_path / "in")
    rc = main(["infer", str(inputs), "--weights", str(weights), "--out", str(inputs)])
    assert rc == 2 and "would overwrite the input" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing", "corrupt", "foreign", "name"])
def test_wrong_weights(tmp_path, capsys, case, no_shared):
    write_inputs(tmp_path / "in")
    arg = {"missing": str(tmp_path / "nope.safetensors"), "corrupt": str(tmp_path / "corrupt.pth"),
           "foreign": str(tmp_path / "foreign.pth"), "name": "rain1400"}[case]
    (tmp_path / "corrupt.pth").write_bytes(b"garbage" * 20)
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "foreign.pth")
    rc = main(["infer", str(tmp_path / "in"), "--weights", arg, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.strip().splitlines()[-1].startswith("derain infer: error:")
    expected = {"missing": "no such file or folder: '" + arg, "corrupt": "cannot read weights",
                "foreign": "weights of another network", "name": "could not download the authors' rain1400"}[case]
    assert expected in err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2   # the error (+ "downloading ...")
    assert not (tmp_path / "o").exists()


def test_default_and_ours_weights_missing(tmp_path, capsys, no_shared):
    write_inputs(tmp_path / "in")
    rc = main(["infer", str(tmp_path / "in"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "--weights ours (the default): the packaged weights ('ours') are missing" in err
    assert "rain1400" in err                         # says what else to use
    rc = main(["infer", str(tmp_path / "in"), "--weights", "ours", "--out", str(tmp_path / "o")])
    assert rc == 2 and "packaged weights ('ours') are missing" in capsys.readouterr().err


def test_one_default_for_every_command_and_its_help_says_it(tmp_path, weights, monkeypatch, capsys):
    """infer, eval and demo use the same default weights ("ours"), the shared folder or not, as --help says."""
    from derain.cli import build_parser
    from derain.models.checkpoint import DEFAULT_WEIGHTS

    assert DEFAULT_WEIGHTS == "ours"
    monkeypatch.setattr(ckpt, "PACKAGED_WEIGHTS", weights)
    monkeypatch.setenv("DERAIN_SHARED", str(tmp_path / "shared"))
    (tmp_path / "shared" / "weights" / "rain-over-me").mkdir(parents=True)
    torch.save(RainOerMeNet().state_dict(), tmp_path / "shared" / "weights" / "rain-over-me" / "rain1400.pth")
    inputs = write_inputs(tmp_path / "in")
    assert main(["infer", str(inputs / "photo.png"), "--out", str(tmp_path / "o")]) == 0
    assert "(weights: ours)" in capsys.readouterr().out
    assert main(["demo", "--out", str(tmp_path / "demo"), "--images", "1", "--synthetic"]) == 0
    assert "with weights ours" in capsys.readouterr().out
    pairs = make_pairs(tmp_path / "pairs", n=1)
    assert main(["eval", "--pairs", str(pairs)]) == 0
    assert "weights: ours" in capsys.readouterr().out
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    for name in ("infer", "eval", "demo"):
        help_text = " ".join(sub[name].format_help().split())
        assert "ours (the packaged weights, the default)" in help_text, name


def test_authors_weights_by_name_are_downloaded_on_first_use(tmp_path, monkeypatch, capsys):
    """A fresh machine (no shared folder): --weights did fetches the file from the repository URL (here a
    local file:// mirror), checks it and caches it; the next run uses the cache."""
    from derain.models import hub

    mirror = tmp_path / "mirror"
    model = RainOerMeNet(detail="did")
    rel = hub.AUTHORS_CHECKPOINTS["did"][0]
    (mirror / rel).parent.mkdir(parents=True)
    torch.save(model.state_dict(), mirror / rel)
    monkeypatch.setitem(hub.AUTHORS_CHECKPOINTS, "did", (rel, hub.sha256_of(mirror / rel)))
    monkeypatch.setenv("DERAIN_SHARED", str(tmp_path / "no-shared"))
    monkeypatch.setenv("DERAIN_WEIGHTS_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DERAIN_WEIGHTS_URL", mirror.as_uri())
    inputs = write_inputs(tmp_path / "in")
    assert main(["infer", str(inputs / "photo.png"), "-w", "did", "--out", str(tmp_path / "o")]) == 0
    captured = capsys.readouterr()
    assert "did (authors')" in captured.out and f"from {mirror.as_uri()}/{rel}" in captured.err
    assert hub.cache_path("did").is_file()
    (mirror / rel).unlink()
    assert main(["infer", str(inputs / "photo.png"), "-w", "did", "--out", str(tmp_path / "o2")]) == 0
    assert "downloading" not in capsys.readouterr().err


def test_packaged_weights_are_the_default(tmp_path, weights, monkeypatch, capsys):
    monkeypatch.setattr(ckpt, "PACKAGED_WEIGHTS", weights)
    inputs = write_inputs(tmp_path / "in")
    assert main(["infer", str(inputs / "grey.png"), "--out", str(tmp_path / "o")]) == 0
    assert "(weights: ours)" in capsys.readouterr().out


def test_authors_weights_by_name(tmp_path, shared_dir, monkeypatch, capsys):
    monkeypatch.setenv("DERAIN_SHARED", str(shared_dir))
    if not (shared_dir / "weights" / "rain-over-me" / "did.pth").is_file():
        pytest.skip("authors' did.pth not in the shared folder")
    inputs = write_inputs(tmp_path / "in")
    assert main(["infer", str(inputs / "photo.png"), "--weights", "did", "--out", str(tmp_path / "o")]) == 0
    assert "did (authors')" in capsys.readouterr().out


# --------------------------------------------------------------------- io errors

def test_read_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.png"):
        read_image(tmp_path / "nothing.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(ImageReadError, match="bad.jpg"):
        read_image(tmp_path / "bad.jpg")
    with pytest.raises(ValueError, match="unknown image extension"):
        write_image(tmp_path / "out.xyz", torch.rand(3, 4, 4))


# --------------------------------------------------------------------- eval

def make_pairs(folder: Path, n=2, h=40, w=52):
    gen = torch.Generator().manual_seed(7)
    (folder / "rain").mkdir(parents=True)
    (folder / "norain").mkdir(parents=True)
    for i in range(n):
        clean = synthetic_scene(h, w, gen)
        rainy = (clean + rain_streaks(h, w, gen, density=0.02, length=7)).clamp(0, 1)
        write_image(folder / "norain" / f"{i}.png", clean)
        write_image(folder / "rain" / f"{i}.png", rainy)
    return folder


def test_eval_table_and_json(tmp_path, weights, capsys):
    pairs = make_pairs(tmp_path / "pairs")
    rc = main(["eval", "--pairs", str(pairs), "--weights", str(weights), "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert rc == 0 and "PSNR (dB)" in out and "rainy input" in out and "model.safetensors" in out
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["count"] == 2
    model = RainOerMeNet.from_checkpoint(weights)
    psnrs, ssims, in_psnr = [], [], []
    for i in range(2):
        x, _ = read_image(pairs / "rain" / f"{i}.png")
        y, _ = read_image(pairs / "norain" / f"{i}.png")
        pred = Derainer(model, tile=0)(x)
        psnrs.append(psnr_y(pred, y).item())
        ssims.append(ssim_y(pred, y).item())
        in_psnr.append(psnr_y(x, y).item())
    mean = result["mean"]
    assert mean["model.safetensors"]["psnr"] == pytest.approx(np.mean(psnrs), abs=1e-6)
    assert mean["model.safetensors"]["ssim"] == pytest.approx(np.mean(ssims), abs=1e-6)
    assert mean["rainy input"]["psnr"] == pytest.approx(np.mean(in_psnr), abs=1e-9)
    assert f"{np.mean(in_psnr):10.2f}" in out


def test_eval_median_baseline(tmp_path, weights, capsys):
    import derain_kernels as dk
    if not hasattr(dk, "soft_label"):
        pytest.skip("derain_kernels.soft_label is not merged into this branch yet")
    pairs = make_pairs(tmp_path / "pairs", n=1)
    assert main(["eval", "--pairs", str(pairs), "-w", str(weights), "--baseline", "median", "--kernel", "5",
                 "--json", "-"]) == 0
    text = capsys.readouterr().out
    result = json.loads(text)   # only the JSON on stdout with --json -
    x, _ = read_image(pairs / "rain" / "0.png")
    y, _ = read_image(pairs / "norain" / "0.png")
    want = psnr_y(dk.soft_label(x.unsqueeze(0), kernel_size=5)[0], y).item()
    assert result["mean"]["median soft label (k=5)"]["psnr"] == pytest.approx(want, abs=1e-9)


def test_eval_errors(tmp_path, weights, capsys):
    rc = main(["eval", "--pairs", str(tmp_path / "nowhere"), "-w", str(weights)])
    err = capsys.readouterr().err
    assert rc == 2 and "no such folder" in err and "nowhere" in err
    (tmp_path / "half" / "rain").mkdir(parents=True)
    rc = main(["eval", "--pairs", str(tmp_path / "half"), "-w", str(weights)])
    err = capsys.readouterr().err
    assert rc == 2 and "norain" in err and "missing" in err


def test_eval_skips_bad_pairs_with_one_line_each(tmp_path, weights, capsys):
    """Unreadable, size-mismatched and too-small pairs are skipped, named and counted; the rest is evaluated."""
    pairs = make_pairs(tmp_path / "pairs", n=5)
    (pairs / "rain" / "0.png").write_bytes(b"not an image")
    (pairs / "norain" / "1.png").write_bytes(b"")
    write_image(pairs / "norain" / "2.png", rgb(40, 50))                  # size mismatch
    write_image(pairs / "rain" / "3.png", rgb(9, 30))                     # smaller than the 11x11 SSIM window
    write_image(pairs / "norain" / "3.png", rgb(9, 30, 1))
    rc = main(["eval", "--pairs", str(pairs), "-w", str(weights), "--json", str(tmp_path / "r.json")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    lines = [l for l in captured.err.splitlines() if "warning" in l]
    assert len(lines) == 4, captured.err
    assert all(l.startswith("derain eval: warning: skipping ") for l in lines)
    by_file = {name: next(l for l in lines if str(pairs / "rain" / name) in l) for name in ("0.png", "1.png", "2.png", "3.png")}
    assert "unreadable rainy image" in by_file["0.png"]
    assert "unreadable clean image" in by_file["1.png"] and "norain" in by_file["1.png"]
    assert "size mismatch" in by_file["2.png"] and "52x40" in by_file["2.png"] and "50x40" in by_file["2.png"]
    assert "too small for SSIM" in by_file["3.png"] and "30x9" in by_file["3.png"] and "11x11" in by_file["3.png"]
    assert "Traceback" not in captured.err
    assert "(1 evaluated, 4 skipped)" in captured.out
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["count"] == 1 and [s["image"] for s in result["skipped"]] == ["0.png", "1.png", "2.png", "3.png"]


def test_eval_fails_when_no_pair_is_usable(tmp_path, weights, capsys):
    pairs = make_pairs(tmp_path / "pairs", n=2, h=8, w=40)
    rc = main(["eval", "--pairs", str(pairs), "-w", str(weights)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("too small for SSIM") == 2
    assert "none of the 2 pairs could be evaluated" in err


# --------------------------------------------------------------------- demo

def test_demo_on_fresh_machine_without_weights_says_how_to_get_them(tmp_path, capsys, no_shared):
    rc = main(["demo", "--out", str(tmp_path / "demo")])
    err = capsys.readouterr().err
    assert rc == 2 and "packaged weights ('ours') are missing" in err and "rain1400" in err
    assert not (tmp_path / "demo").exists()


def test_demo_on_fresh_machine_with_packaged_weights(tmp_path, weights, capsys, no_shared, monkeypatch):
    monkeypatch.setattr(ckpt, "PACKAGED_WEIGHTS", weights)
    assert main(["demo", "--out", str(tmp_path / "demo"), "--images", "2"]) == 0
    out = capsys.readouterr().out
    assert "generated rainy scenes" in out and "weights ours" in out
    picture = Image.open(tmp_path / "demo" / "before_after.png")
    assert picture.size[0] > 2 * 300 and picture.size[1] > 2 * 200


def test_demo_with_shared_uses_authors_weights_and_real_rain(tmp_path, shared_dir, monkeypatch, capsys):
    monkeypatch.setenv("DERAIN_SHARED", str(shared_dir))
    if not (shared_dir / "weights" / "rain-over-me" / "rain1400.pth").is_file():
        pytest.skip("authors' rain1400.pth not in the shared folder")
    assert main(["demo", "--out", str(tmp_path / "demo"), "--images", "1", "--tile", "0", "-w", "rain1400"]) == 0
    out = capsys.readouterr().out
    assert "rain1400 (authors')" in out and "real rain" in out
    assert (tmp_path / "demo" / "before_after.png").is_file()


def test_generated_rain_is_rain():
    gen = torch.Generator().manual_seed(0)
    scene = synthetic_scene(60, 80, gen)
    rain = rain_streaks(60, 80, gen)
    assert scene.shape == (3, 60, 80) and rain.shape == (1, 60, 80)
    assert 0 <= scene.min() and scene.max() <= 1 and rain.max() > 0.2 and (rain > 0.05).float().mean() < 0.5


# --------------------------------------------------------------------- entry point

def test_python_m_derain_lists_the_commands():
    res = subprocess.run([sys.executable, "-m", "derain", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0
    for name in ("infer", "eval", "demo"):
        assert name in res.stdout


def test_bad_option_values_exit_with_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["infer", "x.png", "--tile", "-3"])
    assert exc.value.code == 2 and "non-negative integer" in capsys.readouterr().err


# --------------------------------------------------------------------- 16-bit colour and small tiles

def test_infer_keeps_16bit_colour_png(tmp_path, weights, capsys):
    from test_io import png16_bytes, png16_values

    a16 = np.random.default_rng(5).integers(0, 65536, size=(21, 26, 3), dtype=np.uint16)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "deep.png").write_bytes(png16_bytes(a16))
    assert main(["infer", str(tmp_path / "in" / "deep.png"), "-w", str(weights), "--out", str(tmp_path / "o")]) == 0
    assert "warning" not in capsys.readouterr().err
    out, ctype = png16_values((tmp_path / "o" / "deep.png").read_bytes())
    assert ctype == 2 and out.dtype == np.uint16
    x = torch.from_numpy(a16.astype(np.float32) / 65535).permute(2, 0, 1)
    want = Derainer(RainOerMeNet.from_checkpoint(weights), tile=0)(x).clamp(0, 1)
    got = torch.from_numpy(out.astype(np.float64) / 65535).permute(2, 0, 1)
    assert (got - want.double()).abs().max() <= 1e-4          # 16-bit precision, not 8-bit (≈ 2e-3)
    assert len(np.unique(out % 256)) > 64                     # low bytes carry information


def tiff16_rgb_bytes(a16: np.ndarray) -> bytes:
    """An uncompressed little-endian 16-bit RGB TIFF built by hand (one strip)."""
    import struct

    h, w, _ = a16.shape
    pixels = a16.astype("<u2").tobytes()
    n_tags = 10
    ifd_at = 8
    extra_at = ifd_at + 2 + 12 * n_tags + 4           # BitsPerSample values, then the pixels
    data_at = extra_at + 6
    tags = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 3, extra_at), (259, 3, 1, 1), (262, 3, 1, 2),
            (273, 4, 1, data_at), (277, 3, 1, 3), (278, 4, 1, h), (279, 4, 1, len(pixels)), (284, 3, 1, 1)]
    ifd = struct.pack("<H", n_tags) + b"".join(
        struct.pack("<HHI", tag, typ, count) + (struct.pack("<HH", value, 0) if typ == 3 and count == 1
                                                else struct.pack("<I", value))
        for tag, typ, count, value in tags) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", ifd_at) + ifd + struct.pack("<HHH", 16, 16, 16) + pixels


def test_infer_warns_when_16bit_colour_becomes_8bit(tmp_path, weights, capsys):
    """A 16-bit colour TIFF is read at 16 bits, but colour TIFF is written at 8: one warning line, not silence."""
    a16 = np.random.default_rng(6).integers(0, 65536, size=(12, 15, 3), dtype=np.uint16)
    (tmp_path / "deep.tif").write_bytes(tiff16_rgb_bytes(a16))
    x, info = read_image(tmp_path / "deep.tif")
    assert info.bits == 16 and info.format == "TIFF"
    torch.testing.assert_close(x.double(), torch.from_numpy(a16 / 65535).permute(2, 0, 1), atol=1e-7, rtol=0)
    assert main(["infer", str(tmp_path / "deep.tif"), "-w", str(weights), "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert f"derain infer: warning: {tmp_path / 'deep.tif'}: 16-bit input written as 8-bit .tif" in err
    assert Image.open(tmp_path / "o" / "deep.tif").mode == "RGB"


@pytest.mark.parametrize("tile,warned", [(8, True), (100, True), (128, False), (512, False), (0, False)])
def test_small_tile_is_warned_with_the_reason(tmp_path, weights, capsys, tile, warned):
    inputs = write_inputs(tmp_path / "in")
    assert main(["infer", str(inputs / "photo.png"), "-w", str(weights), "--out", str(tmp_path / "o"),
                 "--tile", str(tile)]) == 0
    err = capsys.readouterr().err
    assert (f"warning: --tile {tile} is small" in err) == warned, err
    if warned:
        assert "31 pixels of context" in err and f"{((tile + 62) / tile) ** 2:.0f}x the pixels" in err


def test_ctrl_c_while_importing_exits_130_without_traceback(monkeypatch, capsys):
    import derain.cli as cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["infer", "--help"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
