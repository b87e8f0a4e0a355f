"""The two-stage distillation trainer: schedules, data pairing, soft-label cache, checkpoints,
bit-for-bit resume after a crash, the `derain train` command line, and DDP on 2 CPU processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import derain_kernels as dk
from derain.cli import main as cli_main
from derain.train import PRESETS, TrainConfig, lr_factor, train, weight_schedule
from derain.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, read_checkpoint
from derain.train.data import (DistillationSamples, ImageFolder, SoftLabelCache, StepBatchSampler, decode_image,
                               load_pairs)

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra) -> dict:
    """Environment of a child `python -m derain` process: this checkout first on the path."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


# ------------------------------------------------------------------------------------------ fixtures

def _save(path: Path, arr: np.ndarray, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, **kw).save(path)


@pytest.fixture
def data(tmp_path):
    """6 rainy (40×48) and 6 clean (44×40) random images, 2 validation pairs."""
    rng = np.random.default_rng(1)
    root = tmp_path / "data"
    for i in range(6):
        _save(root / "rainy" / f"{i}.png", rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
        _save(root / "clean" / f"{i}.png", rng.integers(0, 256, (44, 40, 3), dtype=np.uint8))
    for i in range(2):
        a = rng.integers(0, 256, (36, 34, 3), dtype=np.uint8)
        _save(root / "val" / "rain" / f"{i}.png", a)
        _save(root / "val" / "norain" / f"{i}.png", (a // 2).astype(np.uint8))
    return root


def _cfg(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(rainy=str(data / "rainy"), clean=str(data / "clean"), out=str(out), steps=6, batch_size=2,
                crop=32, kernel_size=5, ckpt_every=2, val_every=1000, workers=0, progress=False, log_every=1,
                threads=None)
    base.update(kw)
    return TrainConfig(**base)


def _quiet(*_):
    pass


# ------------------------------------------------------------------------------------------ schedules

def test_presets_follow_paper_and_released_code():
    a, b = weight_schedule("tip")(1)
    assert a == pytest.approx(1 / 1000) and b == pytest.approx(1000 / 1001)
    assert weight_schedule("tip")(300_000)[0] == pytest.approx(300.0)          # TIP Eq. 9: no cap
    assert weight_schedule("rain1400")(5_000)[0] == pytest.approx(5.0)
    assert weight_schedule("rain1400")(20_000)[0] == 10.0
    assert weight_schedule("rain200l")(80_000)[0] == 50.0
    a, b = weight_schedule("did")(1_000)
    assert a == pytest.approx(2.0) and b == pytest.approx(500 / 1500)
    assert weight_schedule("did")(10**6)[0] == 100.0
    assert set(PRESETS) == {"tip", "rain1400", "rain200l", "did"}
    with pytest.raises(ValueError, match="preset"):
        weight_schedule("nope")
    with pytest.raises(ValueError, match="t must be"):
        weight_schedule("tip")(0)


def test_lr_constant_first_half_then_linear_to_zero():
    total = 10
    f = [lr_factor(t, total) for t in range(1, total + 1)]
    assert f[:5] == [1.0] * 5
    assert all(x > y for x, y in zip(f[4:], f[5:]))
    diffs = np.diff(f[4:])
    assert np.allclose(diffs, diffs[0])                    # linear
    assert 0 < f[-1] <= 1 / 5
    with pytest.raises(ValueError):
        lr_factor(11, total)


# ------------------------------------------------------------------------------------------ data

def test_folder_skips_corrupt_and_small_files_with_a_warning(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "imgs"
    _save(d / "rgb.png", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    _save(d / "rgba.png", rng.integers(0, 256, (40, 41, 4), dtype=np.uint8))
    _save(d / "grey.png", rng.integers(0, 256, (42, 40), dtype=np.uint8))
    _save(d / "grey16.png", rng.integers(0, 65536, (40, 40), dtype=np.uint16))
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(d / "photo.jpg", quality=90)
    _save(d / "small.png", rng.integers(0, 256, (10, 40, 3), dtype=np.uint8))
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (d / "truncated.jpg").write_bytes((d / "photo.jpg").read_bytes()[:200])
    (d / "notes.txt").write_text("not an image, ignored by suffix")
    with pytest.warns(UserWarning) as rec:
        folder = ImageFolder(d, 32, "--rainy")
    msgs = " ".join(str(w.message) for w in rec)
    assert "corrupt.png" in msgs and "truncated.jpg" in msgs and "small.png" in msgs and "too small" in msgs
    names = sorted(e.path.name for e in folder.entries)
    assert names == ["grey.png", "grey16.png", "photo.jpg", "rgb.png", "rgba.png"]
    for i in range(len(folder)):
        img = folder.image(i)
        assert img.ndim == 3 and img.shape[2] == 3
    g16 = decode_image((d / "grey16.png").read_bytes())
    assert g16.dtype == np.float32 and 0 <= g16.min() and g16.max() <= 1


def test_16bit_colour_images_are_decoded_at_16_bits():
    from test_io import png16_bytes

    a16 = np.random.default_rng(4).integers(0, 65536, size=(7, 9, 4), dtype=np.uint16)
    arr = decode_image(png16_bytes(a16))
    assert arr.dtype == np.float32 and arr.shape == (7, 9, 3)           # alpha dropped
    np.testing.assert_allclose(arr, a16[..., :3] / 65535.0, atol=1e-7, rtol=0)


def test_folder_errors_name_the_argument(tmp_path):
    with pytest.raises(FileNotFoundError, match="--clean"):
        ImageFolder(tmp_path / "missing", 32, "--clean")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="--clean: no images"):
        ImageFolder(tmp_path / "empty", 32, "--clean")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"garbage")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no usable image"):
        ImageFolder(tmp_path / "bad", 32, "--rainy")


def test_several_folders_are_pooled_in_order(data, tmp_path):
    from derain.train.trainer import TrainConfig, resume_command

    one = ImageFolder(data / "rainy", 32, "--rainy")
    both = ImageFolder([data / "rainy", data / "clean"], 32, "--rainy")
    clean = ImageFolder(data / "clean", 32, "--clean")
    assert [e.path for e in both.entries] == [e.path for e in one.entries] + [e.path for e in clean.entries]
    with pytest.raises(FileNotFoundError, match="--rainy: folder not found"):
        ImageFolder([data / "rainy", tmp_path / "missing"], 32, "--rainy")
    cfg = TrainConfig(rainy=[str(data / "rainy"), str(data / "clean")], clean=str(data / "clean"), out="RUN")
    cmd = resume_command(cfg)
    assert f"--rainy {data / 'rainy'} {data / 'clean'} --clean {data / 'clean'} --out RUN" in cmd


def test_rainy_crop_and_soft_label_share_crop_and_flip(data):
    rainy = ImageFolder(data / "rainy", 32, "--rainy")
    clean = ImageFolder(data / "clean", 32, "--clean")
    # a "label" that is a per-pixel transform of the image: any crop/flip mismatch breaks x <-> 1 - y
    labels = [255 - rainy.image(i) for i in range(len(rainy))]
    ds = DistillationSamples(rainy, labels, clean, crop=32, seed=3)
    flips = set()
    for s in range(40):
        item = ds[s]
        x, y, c = item["x"], item["y_s"], item["c"]
        assert x.shape == y.shape == c.shape == (3, 32, 32)
        assert torch.allclose(x, 1 - y, atol=1e-6)
        ri, ci = ds.indices(s)
        src = torch.from_numpy(rainy.image(ri).astype(np.float32) / 255).permute(2, 0, 1)
        found = None
        for code, fl in ((0, lambda t: t), (1, lambda t: t.flip(-2)), (2, lambda t: t.flip(-1)),
                         (3, lambda t: t.flip(-2, -1))):
            z = fl(x)
            for top in range(src.shape[1] - 31):
                for left in range(src.shape[2] - 31):
                    if torch.equal(src[:, top:top + 32, left:left + 32], z):
                        found = code
        assert found is not None
        flips.add(found)
        csrc = torch.from_numpy(clean.image(ci).astype(np.float32) / 255).permute(2, 0, 1)
        assert any(torch.equal(csrc[:, t:t + 32, l:l + 32], c)
                   for t in range(csrc.shape[1] - 31) for l in range(csrc.shape[2] - 31))
    assert flips == {0, 1, 2, 3}


def test_sampling_is_a_pure_function_of_seed_and_slot(data):
    rainy = ImageFolder(data / "rainy", 32, "--rainy")
    clean = ImageFolder(data / "clean", 32, "--clean")
    labels = [rainy.image(i) for i in range(len(rainy))]
    a = DistillationSamples(rainy, labels, clean, 32, seed=7)
    b = DistillationSamples(rainy, labels, clean, 32, seed=7)
    for s in (11, 0, 5, 30):                                  # any order
        assert all(torch.equal(a[s][k], b[s][k]) for k in ("x", "y_s", "c"))
    assert not torch.equal(a[0]["x"], DistillationSamples(rainy, labels, clean, 32, seed=8)[0]["x"]) or \
        not torch.equal(a[1]["x"], DistillationSamples(rainy, labels, clean, 32, seed=8)[1]["x"])
    # each epoch visits every rainy and every clean image once
    for epoch in range(3):
        rs = [a.indices(s)[0] for s in range(6 * epoch, 6 * epoch + 6)]
        cs = [a.indices(s)[1] for s in range(6 * epoch, 6 * epoch + 6)]
        assert sorted(rs) == list(range(6)) and sorted(cs) == list(range(6))


def test_rank_shards_partition_the_global_batch():
    single = StepBatchSampler(1, 4, batch_size=6, rank=0, world_size=1)
    r0 = StepBatchSampler(1, 4, batch_size=3, rank=0, world_size=2)
    r1 = StepBatchSampler(1, 4, batch_size=3, rank=1, world_size=2)
    for full, a, b in zip(single, r0, r1):
        assert not set(a) & set(b)
        assert sorted(a + b) == full
    assert list(StepBatchSampler(3, 4, 2)) == [[4, 5], [6, 7]] and len(StepBatchSampler(3, 4, 2)) == 2


def test_soft_label_cache_is_exact_and_keyed(data, tmp_path):
    rainy = ImageFolder(data / "rainy", 32, "--rainy")
    cache = SoftLabelCache(tmp_path / "cache", kernel_size=5)
    assert cache.warm(rainy, progress=False) == 6
    assert cache.warm(rainy, progress=False) == 0                   # computed once
    img = rainy.image(2)
    want = dk.soft_label(torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None], kernel_size=5)
    got = cache.load(rainy.entries[2].digest)
    assert got.dtype == np.uint8                                   # 8-bit labels stored losslessly as PNG
    assert torch.equal(torch.from_numpy(got.astype(np.float32) / 255).permute(2, 0, 1)[None], want)
    keys = {cache.key("d"), SoftLabelCache(tmp_path, 7).key("d"), SoftLabelCache(tmp_path, 5, min_composite=True).key("d"),
            SoftLabelCache(tmp_path, 5, padding="replicate").key("d")}
    assert len(keys) == 4
    mc = SoftLabelCache(tmp_path / "cache", kernel_size=5, min_composite=True)
    assert mc.warm(rainy, progress=False) == 6
    assert np.all(mc.load(rainy.entries[2].digest) <= img)


# ------------------------------------------------------------------------------------------ train, crash, resume

class _Crash(Exception):
    pass


def _crash_at(step):
    def hook(t):
        if t == step:
            raise _Crash(t)
    return hook


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_train_crash_resume_is_bit_for_bit_and_infer_loads_it(data, tmp_path):
    full = train(_cfg(data, tmp_path / "full", val_pairs=str(data / "val"), val_every=3), log=_quiet)
    assert full.step == 6 and not full.stopped_early
    rows = (tmp_path / "full" / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss,loss_label,loss_clean,alpha,beta,lr") and len(rows) == 7
    val = (tmp_path / "full" / "val.csv").read_text().splitlines()
    assert len(val) == 3 and val[1].startswith("3,")
    assert [s for s, _ in list_checkpoints(tmp_path / "full")] == [2, 4, 6]

    # a run that dies after step 5 (its last checkpoint is step 4) ...
    with pytest.raises(_Crash):
        train(_cfg(data, tmp_path / "crashed"), log=_quiet, on_step=_crash_at(5))
    assert latest_checkpoint(tmp_path / "crashed").name == "step_00000004.safetensors"
    # ... continues in a new process with `derain train --resume`
    cmd = [sys.executable, "-m", "derain", "train", "--rainy", str(data / "rainy"), "--clean", str(data / "clean"),
           "--out", str(tmp_path / "crashed"), "--steps", "6", "--resume", "--workers", "0", "--no-progress"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=_env())
    assert proc.returncode == 0, proc.stderr
    assert "resumed from step_00000004" in proc.stderr

    resumed = torch.nn.Module()
    from derain.models import RainOerMeNet
    resumed = RainOerMeNet()
    opt_a = torch.optim.Adam(resumed.parameters())
    step, cfg = load_checkpoint(tmp_path / "crashed" / "step_00000006.safetensors", resumed, opt_a)
    assert step == 6 and cfg["kernel_size"] == 5
    want = _state(full.model)
    for k, v in resumed.state_dict().items():
        assert torch.equal(v, want[k]), k                              # bit for bit
    ref_t, _ = read_checkpoint(tmp_path / "full" / "step_00000006.safetensors")
    res_t, _ = read_checkpoint(tmp_path / "crashed" / "step_00000006.safetensors")
    assert ref_t.keys() == res_t.keys()
    for k in ref_t:
        assert torch.equal(ref_t[k], res_t[k]), k                      # optimizer state too
    full_log = (tmp_path / "full" / "log.csv").read_text().splitlines()
    res_log = (tmp_path / "crashed" / "log.csv").read_text().splitlines()
    strip = lambda rows: [r.rsplit(",", 1)[0] for r in rows]             # noqa: E731 (drop sec/step)
    assert strip(res_log) == strip(full_log)

    # the exported weights load with the model API and give the trained model's output
    from derain.models.checkpoint import load_checkpoint as load_weights
    net = load_weights(tmp_path / "crashed" / "final.safetensors")
    x = torch.rand(1, 3, 33, 35)
    with torch.no_grad():
        # (same weights; only the conv algorithm of channels-last vs contiguous rounds differently)
        torch.testing.assert_close(net(x), full.model.eval()(x.contiguous(memory_format=torch.channels_last)),
                                   rtol=0, atol=1e-5)
        assert not torch.allclose(net(x), RainOerMeNet()(x), atol=1e-5)


def test_max_minutes_stops_cleanly_with_a_checkpoint(data, tmp_path):
    r = train(_cfg(data, tmp_path / "run", steps=50, max_minutes=1e-6), log=_quiet)
    assert r.stopped_early and r.step == 1 and r.interrupted is None
    assert latest_checkpoint(tmp_path / "run").name == "step_00000001.safetensors"
    assert not (tmp_path / "run" / "final.safetensors").exists()      # unfinished: no final weights
    r2 = train(_cfg(data, tmp_path / "run", steps=3, resume=True), log=_quiet)
    assert r2.step == 3 and r2.steps_this_run == 2


# ------------------------------------------------------------------------------------------ CLI errors

def _cli(args, capsys):
    rc = cli_main(["train", *map(str, args)])
    return rc, capsys.readouterr().err


def test_cli_errors(data, tmp_path, capsys):
    common = ["--steps", "2", "--batch-size", "2", "--crop", "32", "--kernel-size", "3", "--workers", "0",
              "--no-progress"]
    rc, err = _cli(["--rainy", tmp_path / "nope", "--clean", data / "clean", "--out", tmp_path / "r1", *common], capsys)
    assert rc == 2 and "--rainy" in err and "not found" in err
    (tmp_path / "unreadable").mkdir()
    (tmp_path / "unreadable" / "a.jpg").write_bytes(b"not a jpeg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc, err = _cli(["--rainy", data / "rainy", "--clean", tmp_path / "unreadable", "--out", tmp_path / "r2",
                        *common], capsys)
    assert rc == 2 and "--clean" in err and "no usable image" in err
    rc, err = _cli(["--rainy", data / "rainy", "--clean", data / "clean", "--out", tmp_path / "r3", "--resume",
                    *common], capsys)
    assert rc == 2 and "--resume" in err and "no checkpoint" in err
    rc, err = _cli(["--rainy", data / "rainy", "--clean", data / "clean", "--out", tmp_path / "r4",
                    "--val-pairs", tmp_path / "noval", *common], capsys)
    assert rc == 2 and "--val-pairs" in err
    # a run folder with checkpoints is not silently restarted; a broken checkpoint is named
    rc, err = _cli(["--rainy", data / "rainy", "--clean", data / "clean", "--out", tmp_path / "r6", *common], capsys)
    assert rc == 0
    rc, err = _cli(["--rainy", data / "rainy", "--clean", data / "clean", "--out", tmp_path / "r6", *common], capsys)
    assert rc == 2 and "--resume" in err and "already holds checkpoints" in err
    (tmp_path / "r6" / "step_00000009.safetensors").write_bytes(b"\x00" * 64)
    rc, err = _cli(["--rainy", data / "rainy", "--clean", data / "clean", "--out", tmp_path / "r6", "--resume",
                    *common], capsys)
    assert rc == 2 and "step_00000009.safetensors" in err and "not a readable" in err


@pytest.mark.parametrize("flag,value", [
    ("--batch-size", "0"), ("--kernel-size", "4"), ("--kernel-size", "-3"), ("--lr", "0"), ("--lr", "nan"),
    ("--lr", "fast"), ("--steps", "0"), ("--crop", "0"), ("--workers", "-1"), ("--keep", "0"),
    ("--ckpt-every", "0"), ("--val-every", "0"), ("--val-limit", "0"), ("--log-every", "0"),
    ("--max-minutes", "0"), ("--max-minutes", "inf"), ("--threads", "0"), ("--seed", "-1"),
])
def test_cli_errors_name_the_flag(data, tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exc:
        cli_main(["train", "--rainy", str(data / "rainy"), "--clean", str(data / "clean"),
                  "--out", str(tmp_path / "run"), flag, value])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"argument {flag}: expected" in err and repr(value) in err
    internal = flag[2:].replace("-", "_")
    assert internal not in err.replace(flag, "") or internal == flag[2:], err   # no batch_size, kernel_size, ...
    assert not (tmp_path / "run").exists()


def test_cli_betas_and_device_errors_name_the_flag(data, tmp_path, capsys):
    args = ["train", "--rainy", str(data / "rainy"), "--clean", str(data / "clean"), "--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit):
        cli_main([*args, "--betas", "0.5", "1"])
    assert "argument --betas: expected a number in [0, 1), got '1'" in capsys.readouterr().err
    assert cli_main([*args, "--device", "tpu"]) == 2
    assert "--device: expected cpu, cuda or cuda:N, got 'tpu'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert cli_main([*args, "--device", "cuda"]) == 2
        assert "--device cuda: CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_unreadable_images_give_one_clean_line_each(data, tmp_path, capsys):
    """No Python warning machinery (file, line, source), no <_io.BytesIO ...>: one line per file, named."""
    rainy = tmp_path / "rainy"
    rainy.mkdir()
    for p in (data / "rainy").iterdir():
        (rainy / p.name).write_bytes(p.read_bytes())
    (rainy / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (rainy / "notes.jpg").write_text("hello")
    (rainy / "empty.png").write_bytes(b"")
    (rainy / "cut.png").write_bytes((rainy / "0.png").read_bytes()[:300])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = cli_main(["train", "--rainy", str(rainy), "--clean", str(data / "clean"), "--out", str(tmp_path / "run"),
                       "--steps", "1", "--batch-size", "1", "--crop", "32", "--kernel-size", "3", "--workers", "0",
                       "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert not [w for w in caught if "skipping" in str(w.message)]
    lines = [l for l in err.splitlines() if "skipping" in l]
    assert len(lines) == 4, err
    for name in ("corrupt.png", "notes.jpg", "empty.png", "cut.png"):
        line = next(l for l in lines if name in l)
        assert line.startswith(f"warning: --rainy: skipping {rainy / name}: ")
    assert "BytesIO" not in err and "UserWarning" not in err and ".py:" not in err
    assert "not an image" in next(l for l in lines if "notes.jpg" in l)
    assert "empty file" in next(l for l in lines if "empty.png" in l)
    assert "truncated" in next(l for l in lines if "cut.png" in l)


def test_failed_start_leaves_no_run_folder(data, tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"garbage")
    common = ["--steps", "2", "--batch-size", "1", "--crop", "32", "--kernel-size", "3", "--workers", "0",
              "--no-progress"]
    # no usable clean image: an error naming the option, and no run folder
    rc, err = _cli(["--rainy", data / "rainy", "--clean", bad, "--out", tmp_path / "runs" / "new", *common], capsys)
    assert rc == 2 and "--clean: no usable image" in err and f"skipping {bad / 'x.png'}" in err
    assert not (tmp_path / "runs").exists()
    # a folder that existed keeps its files and gets none
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    rc, err = _cli(["--rainy", data / "rainy", "--clean", bad, "--out", mine, *common], capsys)
    assert rc == 2 and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    rc, err = _cli(["--rainy", data / "rainy", "--clean", data / "clean", "--out", mine,
                    "--val-pairs", tmp_path / "no-val", *common], capsys)
    assert rc == 2 and "--val-pairs" in err and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    # Ctrl-C while the soft labels are computed (before the first step): removed again, exit status 130
    from derain.train import data as train_data

    def interrupted(self, folder, progress=True):
        self.store(folder.entries[0].digest, self.compute(folder.image(0)))
        raise KeyboardInterrupt
    monkeypatch.setattr(train_data.SoftLabelCache, "warm", interrupted)
    rc, err = _cli(["--rainy", data / "rainy", "--clean", data / "clean", "--out", tmp_path / "r2", *common], capsys)
    assert rc == 130 and not (tmp_path / "r2").exists()
    rc, err = _cli(["--rainy", data / "rainy", "--clean", data / "clean", "--out", mine, *common], capsys)
    assert rc == 130 and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_interrupt_saves_a_resumable_checkpoint_not_final_weights(data, tmp_path):
    """Ctrl-C (SIGINT) in the training loop: a step checkpoint, no final.safetensors, TrainResult.interrupted."""
    import signal

    def ctrl_c(t):
        if t == 2:
            signal.raise_signal(signal.SIGINT)
    logs = []
    r = train(_cfg(data, tmp_path / "run", steps=6, ckpt_every=100), log=logs.append, on_step=ctrl_c)
    assert r.stopped_early and r.step == 2 and r.interrupted == signal.SIGINT
    assert latest_checkpoint(tmp_path / "run").name == "step_00000002.safetensors"
    assert not (tmp_path / "run" / "final.safetensors").exists()
    assert any("interrupted (SIGINT) at step 2 of 6" in m and "--resume" in m for m in logs)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler     # handler restored
    r2 = train(_cfg(data, tmp_path / "run", steps=6, ckpt_every=100, resume=True), log=_quiet)
    assert r2.step == 6 and r2.interrupted is None and (tmp_path / "run" / "final.safetensors").is_file()


def test_ctrl_c_exits_130_and_the_unfinished_run_is_not_taken_as_weights(data, tmp_path):
    import signal
    import time

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "derain", "train", "--rainy", str(data / "rainy"), "--clean", str(data / "clean"),
           "--out", str(run), "--steps", "100000", "--batch-size", "1", "--crop", "32", "--kernel-size", "3",
           "--workers", "1", "--no-progress", "--ckpt-every", "1", "--keep", "2"]
    # its own process group, signalled as a whole like Ctrl-C in a terminal (the DataLoader worker too)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not list_checkpoints(run) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert list_checkpoints(run), "training did not start"
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "interrupted (SIGINT)" in err and "--resume" in err and "Traceback" not in err
    assert err.count("SIGINT: stopping after the current step") == 1          # the worker stays quiet
    assert "unfinished" in out
    assert not (run / "final.safetensors").exists() and list_checkpoints(run)
    # derain infer --weights RUN refuses the unfinished run, and takes a checkpoint named as a file
    img = tmp_path / "in.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(img)
    rc = cli_main(["infer", str(img), "--weights", str(run), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert cli_main(["infer", str(img), "--weights", str(latest_checkpoint(run)), "--out", str(tmp_path / "o")]) == 0


def test_checkpoints_and_weights_get_normal_permissions(data, tmp_path):
    old = os.umask(0o022)
    try:
        train(_cfg(data, tmp_path / "run", steps=2, ckpt_every=1), log=_quiet)
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert any(p.name.startswith("step_") for p in files) and any(p.parent.name == "soft_labels" for p in files)
    assert (tmp_path / "run" / "final.safetensors") in files
    for p in files:
        assert p.stat().st_mode & 0o777 == 0o644, p


def test_load_pairs_matches_names(data, tmp_path):
    pairs = load_pairs(data / "val")
    assert [(a.name, b.name) for a, b in pairs] == [("0.png", "0.png"), ("1.png", "1.png")]
    (tmp_path / "v" / "rain").mkdir(parents=True)
    (tmp_path / "v" / "norain").mkdir()
    with pytest.raises(ValueError, match="no images"):
        load_pairs(tmp_path / "v")


def test_trainer_runs_fused_adam_and_resumes_a_checkpoint_of_the_loop_adam(tmp_path):
    """Adam's implementation is not part of the state: a checkpoint written by the per-tensor loop resumes
    under the trainer's fused Adam (which stays fused) and continues as the loop would."""
    from derain.models import RainOerMeNet
    from derain.train.checkpoint import save_checkpoint
    from derain.train.trainer import _adam

    torch.manual_seed(0)
    a, b = RainOerMeNet(), RainOerMeNet()
    cfg = TrainConfig(rainy="r", clean="c", out=str(tmp_path))
    loop = torch.optim.Adam(a.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), foreach=False)
    grads = [[torch.randn_like(p) for p in a.parameters()] for _ in range(5)]

    def step(model, opt, g):
        for p, gp in zip(model.parameters(), g):
            p.grad = gp.clone()
        opt.step()

    for g in grads[:3]:
        step(a, loop, g)
    save_checkpoint(tmp_path / "c.safetensors", 3, a, loop, {})
    fused = _adam(b, cfg)
    assert fused.param_groups[0]["fused"]
    load_checkpoint(tmp_path / "c.safetensors", b, fused, restore_rng=False)
    assert fused.param_groups[0]["fused"] and not loop.param_groups[0].get("fused")
    for g in grads[3:]:
        step(a, loop, g)
        step(b, fused, g)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-8, msg=name)
    assert not torch.equal(a.inc[0].weight, RainOerMeNet().inc[0].weight)


def _ema_of(path):
    t, _ = read_checkpoint(path)
    return {k[4:]: v for k, v in t.items() if k.startswith("ema.")}, {k[6:]: v for k, v in t.items()
                                                                      if k.startswith("model.")}


def test_ema_averages_the_weights_without_changing_them_and_is_exported(data, tmp_path):
    d = 0.75
    plain = train(_cfg(data, tmp_path / "plain", steps=4, ckpt_every=1, keep=10), log=_quiet)
    run = train(_cfg(data, tmp_path / "ema", steps=4, ckpt_every=1, keep=10, ema=d, val_pairs=str(data / "val"),
                     val_every=2), log=_quiet)
    for k, v in plain.model.state_dict().items():                 # the average does not touch the training
        assert torch.equal(v, run.model.state_dict()[k]), k
    prev, _ = _ema_of(tmp_path / "ema" / "step_00000001.safetensors")
    for t in (2, 3, 4):                                            # ema_t = d ema_(t-1) + (1 - d) w_t
        ema, w = _ema_of(tmp_path / "ema" / f"step_{t:08d}.safetensors")
        for k in w:
            torch.testing.assert_close(ema[k], d * prev[k] + (1 - d) * w[k], rtol=1e-6, atol=1e-7)
            assert not torch.equal(ema[k], w[k]) or k.endswith("bias")
        prev = ema
    from derain.models import RainOerMeNet
    final = RainOerMeNet.from_checkpoint(tmp_path / "ema" / "final.safetensors")
    for k, v in final.state_dict().items():                        # final weights = the average
        torch.testing.assert_close(v, prev[k], rtol=0, atol=0)
    meta = json.loads((tmp_path / "ema" / "final.json").read_text())["metadata"]
    assert meta["weights"] == "ema"
    rows = (tmp_path / "ema" / "val.csv").read_text().splitlines()
    assert rows[0].endswith("psnr_y_ema,ssim_y_ema") and all(r.split(",")[-1] for r in rows[1:])
    best = json.loads((tmp_path / "ema" / "best.json").read_text())["metadata"]
    assert best["weights"] in ("raw", "ema")


def test_ema_resumes_bit_for_bit_continues_unasked_and_can_start_on_resume(data, tmp_path):
    full = train(_cfg(data, tmp_path / "full", steps=4, ema=0.5), log=_quiet)
    with pytest.raises(_Crash):
        train(_cfg(data, tmp_path / "cut", steps=4, ema=0.5), log=_quiet, on_step=_crash_at(3))
    msgs = []
    resumed = train(_cfg(data, tmp_path / "cut", steps=4, resume=True), log=msgs.append)   # no ema given
    assert not any("starts here" in m for m in msgs)
    for k, v in full.extra["ema"].state_dict().items():
        assert torch.equal(v, resumed.extra["ema"].state_dict()[k]), k
    # a run without an average gets one from the step it resumes at
    train(_cfg(data, tmp_path / "late", steps=2), log=_quiet)
    msgs = []
    late = train(_cfg(data, tmp_path / "late", steps=3, resume=True, ema=0.5), log=msgs.append)
    assert any("starts here, at step 2" in m for m in msgs)
    ema3, w3 = _ema_of(tmp_path / "late" / "step_00000003.safetensors")
    _, w2 = _ema_of(tmp_path / "late" / "step_00000002.safetensors")
    for k in w3:
        torch.testing.assert_close(ema3[k], 0.5 * w2[k] + 0.5 * w3[k], rtol=1e-6, atol=1e-7)
    assert late.extra["ema"] is not None


def test_ema_flag_is_checked():
    with pytest.raises(ValueError, match="ema"):
        TrainConfig(rainy="r", clean="c", out="o", ema=1.0).check()
    with pytest.raises(SystemExit):
        cli_main(["train", "--rainy", "r", "--clean", "c", "--out", "o", "--ema", "0"])


# ------------------------------------------------------------------------------------------ DDP

def test_ddp_two_cpu_processes_stay_in_sync(data, tmp_path):
    """torchrun with 2 gloo processes, batch 2 each == one process with batch 4 (same samples)."""
    args = ["--rainy", str(data / "rainy"), "--clean", str(data / "clean"), "--steps", "3", "--crop", "32",
            "--kernel-size", "3", "--workers", "0", "--no-progress", "--ckpt-every", "3"]
    env = _env(OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(29500 + os.getpid() % 1000), "-m", "derain", "train",
                           "--out", str(tmp_path / "ddp"), "--batch-size", "2", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ranks in sync: 2 processes" in proc.stderr
    assert [s for s, _ in list_checkpoints(tmp_path / "ddp")] == [3]          # one writer
    single = train(_cfg(data, tmp_path / "single", steps=3, batch_size=4, kernel_size=3, ckpt_every=3), log=_quiet)
    ddp_t, meta = read_checkpoint(tmp_path / "ddp" / "step_00000003.safetensors")
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(ddp_t[f"model.{k}"], v, rtol=1e-4, atol=1e-5)
    assert json.loads(meta["config"])["batch_size"] == 2


def test_packaged_weights_come_from_a_training_run():
    """derain/weights/rain_oer_me.safetensors (+ .json): written by derain train's run, loadable, not identity."""
    from derain.models import RainOerMeNet
    from derain.models.checkpoint import packaged_weights

    path = packaged_weights()
    assert path is not None and path.stat().st_size < 400_000
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["metadata"]["trainer"] == "derain train" and meta["metadata"]["step"] > 0
    net = RainOerMeNet.from_checkpoint(path)
    x = torch.rand(1, 3, 40, 44)
    with torch.no_grad():
        y = net(x)
    assert torch.isfinite(y).all() and (y - x).abs().max() > 1e-3
