"""Bench cases of the fused self-correcting block and of the fused network inference.

`derain bench --only block` runs them through the shared harness (one contender
after the other). `python -m derain.bench.block` runs the same contenders
interleaved (round-robin, medians), which is fairer on a contended machine, and
also reports GFLOP/s against a float32 matmul measured in the same loop and the
paired ratio (median and quartiles over rounds of each round's ratio), the
steadier figure on a noisy host.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import derain_kernels as dk
from derain.models.rain_oer_me import RainOerMeNet

from .harness import Case, Contender, on_device

BLOCK_SHAPES = [(8, 16, 128, 128), (1, 16, 512, 512)]
NET_SHAPE = (1, 3, 512, 512)
NET_MACS_PER_PIXEL = 51_552  # 27 GFLOP per 512x512 image (docs/method.md#parameters-and-compute)


def eager_block(x, w1, b1, w3, b3, dilation=3):
    """The authors' block in plain PyTorch (what users run today)."""
    la = F.relu(F.conv2d(x, w1, b1, padding=1))
    return F.relu(F.conv2d(x - la, w3, b3, padding=dilation, dilation=dilation) + la)


def block_flops(shape, backward=False) -> float:
    n, c, h, w = shape
    fwd = 2 * 2 * 9 * c * c * n * h * w
    return fwd * 3 if backward else fwd  # backward: input and weight gradients of both convs


def _block_params(c=16):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(c, c, 3, 3, generator=g) * 0.1, torch.randn(c, generator=g) * 0.1,
            torch.randn(c, c, 3, 3, generator=g) * 0.1, torch.randn(c, generator=g) * 0.1]


def _fwd_bwd(f, x, params):
    def run():
        xs = x.detach().requires_grad_()
        ps = [p.detach().requires_grad_() for p in params]
        f(xs, *ps).sum().backward()
    return run


def _no_grad(f, *args):
    def run():
        with torch.no_grad():
            return f(*args)
    return run


def block_contenders(shape, backward: bool, device: str = "cpu") -> list[Contender]:
    x = (torch.rand(shape) - 0.3).to(device)
    xcl = x.contiguous(memory_format=torch.channels_last)
    p = [t.to(device) for t in _block_params(shape[1])]
    pcl = [t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t for t in p]
    if backward:
        out = [
            Contender("derain_kernels", lambda: _fwd_bwd(dk.self_correcting_block, xcl, p), ours=True),
            Contender("eager contiguous", lambda: _fwd_bwd(eager_block, x, p)),
            Contender("eager channels-last", lambda: _fwd_bwd(eager_block, xcl, pcl)),
        ]
    else:
        out = [
            Contender("derain_kernels", lambda: _no_grad(dk.self_correcting_block, xcl, *p), ours=True),
            Contender("eager contiguous", lambda: _no_grad(eager_block, x, *p)),
            Contender("eager channels-last", lambda: _no_grad(eager_block, xcl, *pcl)),
        ]
    return out + (_gpu_variants(xcl, p, backward) if device != "cpu" else [])


def _gpu_variants(xcl, p, backward: bool) -> list[Contender]:
    """Our other CUDA paths, for the A/B of the block's GPU kernels: the compiled op with ATen's
    element-wise epilogues instead of cuDNN's fused ones, and the Triton tensor-core kernels."""
    def aten_epilogues():
        run = _fwd_bwd(dk.self_correcting_block, xcl, p) if backward else _no_grad(dk.self_correcting_block, xcl, *p)

        def run_without_fusion():
            with dk.config.override(fused_epilogues=False):
                return run()
        return run_without_fusion

    def triton_kernels():
        from derain_kernels.triton import block as tb
        if not backward:
            return _no_grad(tb.self_correcting_block, xcl, *p)
        g = torch.ones_like(xcl)

        def run():
            with torch.no_grad():
                _, la = tb.self_correcting_block_train(xcl, *p)
                return tb.self_correcting_block_backward_la(g, xcl, la, p[0], p[2])
        return run

    out = [Contender("derain_kernels ATen epilogues", aten_epilogues)]
    try:  # a dependency, but a CUDA machine may lack it
        import triton  # noqa: F401
        out.append(Contender("derain_kernels Triton tensor cores", triton_kernels))
    except ImportError:
        pass
    return out


def _network(seed=0):
    torch.manual_seed(seed)
    return RainOerMeNet().eval()


def _eager_network(model, channels_last):
    from derain.models.rain_oer_me import fused_params
    from derain_kernels.reference import rain_oer_me_derain

    sd = {k: (v.contiguous(memory_format=torch.channels_last) if channels_last and v.dim() == 4 else v)
          for k, v in model.state_dict().items()}
    params = fused_params(sd)
    return lambda x: rain_oer_me_derain(x, params)


def network_contenders(with_compile: bool = True, shape=NET_SHAPE) -> list[Contender]:
    model = _network()
    x = torch.rand(shape)
    xcl = x.contiguous(memory_format=torch.channels_last)
    out = [
        Contender("derain_kernels fused", lambda: _no_grad(model.fused(), x), ours=True,
                  note="the same image every call (Table IV: the mean over distinct images)"),
        Contender("eager contiguous", lambda: _no_grad(_eager_network(model, False), x)),
        Contender("eager channels-last", lambda: _no_grad(_eager_network(model, True), xcl)),
    ]
    if with_compile:
        def compiled(channels_last):
            f = torch.compile(_eager_network(model, channels_last))
            call = _no_grad(f, xcl if channels_last else x)
            call()  # compiles: counted as setup time (the harness's setup_s), not as inference time
            return call
        out.append(Contender("torch.compile contiguous", lambda: compiled(False), note="compile time = setup"))
        out.append(Contender("torch.compile channels-last", lambda: compiled(True), note="compile time = setup"))
    return out


def eager_conv_relu(x, w, b, x2=None):
    """A convolution + ReLU layer over cat(x, x2) in plain PyTorch (the network's aggregations)."""
    return F.relu(F.conv2d(x if x2 is None else torch.cat([x, x2], 1), w, b, padding=1))


def conv_relu_contenders(shape, backward: bool, device: str = "cpu") -> list[Contender]:
    """conv3x3_relu over two maps of `shape` (a 2C -> C aggregation) against eager cat + conv + ReLU."""
    g = torch.Generator().manual_seed(1)
    c = shape[1]
    x, x2 = (torch.rand(shape, generator=g).to(device) - 0.3 for _ in range(2))
    w = (torch.randn(c, 2 * c, 3, 3, generator=g) * 0.1).to(device)
    b = (torch.randn(c, generator=g) * 0.1).to(device)
    cl = [t.contiguous(memory_format=torch.channels_last) for t in (x, x2)]
    wcl = w.contiguous(memory_format=torch.channels_last)

    def run(f, a, a2, weight):
        if not backward:
            return _no_grad(f, a, weight, b, a2)

        def step():
            ins = [t.detach().requires_grad_() for t in (a, weight, b, a2)]
            f(*ins).sum().backward()
        return step
    return [
        Contender("derain_kernels", lambda: run(dk.conv3x3_relu, cl[0], cl[1], w), ours=True),
        Contender("eager contiguous", lambda: run(eager_conv_relu, x, x2, w)),
        Contender("eager channels-last", lambda: run(eager_conv_relu, cl[0], cl[1], wcl)),
    ]


def eager_conv_tanh(x, w, b):
    """A network's output layer in plain PyTorch: tanh(conv2d(x)) to 3 channels."""
    return torch.tanh(F.conv2d(x, w, b, padding=1))


def conv_out_contenders(shape, backward: bool, device: str = "cpu") -> list[Contender]:
    """conv3x3(..., "tanh") from `shape` to 3 channels (the network's output layer) against eager conv + tanh."""
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(shape, generator=g) - 0.3).to(device)
    w = (torch.randn(3, shape[1], 3, 3, generator=g) * 0.1).to(device)
    b = (torch.randn(3, generator=g) * 0.1).to(device)
    xcl = x.contiguous(memory_format=torch.channels_last)
    wcl = w.contiguous(memory_format=torch.channels_last)

    def run(f, a, weight):
        if not backward:
            return _no_grad(f, a, weight, b)

        def step():
            ins = [t.detach().requires_grad_() for t in (a, weight, b)]
            f(*ins).sum().backward()
        return step
    return [
        Contender("derain_kernels", lambda: run(lambda a, w_, b_: dk.conv3x3(a, w_, b_, "tanh"), xcl, w), ours=True),
        Contender("eager contiguous", lambda: run(eager_conv_tanh, x, w)),
        Contender("eager channels-last", lambda: run(eager_conv_tanh, xcl, wcl)),
    ]


def cases(quick: bool = False, smoke: bool = False, device: str = "cpu") -> list[Case]:
    """smoke: tiny block and network inputs, no torch.compile, to check that every contender runs.

    device "cuda": the block cases only (our Triton kernels vs cuDNN); the network's fused
    path is a CPU kernel (the CUDA network is in Table IV, `--only network`).
    """
    out = []
    block_shapes = [(2, 16, 20, 18)] if smoke else BLOCK_SHAPES[:1] if quick else BLOCK_SHAPES
    net_shape = (1, 3, 40, 36) if smoke else NET_SHAPE
    for shape in block_shapes:
        s = "x".join(map(str, shape))
        out.append(Case("self_correcting_block", "forward", s, block_contenders(shape, False, device)))
        out.append(Case("self_correcting_block", "forward+backward", s, block_contenders(shape, True, device)))
    for shape in block_shapes[:1]:  # the network's 32 -> 16 aggregation over two maps
        s = "x".join(map(str, shape)) + " (x2)"
        out.append(Case("conv3x3_relu", "forward", s, conv_relu_contenders(shape, False, device)))
        out.append(Case("conv3x3_relu", "forward+backward", s, conv_relu_contenders(shape, True, device)))
    for shape in block_shapes[:1]:  # the network's output layer: 16 -> 3, tanh
        s = "x".join(map(str, shape)) + " -> 3, tanh"
        out.append(Case("conv3x3", "forward", s, conv_out_contenders(shape, False, device)))
        out.append(Case("conv3x3", "forward+backward", s, conv_out_contenders(shape, True, device)))
    if device != "cpu":
        return on_device(out, device)
    skip_compile = quick or smoke
    out.append(Case("rain_oer_me network", "inference", "x".join(map(str, net_shape)),
                    network_contenders(with_compile=not skip_compile, shape=net_shape),
                    missing=["torch.compile (skipped in --quick)"] if skip_compile else []))
    return out


# ---------------------------------------------------------------- interleaved run
def interleaved(groups, repeats: int, warmup: int = 2, clock=time.perf_counter):
    """Times every contender of every group round-robin; returns {group: {name: [ms...]}}.

    clock=time.thread_time measures the CPU time of the calling thread (with one torch
    thread all the work runs there): insensitive to other processes sharing the cores.
    """
    fns = {g: {c.name: c.make() for c in cs} for g, cs in groups.items()}
    for g in fns:
        for f in fns[g].values():
            for _ in range(warmup):
                f()
    times = {g: {n: [] for n in fns[g]} for g in fns}
    for _ in range(repeats):
        for g in fns:
            for n, f in fns[g].items():
                t0 = clock()
                f()
                times[g][n].append((clock() - t0) * 1e3)
    return times


def paired_ratio(ours: list[float], theirs: list[float]) -> tuple[float, float, float]:
    """(median, first quartile, third quartile) over rounds of theirs[i] / ours[i].

    Both times of a round were taken moments apart, so a change of the machine's speed between
    rounds cancels in the ratio: on a noisy host it is steadier than the ratio of the medians.
    """
    if not ours or len(ours) != len(theirs):
        raise ValueError("paired_ratio needs two equally long, non-empty lists of times")
    r = [t / o for o, t in zip(ours, theirs)]
    if len(r) == 1:
        return r[0], r[0], r[0]
    q1, q2, q3 = statistics.quantiles(r, n=4, method="inclusive")
    return q2, q1, q3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--only", choices=["block", "network"], default=None)
    ap.add_argument("--cpu-time", action="store_true",
                    help="one thread, CPU time of the calling thread instead of wall-clock time")
    args = ap.parse_args(argv)
    if args.cpu_time:
        torch.set_num_threads(1)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    # The matmul ceiling is timed on its own, before the contenders: inside the round-robin, the
    # BLAS threads it wakes keep spinning for a while and steal the cores of the next contenders'
    # threads (2-thread wall-clock figures of every contender came out 2-3x too slow).
    mm_times = interleaved({"mm": [Contender("torch.mm", lambda: (lambda: a @ b))]}, args.repeats,
                           clock=time.thread_time if args.cpu_time else time.perf_counter)["mm"]["torch.mm"]
    time.sleep(0.5)
    groups = {}
    if args.only in (None, "block"):
        for shape in BLOCK_SHAPES:
            s = "x".join(map(str, shape))
            groups[f"block forward {s}"] = block_contenders(shape, False)
            groups[f"block forward+backward {s}"] = block_contenders(shape, True)
    if args.only in (None, "network"):
        groups[f"network inference {'x'.join(map(str, NET_SHAPE))}"] = network_contenders(not args.no_compile)
    times = interleaved(groups, args.repeats, clock=time.thread_time if args.cpu_time else time.perf_counter)
    mm = statistics.median(mm_times)
    ceiling = 2 * 2048 ** 3 / mm / 1e6
    clock = "CPU time of one thread" if args.cpu_time else "wall-clock"
    print(f"{clock}, threads {torch.get_num_threads()}, repeats {args.repeats}; matmul ceiling {ceiling:.0f} GFLOP/s "
          f"({mm:.1f} ms)\n")
    print("| case | implementation | median ms | min..max | GFLOP/s | % of matmul | ours faster by | paired (IQR) |")
    print("|---|---|---:|---|---:|---:|---:|---:|")
    for g, res in times.items():
        if g.startswith("network"):
            n, _, h, w = NET_SHAPE
            flops = 2 * NET_MACS_PER_PIXEL * n * h * w
        else:
            shape = tuple(int(v) for v in g.split()[-1].split("x"))
            flops = block_flops(shape, backward="backward" in g)
        ours_ts = next(iter(res.values()))
        ours = statistics.median(ours_ts)
        for name, ts in res.items():
            med = statistics.median(ts)
            gf = flops / med / 1e6
            ratio = paired = ""
            if ts is not ours_ts:
                ratio = f"{med / ours:.2f}×"
                pm, q1, q3 = paired_ratio(ours_ts, ts)
                paired = f"{pm:.2f}× ({q1:.2f}..{q3:.2f})"
            print(f"| {g} | {name} | {med:.1f} | {min(ts):.1f}..{max(ts):.1f} | {gf:.0f} | "
                  f"{100 * gf / ceiling:.0f}% | {ratio} | {paired} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
