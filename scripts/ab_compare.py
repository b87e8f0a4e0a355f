"""A/B check for refactors of the kernels: same bits and same speed through the public API.

Why: a refactor that moves kernel code around (e.g. splitting csrc/ops/cpu by concern) must
change no behaviour. Internal op names and settings may differ between the two commits, so this
script touches only the public Python API (`derain_kernels.*` ops, `derain.models.RainOerMeNet`
and its `.fused()` module) that both commits share.

Usage, from the root of each checkout built in place (`python setup.py build_ext --inplace`):

    PYTHONPATH=. python scripts/ab_compare.py snapshot OUT.pt       # every case's outputs and gradients
    python scripts/ab_compare.py compare OLD.pt NEW.pt               # bitwise comparison, exit 1 on a difference
    PYTHONPATH=. python scripts/ab_compare.py time OUT.json [--runs N] [--threads 2]
    python scripts/ab_compare.py ab-time OLD_ROOT NEW_ROOT [--pairs 6] [--runs N]
        # interleaved timing: one process per (tree, round), order ABAB..., then the table

Snapshot: fixed seeds per case (the case name seeds its generator, so adding a case changes no
other), float32/float64 (and float16/bfloat16/uint8 where the op takes them), odd shapes,
contiguous and channels-last inputs, forward outputs and the gradients of every input that takes
one under a fixed random upstream gradient. A case that raises records its exception type, and
the comparison reports a case that raises in one tree only.

Compare: bitwise (the tensors reinterpreted as integers, so NaN positions/payloads and -0.0 vs
+0.0 count), plus dtype, shape and strides; the max |a - b| over the finite positions is printed
for any difference.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
import zlib

if len(sys.argv) > 1 and sys.argv[1] == "snapshot":
    # torch.tanh & co. go through MKL VML, whose code path (and last bit) varies from process to
    # process on some hosts (seen on an AVX-512 Xeon: 3 different sums of one tanh); the
    # network_model cases use torch.tanh, so pin MKL's code path for the snapshots.
    os.environ.setdefault("MKL_CBWR", "COMPATIBLE")

import torch  # noqa: E402

# ----------------------------------------------------------------------------- helpers


def _gen(name: str) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(name.encode()))


def _rand(g, shape, dtype=torch.float32, lo=0.0, hi=1.0, channels_last=False):
    t = torch.rand(shape, generator=g, dtype=torch.float64) * (hi - lo) + lo
    if dtype == torch.uint8:
        t = (t * 255).round().to(torch.uint8)
    else:
        t = t.to(dtype)
    if channels_last and t.dim() == 4:
        t = t.contiguous(memory_format=torch.channels_last)
    return t


def _randn(g, shape, dtype=torch.float32, scale=1.0):
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def _run_with_grad(g, fn, inputs: dict, names_with_grad):
    """fn(**inputs) -> out; backward with a fixed random upstream gradient; returns the tensors."""
    leaves = {}
    for k, v in inputs.items():
        if k in names_with_grad and isinstance(v, torch.Tensor) and v.is_floating_point():
            v = v.detach().clone().requires_grad_(True)
            leaves[k] = v
        inputs[k] = v
    out = fn(**inputs)
    res = {"out": out.detach().clone()}
    if leaves and out.requires_grad:
        up = _randn(g, out.shape, torch.float64).to(out.dtype)
        if out.dim() == 4 and out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous():
            up = up.contiguous(memory_format=torch.channels_last)
        out.backward(up)
        for k, v in leaves.items():
            res[f"grad_{k}"] = None if v.grad is None else v.grad.detach().clone()
    return res


def _fmt(shape):
    return "x".join(str(s) for s in shape)


_DT = {torch.float32: "f32", torch.float64: "f64", torch.float16: "f16", torch.bfloat16: "bf16", torch.uint8: "u8"}

# ----------------------------------------------------------------------------- cases


def cases(dk):
    """Yields (name, thunk); thunk() returns {label: tensor}."""
    shapes = [(2, 3, 37, 53), (1, 1, 5, 7), (1, 3, 150, 170)]

    # --- median_filter / soft_label
    for shape in shapes:
        for k in (3, 5, 7, 31):
            if shape == (1, 3, 150, 170) and k in (5, 7):
                continue
            for pad in ("reflect", "replicate", "zeros"):
                for dt in (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8):
                    for cl in (False, True):
                        name = f"median_filter/{_fmt(shape)}/k{k}/{pad}/{_DT[dt]}/{'cl' if cl else 'c'}"

                        def t(shape=shape, k=k, pad=pad, dt=dt, cl=cl, name=name):
                            g = _gen(name)
                            x = _rand(g, shape, dt, channels_last=cl)
                            return _run_with_grad(g, lambda x: dk.median_filter(x, k, pad), {"x": x}, {"x"})
                        yield name, t
        # rectangular window
        name = f"median_filter/{_fmt(shape)}/k3x5/reflect/f32/c"
        yield name, (lambda shape=shape, name=name: _run_with_grad(
            _gen(name), lambda x: dk.median_filter(x, (3, 5), "reflect"), {"x": _rand(_gen(name + "x"), shape)}, {"x"}))
    # ties: quantised input (many equal values) drives the tie rule and its gradient routing
    for k in (3, 7, 31):
        for pad in ("reflect", "replicate", "zeros"):
            name = f"median_filter/ties/2x3x37x53/k{k}/{pad}/f32"

            def t(k=k, pad=pad, name=name):
                g = _gen(name)
                x = (_rand(g, (2, 3, 37, 53)) * 4).floor() / 4
                return _run_with_grad(g, lambda x: dk.median_filter(x, k, pad), {"x": x}, {"x"})
            yield name, t
    for shape in shapes[:2]:
        for k in (3, 31):
            for mc in (False, True):
                for dt in (torch.float32, torch.float64, torch.uint8):
                    name = f"soft_label/{_fmt(shape)}/k{k}/mc{int(mc)}/{_DT[dt]}"
                    yield name, (lambda shape=shape, k=k, mc=mc, dt=dt, name=name: {
                        "out": dk.soft_label(_rand(_gen(name), shape, dt), k, "reflect", min_composite=mc)})

    # --- ssim / ssim_loss
    for fn_name in ("ssim", "ssim_loss"):
        fn = getattr(dk, fn_name)
        for shape in [(2, 3, 37, 53), (1, 1, 5, 7), (1, 3, 64, 48)]:
            for pad in ("zeros", "valid", "reflect"):
                for red in ("mean", "none", "map"):
                    for dt in (torch.float32, torch.float64, torch.float16):
                        for cl in (False, True):
                            name = f"{fn_name}/{_fmt(shape)}/{pad}/{red}/{_DT[dt]}/{'cl' if cl else 'c'}"

                            def t(fn=fn, shape=shape, pad=pad, red=red, dt=dt, cl=cl, name=name):
                                g = _gen(name)
                                x = _rand(g, shape, dt, channels_last=cl)
                                y = (x.double() * 0.7 + _rand(g, shape, torch.float64) * 0.3).to(dt)
                                if cl:
                                    y = y.contiguous(memory_format=torch.channels_last)
                                return _run_with_grad(g, lambda x, y: fn(x, y, padding=pad, reduction=red),
                                                      {"x": x, "y": y}, {"x", "y"})
                            yield name, t
        # other parameters
        for kw in ({"window_size": 7, "sigma": 1.0}, {"window_size": 3, "sigma": 0.5}, {"data_range": 255.0},
                   {"k1": 0.02, "k2": 0.05}, {"window_size": 11, "sigma": 0.01}):
            for pad in ("zeros", "valid", "reflect"):
                tag = ",".join(f"{a}={b}" for a, b in kw.items())
                name = f"{fn_name}/2x3x37x53/{pad}/mean/f32/{tag}"

                def t(fn=fn, kw=kw, pad=pad, name=name):
                    g = _gen(name)
                    scale = kw.get("data_range", 1.0)
                    x = _rand(g, (2, 3, 37, 53)) * scale
                    y = _rand(g, (2, 3, 37, 53)) * scale
                    return _run_with_grad(g, lambda x, y: fn(x, y, padding=pad, reduction="none", **kw),
                                          {"x": x, "y": y}, {"x", "y"})
                yield name, t
        # identical images, constant images (zero variance)
        for what in ("identical", "constant"):
            name = f"{fn_name}/2x3x37x53/zeros/none/f32/{what}"

            def t(fn=fn, what=what, name=name):
                g = _gen(name)
                x = _rand(g, (2, 3, 37, 53)) if what == "identical" else torch.full((2, 3, 37, 53), 0.5)
                y = x.clone()
                return _run_with_grad(g, lambda x, y: fn(x, y, reduction="none"), {"x": x, "y": y}, {"x", "y"})
            yield name, t
    name = "SSIMLoss/2x3x37x53/f32"
    yield name, (lambda name=name: _run_with_grad(
        _gen(name), lambda x, y: dk.SSIMLoss()(x, y),
        {"x": _rand(_gen(name + "x"), (2, 3, 37, 53)), "y": _rand(_gen(name + "y"), (2, 3, 37, 53))}, {"x", "y"}))

    # --- composites
    for fn_name in ("min_composite", "rain_composite"):
        fn = getattr(dk, fn_name)
        for shape in shapes[:2]:
            for dt in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
                for cl in (False, True):
                    for variant in ((None,) if fn_name == "min_composite" else (True, False)):
                        name = f"{fn_name}/{_fmt(shape)}/{_DT[dt]}/{'cl' if cl else 'c'}" + (
                            "" if variant is None else f"/clamp{int(variant)}")

                        def t(fn=fn, shape=shape, dt=dt, cl=cl, variant=variant, name=name):
                            g = _gen(name)
                            a = _rand(g, shape, dt, channels_last=cl)
                            b = _rand(g, shape, dt, lo=-0.2, hi=0.9, channels_last=cl)
                            if variant is None:
                                return _run_with_grad(g, lambda x, y: fn(x, y), {"x": a, "y": b}, {"x", "y"})
                            return _run_with_grad(g, lambda clean, rain: fn(clean, rain, clamp=variant),
                                                  {"clean": a, "rain": b}, {"clean", "rain"})
                        yield name, t
        # broadcasting (rain shared over the batch)
        name = f"{fn_name}/broadcast/2x3x37x53+1x3x37x53/f32"
        yield name, (lambda fn=fn, name=name: _run_with_grad(
            _gen(name), lambda x, y: fn(x, y),
            {"x": _rand(_gen(name + "x"), (2, 3, 37, 53)), "y": _rand(_gen(name + "y"), (1, 3, 37, 53))}, {"x", "y"}))

    # --- dark channel, tv, rain direction
    for shape in shapes:
        for patch in (1, 3, 15):
            for dt in (torch.float32, torch.float64):
                for cl in (False, True):
                    name = f"dark_channel/{_fmt(shape)}/p{patch}/{_DT[dt]}/{'cl' if cl else 'c'}"
                    yield name, (lambda shape=shape, patch=patch, dt=dt, cl=cl, name=name: _run_with_grad(
                        _gen(name), lambda x: dk.dark_channel(x, patch),
                        {"x": _rand(_gen(name + "x"), shape, dt, channels_last=cl)}, {"x"}))
                    for red in ("mean", "sum", "none"):
                        name2 = f"dark_channel_loss/{_fmt(shape)}/p{patch}/{red}/{_DT[dt]}/{'cl' if cl else 'c'}"
                        yield name2, (lambda shape=shape, patch=patch, dt=dt, cl=cl, red=red, name=name2:
                                      _run_with_grad(_gen(name), lambda x: dk.dark_channel_loss(x, patch, red),
                                                     {"x": _rand(_gen(name + "x"), shape, dt, channels_last=cl)},
                                                     {"x"}))
        for p in (1, 2):
            for red in ("mean", "sum", "none"):
                for dt in (torch.float32, torch.float64):
                    for cl in (False, True):
                        name = f"tv_loss/{_fmt(shape)}/p{p}/{red}/{_DT[dt]}/{'cl' if cl else 'c'}"
                        yield name, (lambda shape=shape, p=p, red=red, dt=dt, cl=cl, name=name: _run_with_grad(
                            _gen(name), lambda x: dk.tv_loss(x, red, p),
                            {"x": _rand(_gen(name + "x"), shape, dt, channels_last=cl)}, {"x"}))
        for angle in (0.0, 30.0, 45.0, 100.0, -17.5, "tensor"):
            for red in ("mean", "sum", "none"):
                for dt in (torch.float32, torch.float64):
                    for cl in (False, True):
                        name = f"rain_direction_loss/{_fmt(shape)}/a{angle}/{red}/{_DT[dt]}/{'cl' if cl else 'c'}"

                        def t(shape=shape, angle=angle, red=red, dt=dt, cl=cl, name=name):
                            g = _gen(name)
                            z = _rand(g, shape, dt, channels_last=cl)
                            zg = _rand(g, shape, dt, channels_last=cl)
                            a = (torch.rand(shape[0], generator=g, dtype=torch.float64) * 360 - 180
                                 if angle == "tensor" else angle)
                            return _run_with_grad(g, lambda z, z_gt: dk.rain_direction_loss(z, z_gt, a, red),
                                                  {"z": z, "z_gt": zg}, {"z", "z_gt"})
                        yield name, t
    for n, size in ((18, 5), (8, 7), (4, 3)):
        for angle in (30.0, "tensor"):
            name = f"rain_direction_loss/2x3x37x53/a{angle}/n{n}/s{size}/f32"

            def t(n=n, size=size, angle=angle, name=name):
                g = _gen(name)
                z, zg = _rand(g, (2, 3, 37, 53)), _rand(g, (2, 3, 37, 53))
                a = torch.tensor([12.0, 250.0], dtype=torch.float64) if angle == "tensor" else angle
                return _run_with_grad(g, lambda z, z_gt: dk.rain_direction_loss(z, z_gt, a, "mean", n, size),
                                      {"z": z, "z_gt": zg}, {"z", "z_gt"})
            yield name, t
        for dt in (torch.float32, torch.float64):
            name = f"directional_kernels/n{n}/s{size}/{_DT[dt]}"
            yield name, (lambda n=n, size=size, dt=dt: {"out": dk.directional_kernels(n, size, dtype=dt)})

    # --- self_correcting_block: C in 16/32 (Winograd, float32) and 8 (direct); d 1,2,3 (and 5)
    bshapes = {16: [(2, 16, 67, 45), (1, 16, 5, 7), (1, 16, 64, 64)], 32: [(1, 32, 128, 128), (2, 32, 19, 23)],
               8: [(2, 8, 37, 53)]}
    for c, shs in bshapes.items():
        for shape in shs:
            for d in (1, 2, 3, 5):
                for dt in (torch.float32, torch.float64):
                    if dt == torch.float64 and shape[2] * shape[3] > 5000:
                        continue
                    for cl in (False, True):
                        for rc in (False, True):
                            if rc and (cl or dt != torch.float32):
                                continue
                            name = (f"self_correcting_block/{_fmt(shape)}/d{d}/{_DT[dt]}/{'cl' if cl else 'c'}"
                                    f"/rc{int(rc)}")

                            def t(c=c, shape=shape, d=d, dt=dt, cl=cl, rc=rc, name=name):
                                g = _gen(name)
                                x = _randn(g, shape, dt)
                                if cl:
                                    x = x.contiguous(memory_format=torch.channels_last)
                                s = 1.0 / math.sqrt(9 * c)
                                p = {"w1": _randn(g, (c, c, 3, 3), dt, s), "b1": _randn(g, (c,), dt, 0.1),
                                     "w3": _randn(g, (c, c, 3, 3), dt, s), "b3": _randn(g, (c,), dt, 0.1)}
                                return _run_with_grad(
                                    g, lambda x, w1, b1, w3, b3: dk.self_correcting_block(x, w1, b1, w3, b3, d,
                                                                                         recompute=rc),
                                    {"x": x, **p}, {"x", "w1", "b1", "w3", "b3"})
                            yield name, t

    # --- the network: fused inference and the unfused model (block op inside) with its gradients
    from pathlib import Path

    from derain.models import RainOerMeNet

    def model(kind):
        torch.manual_seed(1234)
        if kind == "default":
            return RainOerMeNet(channels=16, dilation=3)
        if kind == "random":
            m = RainOerMeNet(channels=16, dilation=3)
            g = _gen("network-weights")
            with torch.no_grad():
                for p in m.parameters():
                    fan = p[0].numel() if p.dim() > 1 else 1
                    p.copy_(_randn(g, p.shape, torch.float32, (1.0 / math.sqrt(fan)) if p.dim() > 1 else 0.05))
            return m
        root = Path(os.environ.get("AB_SHARED", Path(__file__).resolve().parents[2] / "shared"))
        return RainOerMeNet.from_checkpoint(Path(root) / "weights" / "rain-over-me" / f"{kind}.pth")

    for kind in ("default", "random", "rain1400"):
        for shape in ((1, 3, 131, 97), (1, 3, 256, 256), (2, 3, 37, 53)):
            for dt in (torch.float32, torch.float64):
                if dt == torch.float64 and shape[2] > 200:
                    continue
                for cl in (False, True):
                    if cl and shape[2] > 200:
                        continue
                    name = f"network_fused/{kind}/{_fmt(shape)}/{_DT[dt]}/{'cl' if cl else 'c'}"

                    def t(kind=kind, shape=shape, dt=dt, cl=cl, name=name):
                        f = model(kind).fused()
                        x = _rand(_gen(name), shape, dt, channels_last=cl)
                        with torch.no_grad():
                            return {"out": f(x)}
                    yield name, t
        for shape in ((1, 3, 67, 45),):
            name = f"network_model/{kind}/{_fmt(shape)}/f32"

            def t(kind=kind, shape=shape, name=name):
                m = model(kind)
                g = _gen(name)
                x = _rand(g, shape).requires_grad_(True)
                outs = m.forward_train(x)
                loss = sum((o * _randn(g, o.shape)).sum() for o in outs)
                loss.backward()
                res = {f"out{i}": o.detach().clone() for i, o in enumerate(outs)}
                res["grad_x"] = x.grad
                for k, p in m.named_parameters():
                    res[f"grad_{k}"] = p.grad
                return res
            yield name, t


# ----------------------------------------------------------------------------- snapshot / compare


def _meta(dk):
    info = dk.backend_info()
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "build": info.get("build"),
            "module": dk.__file__}
    try:
        meta["git"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                     cwd=os.path.dirname(os.path.dirname(dk.__file__))).stdout.strip()
    except OSError:
        pass
    if hasattr(dk, "config"):
        meta["config"] = dk.config.as_dict()
    meta["DERAIN_env"] = {k: v for k, v in os.environ.items() if k.startswith(("DERAIN_", "MKL_", "OMP_"))}
    return meta


def snapshot(out_path, only=None):
    import derain_kernels as dk

    torch.set_num_threads(int(os.environ.get("AB_THREADS", "2")))
    results, t0 = {}, time.time()
    n_err = 0
    for name, thunk in cases(dk):
        if only and not any(o in name for o in only.split(",")):
            continue
        try:
            res = thunk()
            results[name] = {k: (v if v is None else v.detach().clone()) for k, v in res.items()}
            results[name]["__strides__"] = {k: (None if v is None else list(v.stride())) for k, v in res.items()}
        except Exception as e:  # noqa: BLE001  (recorded: a case must raise in both trees or in neither)
            n_err += 1
            results[name] = {"__error__": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
    meta = _meta(dk)
    meta["seconds"] = round(time.time() - t0, 1)
    torch.save({"meta": meta, "results": results}, out_path)
    print(f"{len(results)} cases ({n_err} raised) in {meta['seconds']} s -> {out_path}")
    print("build flags:", (meta.get("build") or {}).get("flags"))


_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(t):
    t = t.contiguous()
    if t.dtype == torch.bool:
        return t.to(torch.uint8)
    return t.view(_INT[t.element_size()])


def _diff(a, b):
    """None if bitwise equal (dtype, shape, strides, every bit), else a description."""
    if a is None or b is None:
        return None if a is None and b is None else f"grad None in {'A' if a is None else 'B'} only"
    if a.dtype != b.dtype or a.shape != b.shape:
        return f"dtype/shape {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
    if torch.equal(_bits(a), _bits(b)):
        return None
    msg = []
    if a.is_floating_point():
        na, nb = torch.isnan(a), torch.isnan(b)
        if not torch.equal(na, nb):
            msg.append(f"NaN positions differ ({int(na.sum())} vs {int(nb.sum())})")
        fin = torch.isfinite(a) & torch.isfinite(b)
        if not torch.equal(torch.isinf(a), torch.isinf(b)):
            msg.append("inf positions differ")
        if fin.any():
            d = (a.double() - b.double()).abs()[fin]
            ref = a.double().abs()[fin].max().item()
            msg.append(f"max|a-b|={d.max().item():.3e} (max|a|={ref:.3e}), {int((d > 0).sum())}/{a.numel()} "
                       f"elements differ")
        if not msg:
            msg.append("only the bits differ (signed zeros or NaN payloads)")
    else:
        d = (a.long() - b.long()).abs()
        msg.append(f"max|a-b|={int(d.max())}, {int((d > 0).sum())}/{a.numel()} elements differ")
    return "; ".join(msg)


def compare(a_path, b_path):
    A, B = torch.load(a_path, weights_only=False), torch.load(b_path, weights_only=False)
    for tag, S in (("A", A), ("B", B)):
        m = S["meta"]
        print(f"{tag}: {m.get('git')} torch {m['torch']} flags {(m.get('build') or {}).get('flags')} "
              f"config {m.get('config')} env {m.get('DERAIN_env')}")
    ra, rb = A["results"], B["results"]
    names = list(dict.fromkeys(list(ra) + list(rb)))
    n_tensors = same = 0
    problems, both_raise = [], []
    for name in names:
        if name not in ra or name not in rb:
            problems.append((name, f"case only in {'A' if name in ra else 'B'}"))
            continue
        ea, eb = ra[name].get("__error__"), rb[name].get("__error__")
        if ea or eb:
            if ea and eb:
                both_raise.append((name, ea if ea == eb else f"A: {ea} | B: {eb}"))
            else:
                problems.append((name, f"raises in {'A' if ea else 'B'} only: {ea or eb}"))
            continue
        keys = [k for k in dict.fromkeys(list(ra[name]) + list(rb[name])) if k != "__strides__"]
        for k in keys:
            n_tensors += 1
            if k not in ra[name] or k not in rb[name]:
                problems.append((f"{name}:{k}", "output only in one"))
                continue
            d = _diff(ra[name][k], rb[name][k])
            sa, sb = ra[name]["__strides__"].get(k), rb[name]["__strides__"].get(k)
            if d is None and sa != sb:
                d = f"strides {sa} vs {sb} (values equal)"
            if d is None:
                same += 1
            else:
                problems.append((f"{name}:{k}", d))
    print(f"\n{len(names)} cases, {n_tensors} tensors compared, {same} bitwise identical, "
          f"{len(problems)} differences, {len(both_raise)} cases raise in both")
    groups = {}
    for name, e in both_raise:
        groups.setdefault(e, []).append(name)
    for e, ns in groups.items():
        print(f"  raise in both ({len(ns)}): {e}   e.g. {ns[0]}")
    for name, d in problems:
        print(f"  DIFF {name}: {d}")
    return 1 if problems else 0


# ----------------------------------------------------------------------------- timing

TIME_CASES = ("block_fwd_bwd_8x16x128x128_d3", "network_fused_1x3x512x512", "median_8x3x128x128_k3",
              "median_8x3x128x128_k31", "ssim_loss_fwd_bwd_8x3x128x128")


def _time_thunks(dk):
    from derain.models import RainOerMeNet

    g = _gen("timing")
    th = {}
    x = _randn(g, (8, 16, 128, 128)).requires_grad_(True)
    s = 1.0 / math.sqrt(9 * 16)
    w = [_randn(g, (16, 16, 3, 3), scale=s).requires_grad_(True), _randn(g, (16,), scale=0.1).requires_grad_(True),
         _randn(g, (16, 16, 3, 3), scale=s).requires_grad_(True), _randn(g, (16,), scale=0.1).requires_grad_(True)]
    up = _randn(g, (8, 16, 128, 128))

    def block():
        for t in [x] + w:
            t.grad = None
        dk.self_correcting_block(x, *w, 3).backward(up)
    th[TIME_CASES[0]] = block
    torch.manual_seed(1234)
    f = RainOerMeNet(16, 3).fused()
    xi = _rand(g, (1, 3, 512, 512))

    def net():
        with torch.no_grad():
            f(xi)
    th[TIME_CASES[1]] = net
    xm = _rand(g, (8, 3, 128, 128))
    th[TIME_CASES[2]] = lambda: dk.median_filter(xm, 3)
    th[TIME_CASES[3]] = lambda: dk.median_filter(xm, 31)
    xs = _rand(g, (8, 3, 128, 128)).requires_grad_(True)
    ys = _rand(g, (8, 3, 128, 128))

    def ssim():
        xs.grad = None
        dk.ssim_loss(xs, ys).backward()
    th[TIME_CASES[4]] = ssim
    return th


def time_cases(out_path, runs=15, warmup=3, threads=2):
    import derain_kernels as dk

    torch.set_num_threads(threads)
    res = {}
    for name, fn in _time_thunks(dk).items():
        for _ in range(warmup):
            fn()
        ts = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        res[name] = {"median_ms": statistics.median(ts) * 1e3, "min_ms": min(ts) * 1e3, "all_ms": [t * 1e3 for t in ts]}
    with open(out_path, "w") as fh:
        json.dump({"meta": {"threads": torch.get_num_threads(), "git": _meta(dk).get("git"), "module": dk.__file__,
                            "loadavg_1min": os.getloadavg()[0]}, "cases": res}, fh)


def ab_time(old_root, new_root, pairs=6, runs=15, out_dir="ab_time_out"):
    os.makedirs(out_dir, exist_ok=True)
    per = {"old": [], "new": []}
    for i in range(pairs):
        order = (("old", old_root), ("new", new_root)) if i % 2 == 0 else (("new", new_root), ("old", old_root))
        for tag, root in order:
            out = os.path.abspath(os.path.join(out_dir, f"{tag}_{i}.json"))
            env = dict(os.environ, PYTHONPATH=os.path.abspath(root), OMP_NUM_THREADS="2")
            subprocess.run([sys.executable, os.path.abspath(__file__), "time", out, "--runs", str(runs)],
                           cwd=root, env=env, check=True)
            with open(out) as fh:
                per[tag].append(json.load(fh))
            print(f"round {i} {tag}: {per[tag][-1]['meta']['git'][:7]} load {per[tag][-1]['meta']['loadavg_1min']:.2f}",
                  flush=True)
    print(f"\n{pairs} rounds (order alternating AB, BA, ...), {runs} timed runs per process after 3 warm-up runs, "
          "median per process; table: median over processes [min..max]")
    print("| case | old ms | new ms | new/old | old spread | new spread | paired ratio range |")
    print("|---|---|---|---|---|---|---|")
    for c in TIME_CASES:
        o = [r["cases"][c]["median_ms"] for r in per["old"]]
        n = [r["cases"][c]["median_ms"] for r in per["new"]]
        mo, mn = statistics.median(o), statistics.median(n)
        ratios = [b / a for a, b in zip(o, n)]
        print(f"| {c} | {mo:.2f} | {mn:.2f} | {mn / mo:.3f} | {min(o):.2f}..{max(o):.2f} | {min(n):.2f}..{max(n):.2f}"
              f" | {min(ratios):.3f}..{max(ratios):.3f} (median {statistics.median(ratios):.3f}) |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("snapshot")
    s.add_argument("out")
    s.add_argument("--only", help="comma-separated substrings of the case names to run")
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    t = sub.add_parser("time")
    t.add_argument("out")
    t.add_argument("--runs", type=int, default=15)
    t.add_argument("--threads", type=int, default=2)
    ab = sub.add_parser("ab-time")
    ab.add_argument("old_root")
    ab.add_argument("new_root")
    ab.add_argument("--pairs", type=int, default=6)
    ab.add_argument("--runs", type=int, default=15)
    ab.add_argument("--out-dir", default="ab_time_out")
    a = p.parse_args(argv)
    if a.cmd == "snapshot":
        snapshot(a.out, a.only)
    elif a.cmd == "compare":
        return compare(a.a, a.b)
    elif a.cmd == "time":
        time_cases(a.out, a.runs, threads=a.threads)
    else:
        ab_time(a.old_root, a.new_root, a.pairs, a.runs, a.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
