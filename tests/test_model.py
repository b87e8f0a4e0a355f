"""RainOerMeNet: parity with the authors' network, parameter counts, checkpoints, exact tiled inference."""
import json

import pytest
import torch
import torch.nn.functional as F

from derain.inference import Derainer, receptive_radius
from derain.io import load_image
from derain.models import RainOerMeNet
from derain.models import checkpoint as ckpt

AUTHORS = ("rain1400", "rain200l", "did")


# --------------------------------------------------------------------- the authors' forward (docs/method.md#network-g)

def authors_forward(sd: dict, x: torch.Tensor):
    """The released network written from docs/method.md#network-g with F.conv2d on the raw state_dict: (R, Ŷ, R_e, Ŷ_e)."""
    def conv(name, t, dilation=1):
        return F.conv2d(t, sd[name + ".weight"], sd[name + ".bias"], padding=dilation, dilation=dilation)

    def block(prefix, t):   # la = ReLU(conv_d1(x)); e = x − la; out = ReLU(conv_d3(e) + la)
        la = torch.relu(conv(prefix + ".conv1.0", t))
        return torch.relu(conv(prefix + ".dilated_conv", t - la, dilation=3) + la)

    def tree(prefix, t):
        a1 = block(prefix + ".conv1", t)
        a2 = block(prefix + ".conv2", a1)
        return torch.relu(conv(prefix + ".merge.0", torch.cat([a1, a2], 1)))

    fi = torch.relu(conv("inc.0", x))
    f0 = tree("block1", fi)
    f1 = tree("block2", f0)
    f01 = torch.relu(conv("merge11.0", torch.cat([f0, f1], 1)))
    f3 = tree("block3", f01)
    f33 = torch.relu(conv("merge12.0", torch.cat([f01, f3], 1)))
    r = torch.tanh(conv("outc.0", f33))
    if "out2.4.weight" in sd:   # conv 3→16, ReLU, conv 16→16, ReLU, conv 16→3
        r_e = conv("out2.4", torch.relu(conv("out2.2", torch.relu(conv("out2.0", r)))))
    else:                       # DID: conv 3→16, ReLU, conv 16→3, ReLU
        r_e = torch.relu(conv("out2.2", torch.relu(conv("out2.0", r))))
    return r, x - r, r_e, x - r_e


def authors_state(shared_dir, name):
    path = shared_dir / "weights" / "rain-over-me" / f"{name}.pth"
    if not path.is_file():
        pytest.skip(f"authors' checkpoint not found at {path}")
    return path, torch.load(path, map_location="cpu", weights_only=True)


def real_crop(shared_dir):
    path = shared_dir / "data" / "paired" / "rain100h-dev" / "rain" / "1.png"
    if not path.is_file():
        pytest.skip(f"real image not found at {path}")
    return load_image(path)[:, 60:141, 100:199].unsqueeze(0)   # odd 81×99 crop keeps the test fast


@pytest.mark.parametrize("name", AUTHORS)
def test_authors_checkpoints_reproduce_authors_network(shared_dir, name):
    path, sd = authors_state(shared_dir, name)
    model = RainOerMeNet.from_checkpoint(path)
    assert model.config["detail"] == ("did" if name == "did" else "rain1400")
    for i, x in enumerate((torch.rand(1, 3, 67, 45), real_crop(shared_dir))):
        with torch.no_grad():
            want = authors_forward(sd, x)
            got = model.forward_train(x)
            assert len(got) == 4
            for g, w, what in zip(got, want, ("R", "Y", "R_e", "Y_e")):
                torch.testing.assert_close(g, w, atol=1e-5, rtol=0, msg=f"{name} {what}")
            torch.testing.assert_close(model(x), want[1], atol=1e-5, rtol=0)
            torch.testing.assert_close(model.residual(x), want[0], atol=1e-5, rtol=0)
        # what `derain infer` runs (fused or channels-last eager, whole and tiled) gives the same image
        torch.testing.assert_close(Derainer(model, tile=0 if i else 40)(x), want[1], atol=1e-5, rtol=0)


def test_authors_network_is_not_trivially_matched(shared_dir):
    """The reference must tell the checkpoints apart (so the parity test can fail)."""
    _, a = authors_state(shared_dir, "rain1400")
    _, b = authors_state(shared_dir, "rain200l")
    x = torch.rand(1, 3, 33, 31)
    with torch.no_grad():
        assert (authors_forward(a, x)[1] - authors_forward(b, x)[1]).abs().max() > 1e-3


# --------------------------------------------------------------------- parameter counts (TIP Table IV)

def test_parameter_count_table_iv():
    counts = RainOerMeNet().parameter_count()
    assert counts["G"] == {"weights": 51552, "with_biases": 51843}
    assert counts["g"] == {"weights": 3168, "with_biases": 3203}
    did = RainOerMeNet(detail="did").parameter_count()
    assert did["G"] == counts["G"]
    assert did["g"] == {"weights": 864, "with_biases": 883}


@pytest.mark.parametrize("name", AUTHORS)
def test_parameter_count_matches_checkpoint_tensors(shared_dir, name):
    path, sd = authors_state(shared_dir, name)
    g_weights = sum(v.numel() for k, v in sd.items() if not k.startswith("out2") and k.endswith("weight"))
    g_total = sum(v.numel() for k, v in sd.items() if not k.startswith("out2"))
    counts = RainOerMeNet.from_checkpoint(path).parameter_count()
    assert counts["G"] == {"weights": g_weights, "with_biases": g_total} == {"weights": 51552, "with_biases": 51843}


# --------------------------------------------------------------------- our checkpoints

@pytest.mark.parametrize("detail", ["rain1400", "did"])
def test_save_load_round_trip(tmp_path, detail):
    model = RainOerMeNet(detail=detail)
    for p in model.parameters():
        torch.nn.init.normal_(p, 0, 0.1)
    path = model.save(tmp_path / "run" / "model.safetensors", metadata={"iteration": 123})
    assert path == tmp_path / "run" / "model.safetensors" and path.is_file()
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["format"] == ckpt.FORMAT and meta["format_version"] == ckpt.FORMAT_VERSION
    assert meta["config"] == {"channels": 16, "dilation": 3, "detail": detail}
    assert meta["metadata"] == {"iteration": 123}
    assert meta["parameters"] == model.parameter_count()
    loaded = RainOerMeNet.from_checkpoint(path)
    assert loaded.config == model.config and not loaded.training
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    x = torch.rand(1, 3, 19, 23)
    with torch.no_grad():
        for a, b in zip(model.forward_train(x), loaded.forward_train(x)):
            assert torch.equal(a, b)
    # a folder with one checkpoint, and a lone .safetensors (config from its header) load too
    assert torch.equal(RainOerMeNet.from_checkpoint(tmp_path / "run").inc[0].weight, model.inc[0].weight)
    path.with_suffix(".json").unlink()
    assert RainOerMeNet.from_checkpoint(path).config == model.config


def test_save_to_folder_and_bad_suffix(tmp_path):
    model = RainOerMeNet()
    path = model.save(tmp_path / "out")
    assert path == tmp_path / "out" / "rain_oer_me.safetensors"
    with pytest.raises(ValueError, match="safetensors"):
        model.save(tmp_path / "model.pth")


def test_wrapped_state_dict_with_module_prefix_loads(tmp_path):
    model = RainOerMeNet(detail="did")
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, tmp_path / "w.pth")
    loaded = RainOerMeNet.from_checkpoint(tmp_path / "w.pth")
    assert loaded.config["detail"] == "did"
    assert torch.equal(loaded.outc[0].weight, model.outc[0].weight)


# --------------------------------------------------------------------- from_checkpoint errors

def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        RainOerMeNet.from_checkpoint(tmp_path / "nope.pth")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_corrupt_files(tmp_path):
    bad = tmp_path / "corrupt.pth"
    good = tmp_path / "good.pth"
    torch.save(RainOerMeNet().state_dict(), good)
    for garbage in (b"this is not a checkpoint" * 10, b"\x80\x04garbage" * 10, good.read_bytes()[:5000], b""):
        bad.write_bytes(garbage)
        with pytest.raises(ValueError, match="cannot read weights .*corrupt.pth"):
            RainOerMeNet.from_checkpoint(bad)
    path = RainOerMeNet().save(tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])     # truncated
    with pytest.raises(ValueError, match="cannot read weights .*m.safetensors"):
        RainOerMeNet.from_checkpoint(path)


def test_foreign_state_dicts(tmp_path):
    torch.save({"fc.weight": torch.zeros(2, 2), "fc.bias": torch.zeros(2)}, tmp_path / "resnet.pth")
    with pytest.raises(ValueError, match="weights of another network.*inc.0.weight"):
        RainOerMeNet.from_checkpoint(tmp_path / "resnet.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="not a state_dict"):
        RainOerMeNet.from_checkpoint(tmp_path / "list.pth")
    sd = RainOerMeNet().state_dict()
    missing = dict(sd)
    del missing["block2.conv1.dilated_conv.weight"]
    missing["extra.weight"] = torch.zeros(1)
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=r"missing keys \['block2.conv1.dilated_conv.weight'\].*"
                                         r"unexpected keys \['extra.weight'\]"):
        RainOerMeNet.from_checkpoint(tmp_path / "missing.pth")
    wrong = dict(sd)
    wrong["merge11.0.weight"] = torch.zeros(16, 16, 3, 3)
    torch.save(wrong, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match="shape mismatch.*merge11.0.weight"):
        RainOerMeNet.from_checkpoint(tmp_path / "shape.pth")


def test_bad_configs(tmp_path):
    path = RainOerMeNet().save(tmp_path / "m.safetensors")
    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "format_version": ckpt.FORMAT_VERSION + 1}))
    with pytest.raises(ValueError, match="format version"):
        RainOerMeNet.from_checkpoint(path)
    sidecar.write_text(json.dumps({**meta, "format": "something-else"}))
    with pytest.raises(ValueError, match="not a derain-kernels/rain-oer-me config"):
        RainOerMeNet.from_checkpoint(path)
    sidecar.write_text(json.dumps({**meta, "config": {**meta["config"], "depth": 5}}))
    with pytest.raises(ValueError, match=r"unknown entries: \['depth'\]"):
        RainOerMeNet.from_checkpoint(path)
    sidecar.write_text(json.dumps({**meta, "config": {**meta["config"], "detail": "bogus"}}))
    with pytest.raises(ValueError, match="detail must be"):
        RainOerMeNet.from_checkpoint(path)
    sidecar.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read the config"):
        RainOerMeNet.from_checkpoint(path)
    from safetensors.torch import save_file
    save_file(RainOerMeNet().state_dict(), str(tmp_path / "bare.safetensors"))
    with pytest.raises(ValueError, match="no config"):
        RainOerMeNet.from_checkpoint(tmp_path / "bare.safetensors")


def test_folder_with_several_checkpoints(tmp_path):
    RainOerMeNet().save(tmp_path / "a.safetensors")
    RainOerMeNet().save(tmp_path / "b.safetensors")
    with pytest.raises(ValueError, match="several checkpoints"):
        RainOerMeNet.from_checkpoint(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no weights.*empty"):
        RainOerMeNet.from_checkpoint(tmp_path / "empty")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_files_that_are_no_checkpoint_get_one_clear_error(tmp_path):
    """Each names the path and what was expected; none passes on torch's or safetensors' internals."""
    import numpy as np
    from safetensors.torch import save_file

    files = {
        "random.pth": lambda p: p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()),
        "notes.pth": lambda p: p.write_text("these are my notes\nnot weights\n"),
        "empty.pth": lambda p: p.write_bytes(b""),
        "empty.safetensors": lambda p: p.write_bytes(b""),
        "text.safetensors": lambda p: p.write_text("hello"),
        "module.pth": lambda p: torch.save(torch.nn.Linear(2, 2), p),
        "optimizer.pth": lambda p: torch.save({"lr": 0.1, "steps": [1, 2]}, p),
        "list.pth": lambda p: torch.save([torch.zeros(1)], p),
        "resnet.pth": lambda p: torch.save({"fc.weight": torch.zeros(2, 2)}, p),
        "array.pth": lambda p: np.save(open(p, "wb"), np.zeros(3)),
        "other.safetensors": lambda p: save_file({"fc.weight": torch.zeros(2, 2)}, str(p)),
        "pickle.pth": lambda p: p.write_bytes(b"\x80\x04garbage" * 10),
        "truncated.pth": lambda p: p.write_bytes((tmp_path / "good.pth").read_bytes()[:3000]),
    }
    torch.save(RainOerMeNet().state_dict(), tmp_path / "good.pth")
    for name, make in files.items():
        path = tmp_path / name
        make(path)
        with pytest.raises(ValueError) as info:
            RainOerMeNet.from_checkpoint(path)
        msg = str(info.value)
        assert msg.startswith(f"cannot read weights {str(path)!r}: "), msg
        assert "expected Rain O'er Me weights" in msg, msg
        assert "weights_only" not in msg and "pop from empty list" not in msg and "deserializ" not in msg, msg
        assert len(msg.splitlines()) == 1, msg
    # a .pth that is really a safetensors file (and the reverse) is read by content
    good = RainOerMeNet()
    saved = good.save(tmp_path / "ours.safetensors")
    (tmp_path / "renamed.pth").write_bytes(saved.read_bytes())
    assert torch.equal(RainOerMeNet.from_checkpoint(tmp_path / "renamed.pth").inc[0].weight, good.inc[0].weight)
    (tmp_path / "renamed.safetensors").write_bytes((tmp_path / "good.pth").read_bytes())
    RainOerMeNet.from_checkpoint(tmp_path / "renamed.safetensors")


def test_names_load_through_the_python_api(tmp_path, monkeypatch):
    """The command line's names work in from_checkpoint: "ours" and the authors' (here from a local mirror)."""
    from derain.models.checkpoint import packaged_weights

    ours = RainOerMeNet.from_checkpoint("ours")
    assert torch.equal(ours.inc[0].weight, RainOerMeNet.from_checkpoint(packaged_weights()).inc[0].weight)
    mirror, entries = fake_authors_mirror(tmp_path, monkeypatch)
    for name, model in entries.items():
        loaded = RainOerMeNet.from_checkpoint(name)
        assert loaded.config["detail"] == model.config["detail"]
        assert torch.equal(loaded.outc[0].weight, model.outc[0].weight)
    # a Path is always a path, even when it is spelled like a name
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="'ours'"):
        RainOerMeNet.from_checkpoint(__import__("pathlib").Path("ours"))


# --------------------------------------------------------------------- the authors' weights by name: download + cache

def fake_authors_mirror(tmp_path, monkeypatch):
    """A file:// folder laid out like the authors' repository, holding random checkpoints pinned by their
    sha256; no shared folder, an empty cache. Returns (mirror, {name: model})."""
    from derain.models import hub

    mirror = tmp_path / "mirror"
    table, models = {}, {}
    for name, detail in (("rain1400", "rain1400"), ("rain200l", "rain1400"), ("did", "did")):
        model = RainOerMeNet(detail=detail)
        rel = f"code_for_{name}/checkpoints/pretrained/latest_net_G.pth"
        (mirror / rel).parent.mkdir(parents=True)
        torch.save(model.state_dict(), mirror / rel)
        table[name] = (rel, hub.sha256_of(mirror / rel))
        models[name] = model
    monkeypatch.setattr(hub, "AUTHORS_CHECKPOINTS", table)
    monkeypatch.setenv("DERAIN_SHARED", str(tmp_path / "no-shared"))
    monkeypatch.setenv("DERAIN_WEIGHTS_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DERAIN_WEIGHTS_URL", mirror.as_uri())
    return mirror, models


def test_download_is_cached_checked_and_atomic(tmp_path, monkeypatch, capsys):
    import os
    from derain.models import hub

    mirror, models = fake_authors_mirror(tmp_path, monkeypatch)
    old_mask = os.umask(0o022)
    try:
        path = hub.authors_checkpoint("did")
    finally:
        os.umask(old_mask)
    assert path == tmp_path / "cache" / f"rain-over-me-did-{hub.AUTHORS_CHECKPOINTS['did'][1][:8]}.pth"
    assert hub.sha256_of(path) == hub.AUTHORS_CHECKPOINTS["did"][1]
    assert path.stat().st_mode & 0o777 == 0o644
    assert "downloading the authors' did checkpoint from file:" in capsys.readouterr().err
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]          # no temporary file left
    # the second use reads the cache: no download, works without the mirror
    (mirror / hub.AUTHORS_CHECKPOINTS["did"][0]).rename(tmp_path / "moved.pth")
    assert hub.authors_checkpoint("did") == path and "downloading" not in capsys.readouterr().err
    # a damaged cached file is deleted and downloaded again
    (tmp_path / "moved.pth").rename(mirror / hub.AUTHORS_CHECKPOINTS["did"][0])
    path.write_bytes(b"damaged")
    assert hub.authors_checkpoint("did") == path and hub.sha256_of(path) == hub.AUTHORS_CHECKPOINTS["did"][1]
    err = capsys.readouterr().err
    assert "damaged" in err and "downloading" in err


def test_download_with_the_wrong_content_is_deleted_and_refused(tmp_path, monkeypatch):
    from derain.models import hub

    mirror, _ = fake_authors_mirror(tmp_path, monkeypatch)
    rel, sha = hub.AUTHORS_CHECKPOINTS["rain200l"]
    torch.save(RainOerMeNet().state_dict(), mirror / rel)                    # other weights than pinned
    with pytest.raises(ValueError, match=f"not the authors' released rain200l checkpoint .*expected {sha}"):
        RainOerMeNet.from_checkpoint("rain200l")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_offline_error_names_the_url_and_where_to_put_the_file(tmp_path, monkeypatch):
    from derain.models import hub

    fake_authors_mirror(tmp_path, monkeypatch)
    monkeypatch.setenv("DERAIN_WEIGHTS_URL", (tmp_path / "unreachable").as_uri())
    with pytest.raises(hub.WeightsUnavailableError) as info:
        RainOerMeNet.from_checkpoint("rain1400")
    msg = str(info.value)
    want_url = f"{(tmp_path / 'unreachable').as_uri()}/{hub.AUTHORS_CHECKPOINTS['rain1400'][0]}"
    assert f"could not download the authors' rain1400 checkpoint from {want_url}" in msg
    assert f"save it as {hub.cache_path('rain1400')}" in msg and hub.AUTHORS_CHECKPOINTS["rain1400"][1] in msg
    assert isinstance(info.value, FileNotFoundError)
    assert not any((tmp_path / "cache").iterdir())                           # no partial file
    # placing the file by hand, as the message says, is enough
    (tmp_path / "cache" / hub.cache_path("rain1400").name).write_bytes(
        (tmp_path / "mirror" / hub.AUTHORS_CHECKPOINTS["rain1400"][0]).read_bytes())
    RainOerMeNet.from_checkpoint("rain1400")


def test_cache_folder_follows_torch_hub(tmp_path, monkeypatch):
    from derain.models import hub

    monkeypatch.delenv("DERAIN_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert hub.cache_dir() == tmp_path / "th" / "hub" / "checkpoints" / "derain"
    monkeypatch.delenv("TORCH_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_dir() == tmp_path / "xdg" / "torch" / "hub" / "checkpoints" / "derain"
    monkeypatch.setenv("DERAIN_WEIGHTS_DIR", str(tmp_path / "mine"))
    assert hub.cache_dir() == tmp_path / "mine"
    assert hub.DEFAULT_BASE_URL.startswith("https://raw.githubusercontent.com/HuangxingLin123/Rain-Over-Me/")


@pytest.mark.parametrize("name", AUTHORS)
def test_pinned_hashes_are_the_shared_checkpoints(shared_dir, name, tmp_path, monkeypatch):
    """The pinned sha256 and repository paths are those of the released files (the shared copies), and a
    mirror laid out like the repository serves them."""
    from derain.models import hub

    src = shared_dir / "weights" / "rain-over-me" / f"{name}.pth"
    if not src.is_file():
        pytest.skip(f"{src} not found")
    rel, sha = hub.AUTHORS_CHECKPOINTS[name]
    assert hub.sha256_of(src) == sha
    assert rel == {"rain1400": "code_for_Rain1400", "rain200l": "code_for_Rain200L",
                   "did": "code_for_DID_data"}[name] + "/checkpoints/pretrained/latest_net_G.pth"
    (tmp_path / "mirror" / rel).parent.mkdir(parents=True)
    (tmp_path / "mirror" / rel).write_bytes(src.read_bytes())
    monkeypatch.setenv("DERAIN_SHARED", str(tmp_path / "no-shared"))
    monkeypatch.setenv("DERAIN_WEIGHTS_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DERAIN_WEIGHTS_URL", (tmp_path / "mirror").as_uri())
    model = RainOerMeNet.from_checkpoint(name)
    assert model.config["detail"] == ("did" if name == "did" else "rain1400")
    assert hub.cache_path(name).is_file()


# --------------------------------------------------------------------- exact tiled inference

def strong_random_model(detail="rain1400"):
    """Random weights large enough that every layer matters (the N(0, 0.02) init is nearly linear)."""
    model = RainOerMeNet(detail=detail)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight, 0, 0.12)
            torch.nn.init.normal_(m.bias, 0, 0.05)
    return model.eval()


def test_receptive_radius_is_the_true_support():
    # float64: exact zeros outside the support (float32 Winograd convolutions leave ~1e-8 rounding residue)
    model = strong_random_model().double()
    r = receptive_radius(model)
    assert r == 31
    x = torch.rand(1, 3, 2 * r + 21, 2 * r + 21, dtype=torch.float64, requires_grad=True)
    c = r + 10
    model(x)[0, :, c, c].sum().backward()
    rows, cols = (x.grad.abs().sum((0, 1)) > 0).nonzero().unbind(1)
    assert c - rows.min() == r and rows.max() - c == r
    assert c - cols.min() == r and cols.max() - c == r


def test_tiled_equals_untiled_odd_size():
    model = strong_random_model()
    x = torch.rand(3, 101, 77)
    whole = Derainer(model, tile=0)(x)
    assert whole.shape == x.shape
    for tile in (24, 50):
        tiled = Derainer(model, tile=tile)
        assert len(tiled.tiles(101, 77)) > 1
        # float32 rounding only: Winograd tiles along a row start at different columns in a tile, and
        # rows near a tile's edges are computed alone instead of in row pairs
        torch.testing.assert_close(tiled(x), whole, atol=1e-4, rtol=0)
    # a halo short of the receptive radius is visibly wrong: the test can fail
    short = Derainer(model, tile=24)
    short.halo = 20
    assert (short(x) - whole).abs().max() > 1e-3


def test_auto_tiling_above_size_limit_and_batches():
    model = strong_random_model("did")
    d = Derainer(model, max_pixels=40 * 40, auto_tile=20)
    assert len(d.tiles(40, 40)) == 1           # at the limit: whole image at once
    assert len(d.tiles(45, 39)) == 6           # above: 20-pixel tiles
    assert Derainer(model).tile_size(1024, 1024) is None and Derainer(model).tile_size(1025, 1024) == 512
    x = torch.rand(2, 3, 45, 39)
    # float32 rounding only (as test_tiled_equals_untiled_odd_size)
    torch.testing.assert_close(d(x), Derainer(model, tile=0)(x), atol=1e-4, rtol=0)


def test_derainer_rejects_bad_input():
    d = Derainer(RainOerMeNet(), tile=0)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        d(torch.rand(1, 4, 8, 8))
    with pytest.raises(ValueError, match="tile"):
        Derainer(RainOerMeNet(), tile=-1)


def write_training_checkpoint(path, model, step):
    """The layout of `derain train`'s step checkpoints (derain.train.checkpoint): model.*, optim.*, rng."""
    from safetensors.torch import save_file
    tensors = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    tensors["optim.0.exp_avg"] = torch.zeros(3)
    tensors["rng.torch"] = torch.get_rng_state()
    save_file(tensors, str(path), metadata={"format": ckpt.TRAIN_FORMAT, "step": str(step),
                                            "config": json.dumps({"lr": 2e-4})})


def test_training_runs_and_their_checkpoints_load(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    old, new, final = RainOerMeNet(), RainOerMeNet(detail="did"), RainOerMeNet()
    write_training_checkpoint(run / "step_00000010.safetensors", old, 10)
    write_training_checkpoint(run / "step_00000020.safetensors", new, 20)
    loaded = RainOerMeNet.from_checkpoint(run / "step_00000010.safetensors")
    assert torch.equal(loaded.inc[0].weight, old.inc[0].weight)
    loaded = RainOerMeNet.from_checkpoint(run / "step_00000020.safetensors")
    assert loaded.config["detail"] == "did" and torch.equal(loaded.outc[0].weight, new.outc[0].weight)
    # a run without final weights is unfinished: the folder is refused, naming the files that can be used
    RainOerMeNet().save(run / "best.safetensors")
    with pytest.raises(ValueError, match=r"unfinished training run \(stopped at step 20; it has no "
                                         r"final.safetensors\).*--resume.*step_00000020.safetensors.*best.safetensors"):
        RainOerMeNet.from_checkpoint(run)
    final.save(run / "final.safetensors")
    assert torch.equal(RainOerMeNet.from_checkpoint(run).outc[0].weight, final.outc[0].weight)


# --------------------------------------------------------------------- the caller's input is checked up front

@pytest.mark.parametrize("path", ["forward", "forward_train", "residual", "fused"])
def test_bad_input_names_the_argument_and_the_callers_shape(path):
    model = RainOerMeNet().eval()
    call = {"forward": model, "forward_train": model.forward_train, "residual": model.residual,
            "fused": model.fused()}[path]
    cases = [
        (torch.rand(3, 64, 80), ValueError, r"x must be a 4-D tensor \(B, 3, H, W\), got shape \(3, 64, 80\)"),
        (torch.rand(1, 1, 3, 8, 8), ValueError, r"x must be a 4-D tensor .*got shape \(1, 1, 3, 8, 8\)"),
        (torch.rand(1, 4, 8, 8), ValueError, r"x must have 3 \(RGB\) channels.*got shape \(1, 4, 8, 8\)"),
        (torch.rand(2, 3, 0, 8), ValueError, r"x must have a height and width .*got shape \(2, 3, 0, 8\)"),
        (torch.randint(0, 255, (1, 3, 8, 8), dtype=torch.uint8), TypeError, r"x must be a floating-point .*uint8"),
        (torch.rand(1, 3, 8, 8).half(), TypeError, r"x must have dtype .*got torch.float16"),
        ([[0.5]], TypeError, r"x must be a torch.Tensor .*got list"),
    ]
    if path != "fused":     # the eager network computes in its weights' dtype (the fused one takes float64 too)
        cases.append((torch.rand(1, 3, 8, 8, dtype=torch.float64), TypeError, r"x must have dtype torch.float32 .*got torch.float64"))
    for x, exc, match in cases:
        with torch.no_grad(), pytest.raises(exc, match=match):
            call(x)
    with torch.no_grad():           # a good input still goes through, batch 0 included
        assert call(torch.rand(2, 3, 9, 7)) is not None
        assert call(torch.rand(0, 3, 9, 7)) is not None


def test_saved_weights_get_the_umasks_permissions(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = RainOerMeNet().save(tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644 and path.with_suffix(".json").stat().st_mode & 0o777 == 0o644
