"""self_correcting_block: C++ and Triton kernels against the reference, gradients, layouts, compile."""
import random

import pytest
import torch

import derain_kernels as dk
from derain_kernels import reference as ref
from derain_kernels._layout import empty_like_layout
from contract import CONTRACTS, block_params as _params, block_tol as _tol, contract_tests
from helpers import layouts, needs_triton, triton_device

FLOATS = [torch.float32, torch.float64]

# layouts x dtypes, gradcheck, opcheck, torch.compile, bad arguments, empty inputs: tests/contract.py
TestContract = contract_tests(CONTRACTS["self_correcting_block"])


@pytest.mark.parametrize("channels", [1, 3, 16, 17])
@pytest.mark.parametrize("dilation", [1, 2, 3])
@pytest.mark.parametrize("dtype", FLOATS)
def test_matches_reference(channels, dilation, dtype):
    x = torch.randn(2, channels, 13, 19, dtype=dtype)
    p = _params(channels, dtype)
    out = dk.self_correcting_block(x, *p, dilation=dilation)
    assert out.shape == x.shape and out.dtype == dtype
    torch.testing.assert_close(out, ref.self_correcting_block(x, *p, dilation), **_tol(dtype))


@pytest.mark.parametrize("shape", [(1, 16, 1, 1), (1, 16, 2, 7), (3, 16, 5, 1), (1, 16, 67, 45)])
def test_odd_and_tiny_sizes(shape):
    x = torch.randn(shape)
    p = _params(16)
    torch.testing.assert_close(dk.self_correcting_block(x, *p), ref.self_correcting_block(x, *p, 3), **_tol(x.dtype))


def test_band_seams_with_many_threads():
    # one image split into several bands (one per thread): the halos must line up exactly
    x = torch.randn(1, 16, 71, 33, dtype=torch.float64)
    p = _params(16, torch.float64)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(5)
        out = dk.self_correcting_block(x, *p)
        xr = x.clone().requires_grad_()
        ref.self_correcting_block(xr, *p, 3).sum().backward()
        xo = x.clone().requires_grad_()
        dk.self_correcting_block(xo, *p).sum().backward()
    finally:
        torch.set_num_threads(old)
    torch.testing.assert_close(out, ref.self_correcting_block(x, *p, 3), **_tol(x.dtype))
    torch.testing.assert_close(xo.grad, xr.grad, **_tol(x.dtype))


@pytest.mark.parametrize("channels,dilation", [(16, 3), (3, 2), (17, 1)])
def test_gradients_match_reference(channels, dilation):
    x = torch.randn(2, channels, 12, 15, dtype=torch.float64)
    p = _params(channels, torch.float64)
    g = torch.randn_like(x)
    for name, gl in layouts(g):
        ours = [t.clone().requires_grad_() for t in (x, *p)]
        theirs = [t.clone().requires_grad_() for t in (x, *p)]
        dk.self_correcting_block(*ours, dilation=dilation).backward(gl)
        ref.self_correcting_block(*theirs, dilation).backward(g)
        for a, b, what in zip(ours, theirs, ("x", "w1", "b1", "w3", "b3")):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-10, msg=f"{what} ({name} grad)")


@pytest.mark.parametrize("channels", [3, 8, 16, 17, 24])
@pytest.mark.parametrize("dilation", [1, 2, 3, 4])
def test_float32_forward_and_gradients_wide_rows(channels, dilation):
    # float32 runs the SIMD micro-kernels: 45 columns = two 16-pixel blocks + 8 + 4 + 1 tail pixels;
    # channel counts around the 8-channel blocks of the weight gradient; dilation 4 takes the generic path
    x = torch.randn(2, channels, 9, 45).contiguous(memory_format=torch.channels_last)
    p = _params(channels)
    ours = [t.clone().requires_grad_() for t in (x, *p)]
    theirs = [t.double().requires_grad_() for t in (x, *p)]
    out = dk.self_correcting_block(*ours, dilation=dilation)
    expected = ref.self_correcting_block(*theirs, dilation)
    torch.testing.assert_close(out, expected.float(), rtol=1e-4, atol=1e-4)
    g = torch.randn(x.shape, dtype=torch.float64)
    out.backward(g.float())
    expected.backward(g)
    for a, b, what in zip(ours, theirs, ("x", "w1", "b1", "w3", "b3")):
        torch.testing.assert_close(a.grad, b.grad.float(), rtol=1e-4, atol=1e-4 * b.grad.abs().max().item(), msg=what)


def _block_grads_f32(x, p, g, dilation):
    out, la = torch.ops.derain._self_correcting_block_train(x, *p, dilation)
    return torch.ops.derain._self_correcting_block_backward_la(g, x, la, p[0], p[2], dilation)


def _block_grads_f64_same_masks(x, p, g, dilation):
    """float64 gradients (g float64) through the ReLU masks of the float32 forward of x (see below)."""
    _, la = torch.ops.derain._self_correcting_block_train(x, *p, dilation)  # la carries the final mask
    return torch.ops.derain._self_correcting_block_backward_la(g, x.double(), la.double(), p[0].double(),
                                                              p[2].double(), dilation)


def _rel_err(a, b):
    return ((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize("channels", [16, 32, 17])
@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_float32_weight_gradients_winograd_vs_direct(channels, dilation, monkeypatch):
    # float32 weight gradients run as Winograd F(4,3) tiles of 4d pixels along the row (C % 16 == 0,
    # AVX-512 builds) plus one zero-padded group for the tail; config wgrad_winograd=False forces the
    # direct kernel. Widths: tail only (W < 4d), whole groups only, groups + every tail length.
    avx512 = "avx512f" in dk.backend_info().get("build", {}).get("flags", "").split()  # how the kernels were built
    for width in (1, 3, 5, 13, 16, 29, 40, 128):
        x = torch.randn(2, channels, 6, width).contiguous(memory_format=torch.channels_last)
        p = _params(channels)
        g = torch.randn(x.shape, dtype=torch.float64)
        # float64 gradients through the same ReLU masks as the float32 forward (a pre-activation
        # within round-off of 0 may flip its mask between precisions and move a whole gradient
        # value); the float64 kernel is checked against the autograd reference above
        want = _block_grads_f64_same_masks(x, p, g, dilation)
        dk.config.wgrad_winograd = True
        wino = _block_grads_f32(x, p, g.float(), dilation)
        dk.config.wgrad_winograd = False
        direct = _block_grads_f32(x, p, g.float(), dilation)
        for k, what in ((0, "x"), (1, "w1"), (2, "b1"), (3, "w3"), (4, "b3")):
            b = want[k]
            assert _rel_err(wino[k], b) < 1e-5, (what, width, _rel_err(wino[k], b))
            assert _rel_err(direct[k], b) < 1e-5, (what, width, _rel_err(direct[k], b))
            assert _rel_err(wino[k], direct[k].double()) < 2e-5, (what, width)
        torch.testing.assert_close(wino[0], direct[0], rtol=0, atol=0)  # gx never takes the Winograd path
        if channels % 16 or not avx512:  # the direct kernel both times
            for a, b in zip(wino, direct):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
        else:  # the switch really changed the weight-gradient kernel (different rounding)
            assert not torch.equal(wino[1], direct[1]) and not torch.equal(wino[3], direct[3])


def test_float32_winograd_weight_gradients_band_seams():
    # one image in several bands (one per thread): each band sums its own Winograd points
    x = torch.randn(1, 16, 53, 37).contiguous(memory_format=torch.channels_last)
    p = _params(16)
    g = torch.randn(x.shape, dtype=torch.float64)
    want = _block_grads_f64_same_masks(x, p, g, 3)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        got = _block_grads_f32(x, p, g.float(), 3)
        torch.set_num_threads(1)
        one_band = _block_grads_f32(x, p, g.float(), 3)
    finally:
        torch.set_num_threads(old)
    for a, b, c in zip(got, want, one_band):
        assert _rel_err(a, b) < 1e-5 and _rel_err(c, b) < 1e-5


@pytest.mark.parametrize("grad_layout", ["expanded", "channels-first", "channels-last"])
def test_gradient_of_sum_any_grad_layout(grad_layout):
    # .sum().backward() hands the op a stride-0 gradient; the kernel has a separate load path for it
    x = torch.randn(2, 16, 10, 37).contiguous(memory_format=torch.channels_last)
    p = _params(16)
    ours = [t.clone().requires_grad_() for t in (x, *p)]
    theirs = [t.double().requires_grad_() for t in (x, *p)]
    out = dk.self_correcting_block(*ours)
    g = torch.full((), 0.5).expand(x.shape)
    if grad_layout == "channels-first":
        g = g.contiguous()
    elif grad_layout == "channels-last":
        g = g.contiguous(memory_format=torch.channels_last)
    out.backward(g)
    (ref.self_correcting_block(*theirs, 3).sum() * 0.5).backward()
    for a, b, what in zip(ours, theirs, ("x", "w1", "b1", "w3", "b3")):
        torch.testing.assert_close(a.grad, b.grad.float(), rtol=1e-4, atol=1e-4 * b.grad.abs().max().item(), msg=what)


def test_gradients_float32_channels_last():
    x = torch.randn(2, 16, 20, 17).contiguous(memory_format=torch.channels_last)
    p = _params(16)
    ours = [t.clone().requires_grad_() for t in (x, *p)]
    theirs = [t.clone().requires_grad_() for t in (x, *p)]
    dk.self_correcting_block(*ours).square().sum().backward()
    ref.self_correcting_block(*theirs, 3).square().sum().backward()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-4 * b.grad.abs().max().item())
    assert ours[0].grad.is_contiguous(memory_format=torch.channels_last)


def test_nan_propagates():
    x = torch.randn(1, 16, 9, 9)
    x[0, 3, 4, 4] = float("nan")
    p = _params(16)
    out = dk.self_correcting_block(x, *p)
    expected = ref.self_correcting_block(x, *p, 3)
    assert torch.isnan(out).any()
    torch.testing.assert_close(out, expected, equal_nan=True, **_tol(x.dtype))


@pytest.mark.parametrize("dilation", [10, 23, 10**9, 2**63, 10**30])
def test_dilation_beyond_the_image_is_exact_and_bounded(dilation):
    # a dilation >= max(H, W) puts every off-centre tap of the dilated convolution into the zero
    # padding: the block equals its literal formula at any such dilation (here one just past the
    # image, where torch's conv2d can still run it), with bounded memory and no int64 overflow
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    p = _params(3, torch.float64)
    w1, b1, w3, b3 = p
    d = 9 + 4
    la = torch.relu(torch.nn.functional.conv2d(x, w1, b1, padding=1))
    literal = torch.relu(torch.nn.functional.conv2d(x - la, w3, b3, padding=d, dilation=d) + la)
    for recompute in (False, True):
        leaf = x.clone().requires_grad_()
        out = dk.self_correcting_block(leaf, *p, dilation=dilation, recompute=recompute)
        torch.testing.assert_close(out, literal, rtol=1e-12, atol=1e-12)
        out.sum().backward()
        ref_leaf = x.clone().requires_grad_()
        ref.self_correcting_block(ref_leaf, *p, d).sum().backward()
        torch.testing.assert_close(leaf.grad, ref_leaf.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ref.self_correcting_block(x, *p, dilation), literal, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("recompute", [False, True])
def test_non_finite_inputs_values_and_gradients_match_reference(bad, recompute):
    # the documented rules, followed by the reference too: ReLU keeps NaN but its derivative
    # there is 0 (torch.relu would pass the gradient); IEEE arithmetic elsewhere
    for pos in [(0, 1, 2, 3), (0, 0, 0, 0), (0, 2, 5, 6), (1, 1, 3, 0)]:
        x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
        x[pos] = bad
        p = _params(3, torch.float64)
        g = torch.randn(2, 3, 6, 7, dtype=torch.float64)
        grads = []
        for impl in (lambda *a: dk.self_correcting_block(*a, dilation=2, recompute=recompute),
                     lambda *a: ref.self_correcting_block(*a, 2)):
            leaves = [t.clone().requires_grad_() for t in (x, *p)]
            out = impl(*leaves)
            out.backward(g)
            grads.append((out.detach(), *[t.grad for t in leaves]))
        for i, (got, want) in enumerate(zip(*grads)):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10, equal_nan=True,
                                       msg=lambda m: f"{bad} at {pos}, output {i}: {m}")


@pytest.mark.parametrize("channels,dilation", [(16, 3), (17, 1), (3, 2)])
def test_training_pair_matches_recomputing_backward(channels, dilation):
    # the training pair (saves la, what the function uses for training) and the plain op
    # (recomputes la in its backward; recompute=True) must give bit-identical outputs and gradients
    x = torch.randn(2, channels, 9, 21, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    p = _params(channels, torch.float64)
    out, la = torch.ops.derain._self_correcting_block_train(x, *p, dilation)
    torch.testing.assert_close(out, torch.ops.derain.self_correcting_block(x, *p, dilation), rtol=0, atol=0)
    # la: |la| = ReLU(conv(x)), sign bit set exactly where out is not > 0 (the final ReLU's mask)
    torch.testing.assert_close(la.abs(), torch.relu(torch.nn.functional.conv2d(x, p[0], p[1], padding=1)),
                               rtol=1e-12, atol=1e-12)
    assert torch.equal(torch.signbit(la), ~(out > 0)) and (out <= 0).any() and (out > 0).any()
    assert out.is_contiguous(memory_format=torch.channels_last) and la.is_contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(out)
    got = torch.ops.derain._self_correcting_block_backward_la(g, x, la, p[0], p[2], dilation)
    want = torch.ops.derain._self_correcting_block_backward(g, x, out, *p, dilation)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # autograd through both ops, and the function in both modes
    via_fn = [t.clone().requires_grad_() for t in (x, *p)]
    via_fn_recompute = [t.clone().requires_grad_() for t in (x, *p)]
    via_op = [t.clone().requires_grad_() for t in (x, *p)]
    dk.self_correcting_block(*via_fn, dilation=dilation).backward(g)
    dk.self_correcting_block(*via_fn_recompute, dilation=dilation, recompute=True).backward(g)
    torch.ops.derain.self_correcting_block(*via_op, dilation).backward(g)
    for a, b, c in zip(via_fn, via_op, via_fn_recompute):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)
        torch.testing.assert_close(c.grad, b.grad, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", FLOATS)
def test_training_pair_non_finite_and_zero_masks_like_recompute(dtype):
    # NaN / inf in x, and la == 0 where out > 0 and out <= 0 (+0.0 / -0.0 in the saved la): the
    # mask carried in la's sign bit must select exactly what out > 0 selects
    x = torch.randn(1, 16, 12, 19, dtype=dtype)
    x[0, 2, 5, 7] = float("nan")
    x[0, 9, 1, 3] = float("inf")
    p = _params(16, dtype)
    out, la = torch.ops.derain._self_correcting_block_train(x, *p, 3)
    assert torch.equal(torch.signbit(la), ~(out > 0))
    assert ((la == 0) & ~torch.signbit(la)).any() and ((la == 0) & torch.signbit(la)).any()
    g = torch.randn_like(out)
    got = torch.ops.derain._self_correcting_block_backward_la(g, x, la, p[0], p[2], 3)
    want = torch.ops.derain._self_correcting_block_backward(g, x, out, *p, 3)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def test_function_saves_la_unless_recompute():
    # with a gradient needed the function runs the training pair (la saved, no recompute in the
    # backward); recompute=True and inference run the plain op
    x = torch.randn(1, 16, 8, 9, requires_grad=True)
    p = _params(16)
    # (the nodes are the C++ autograd functions of csrc/ops/autograd/block_autograd.cpp: BlockTrain
    # saves x, la, w1, w3; Block saves x, out and the four parameters)
    out = dk.self_correcting_block(x, *p)
    assert out.grad_fn.name().endswith("::BlockTrain>")
    out = dk.self_correcting_block(x, *p, recompute=True)
    assert out.grad_fn.name().endswith("::Block>")
    with torch.no_grad():
        assert dk.self_correcting_block(x, *p).grad_fn is None
    block = dk.nn.SelfCorrectingBlock(16, recompute=True)
    assert block(x).grad_fn.name().endswith("::Block>") and "recompute=True" in repr(block)
    assert dk.nn.SelfCorrectingBlock(16)(x).grad_fn.name().endswith("::BlockTrain>")


def test_training_pair_bad_arguments():
    x = torch.randn(1, 4, 6, 6)
    p = _params(4)
    out, la = torch.ops.derain._self_correcting_block_train(x, *p, 3)
    with pytest.raises(RuntimeError, match="must have x's shape"):
        torch.ops.derain._self_correcting_block_backward_la(out, x, la[:, :, :3], p[0], p[2], 3)
    with pytest.raises(RuntimeError, match="must have x's dtype"):
        torch.ops.derain._self_correcting_block_backward_la(out, x, la.double(), p[0], p[2], 3)
    with pytest.raises(RuntimeError, match="block weights must be"):
        torch.ops.derain._self_correcting_block_backward_la(out, x, la, p[0][:2], p[2], 3)


def test_module_keys_and_semantics():
    block = dk.nn.SelfCorrectingBlock(16, dilation=3)
    assert set(block.state_dict()) == {"conv1.0.weight", "conv1.0.bias", "dilated_conv.weight", "dilated_conv.bias"}
    assert block.dilated_conv.dilation == (3, 3) and block.dilated_conv.padding == (3, 3)
    x = torch.randn(2, 16, 10, 11)
    # the authors' block, written with torch.nn modules
    conv1 = torch.nn.Sequential(block.conv1[0], torch.nn.ReLU())
    la = conv1(x)
    expected = torch.relu(block.dilated_conv(x - la) + la)
    torch.testing.assert_close(block(x), expected, **_tol(x.dtype))
    block(x).sum().backward()
    assert all(p.grad is not None for p in block.parameters())


# ---------------------------------------------------------------- Triton kernels
@needs_triton
@pytest.mark.parametrize("channels,dilation,dtype", [(16, 3, torch.float32), (3, 2, torch.float64)])
def test_triton_forward_and_backward(channels, dilation, dtype):
    from derain_kernels.triton import block as tb
    dev = triton_device()
    x = torch.randn(2, channels, 7, 9, dtype=dtype, device=dev).contiguous(memory_format=torch.channels_last)
    p = [t.to(dev) for t in _params(channels, dtype)]
    out = tb.self_correcting_block(x, *p, dilation)
    torch.testing.assert_close(out.cpu(), ref.self_correcting_block(x.cpu(), *[t.cpu() for t in p], dilation),
                               **_tol(dtype))
    assert out.is_contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(out)
    got = tb.self_correcting_block_backward(g, x, out, *p, dilation)
    want = torch.ops.derain._self_correcting_block_backward(g.cpu(), x.cpu(), out.cpu(), *[t.cpu() for t in p],
                                                           dilation)
    for a, b, what in zip(got, want, ("x", "w1", "b1", "w3", "b3")):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-4 * max(1.0, b.abs().max().item()), msg=what)
    # the training pair: (out, la) forward and the backward that reads la
    out_t, la_t = tb.self_correcting_block_train(x, *p, dilation)
    torch.testing.assert_close(out_t.cpu(), out.cpu(), **_tol(dtype))
    torch.testing.assert_close(la_t.abs().cpu(), torch.relu(torch.nn.functional.conv2d(
        x.cpu(), p[0].cpu(), p[1].cpu(), padding=1)), **_tol(dtype))
    assert torch.equal(torch.signbit(la_t), ~(out_t > 0))  # the final ReLU's mask in la's sign bit
    got = tb.self_correcting_block_backward_la(g, x, la_t, p[0], p[2], dilation)
    for a, b, what in zip(got, want, ("x", "w1", "b1", "w3", "b3")):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-4 * max(1.0, b.abs().max().item()), msg=what)


@needs_triton
@pytest.mark.parametrize("layout,channels,dilation,steps,dtype", [
    ("contiguous", 17, 1, 8, torch.float32), ("channels_last", 16, 2, 2, torch.float32),
    ("strided", 1, 3, 3, torch.float32), ("strided", 16, 3, 2, torch.float32), ("strided", 3, 2, 2, torch.float64)])
def test_triton_layouts_and_weight_gradient_chunks(monkeypatch, layout, channels, dilation, steps, dtype):
    # the Triton kernels address every operand through its strides (no layout copies): any input
    # layout, the stride-0 gradient of .sum(), outputs in x's layout; channels padded to 16 / 32 for
    # tl.dot; weight gradients summed over chunks of `steps` blocks (the last chunk partial)
    from derain_kernels.triton import block as tb
    monkeypatch.setattr(tb, "WG_STEPS", steps)
    dev = triton_device()
    base = torch.randn(1, channels, 13, 2 * 21, dtype=dtype, device=dev)
    x = {"contiguous": base.contiguous(), "channels_last": base.contiguous(memory_format=torch.channels_last),
         "strided": base[..., ::2]}[layout]
    p = [t.to(dev) for t in _params(channels, dtype)]
    cpu = [t.cpu() for t in p]
    out = tb.self_correcting_block(x, *p, dilation)
    torch.testing.assert_close(out.cpu(), ref.self_correcting_block(x.cpu(), *cpu, dilation), **_tol(dtype))
    assert out.stride() == empty_like_layout(x).stride()
    for g in (torch.full((), 0.5, dtype=dtype, device=dev).expand(x.shape),
              torch.randn(x.shape, dtype=dtype, device=dev)[..., :]):
        got = tb.self_correcting_block_backward(g, x, out, *p, dilation)
        want = torch.ops.derain._self_correcting_block_backward(g.cpu(), x.cpu(), out.cpu(), *cpu, dilation)
        for a, b, what in zip(got, want, ("x", "w1", "b1", "w3", "b3")):
            torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-4 * max(1.0, b.abs().max().item()), msg=what)
        assert got[0].stride() == out.stride()


@needs_triton
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's invalid-value warnings in the interpreter
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_triton_non_finite_inputs_land_like_reference(bad):
    # on a GPU the float32 convolutions use 3xTF32 dots, whose hi + lo split would turn an infinity
    # into NaN: tiles with an infinity take exact float32 products, so NaN and infinity land where
    # the reference puts them (under the interpreter both dot precisions are exact float32)
    from derain_kernels.triton import block as tb
    dev = triton_device()
    x = torch.randn(1, 16, 12, 48)
    x[0, 5, 6, 20] = bad
    x[0, 2, 3, 47] = bad
    p = _params(16)
    got = tb.self_correcting_block(x.to(dev), *[t.to(dev) for t in p], 3).cpu()
    exact = ref.self_correcting_block(x.double(), *[t.double() for t in p], 3)
    assert torch.equal(torch.isnan(got), torch.isnan(exact))
    assert torch.equal(torch.isinf(got), torch.isinf(exact))
    finite = torch.isfinite(exact)
    assert finite.sum() > 0.5 * finite.numel()
    torch.testing.assert_close(got[finite].double(), exact[finite], **_tol(torch.float32))


# ---- Winograd F(4,3) convolutions (float32, AVX-512 builds; config conv_winograd=False selects the direct kernels)

def _winograd_build():
    info = dk.backend_info()
    return info["cpp_extension"] and "avx512f" in info.get("build", {}).get("flags", "")


needs_winograd = pytest.mark.skipif(not _winograd_build(), reason="Winograd kernels need an AVX-512 build")


def _block_both_paths(monkeypatch, x, p, dilation):
    """(Winograd output, direct output, float64 reference) of one block call."""
    dk.config.conv_winograd = True
    wino = torch.ops.derain.self_correcting_block(x, *p, dilation)
    dk.config.conv_winograd = False
    direct = torch.ops.derain.self_correcting_block(x, *p, dilation)
    dk.config.conv_winograd = True
    exact = ref.self_correcting_block(x.double(), *[t.double() for t in p], dilation)
    return wino, direct, exact


@needs_winograd
@pytest.mark.parametrize("dilation", [1, 2, 3])
@pytest.mark.parametrize("channels,width", [(16, 3), (16, 13), (16, 16), (16, 29), (16, 40), (32, 25), (16, 128)])
def test_winograd_rounding_close_to_direct(monkeypatch, dilation, channels, width):
    # whole tiles, rows ending inside a tile (its outputs past the row are dropped), rows narrower than a tile
    x = torch.randn(2, channels, 7, width).contiguous(memory_format=torch.channels_last)
    p = _params(channels)
    wino, direct, exact = _block_both_paths(monkeypatch, x, p, dilation)
    err_w = (wino.double() - exact).abs().max().item()
    err_d = (direct.double() - exact).abs().max().item()
    scale = exact.abs().max().item()
    assert err_w <= 1e-6 * scale + 4 * err_d, (err_w, err_d, scale)
    assert not torch.equal(wino, direct)  # the two paths really differ (the switch works)


@needs_winograd
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_winograd_non_finite_inputs_land_like_direct(monkeypatch, bad):
    # a non-finite input spoils whole Winograd tiles: those tiles are recomputed directly, so NaN and
    # infinity appear exactly where direct convolution (and the reference) puts them
    x = torch.randn(1, 16, 12, 48)
    x[0, 5, 6, 20] = bad
    x[0, 2, 3, 47] = bad
    p = _params(16)
    wino, direct, exact = _block_both_paths(monkeypatch, x, p, 3)
    assert torch.equal(torch.isnan(wino), torch.isnan(direct))
    assert torch.equal(torch.isinf(wino), torch.isinf(direct))
    assert torch.equal(torch.isnan(wino), torch.isnan(exact))
    finite = torch.isfinite(direct)
    assert finite.sum() > 0.5 * finite.numel()  # the two convolutions spread each bad input over ~15x15 pixels
    torch.testing.assert_close(wino[finite], direct[finite], rtol=1e-5, atol=3e-5)


@needs_winograd
def test_winograd_backward_close_to_direct(monkeypatch):
    # the adjoint convolutions of the backward run through the same kernels
    x = torch.randn(2, 16, 9, 37).contiguous(memory_format=torch.channels_last)
    p = _params(16)
    grads = {}
    for flag in ("1", "0"):
        dk.config.conv_winograd = flag == "1"
        xs = x.clone().requires_grad_()
        ps = [t.clone().requires_grad_() for t in p]
        (dk.self_correcting_block(xs, *ps) * torch.linspace(-1, 1, 37)).sum().backward()
        grads[flag] = [xs.grad] + [t.grad for t in ps]
    xr = x.double().requires_grad_()
    pr = [t.double().requires_grad_() for t in p]
    (ref.self_correcting_block(xr, *pr, 3) * torch.linspace(-1, 1, 37, dtype=torch.float64)).sum().backward()
    for a, b, e in zip(grads["1"], grads["0"], [xr.grad] + [t.grad for t in pr]):
        err_w = (a.double() - e).abs().max().item()
        err_d = (b.double() - e).abs().max().item()
        assert err_w <= 1e-6 * e.abs().max().item() + 4 * err_d, (err_w, err_d)
    assert not torch.equal(grads["1"][0], grads["0"][0])


@needs_winograd
def test_winograd_off_past_the_cache_budget(monkeypatch):
    # very wide rows: the transformed rows would not stay in cache, so the direct kernels run
    # (bit-identical to conv_winograd=False); a narrow row of the same data takes the Winograd path
    p = _params(16)
    wide = torch.randn(1, 16, 3, 9000).contiguous(memory_format=torch.channels_last)
    wino, direct, exact = _block_both_paths(monkeypatch, wide, p, 3)
    assert torch.equal(wino, direct)
    narrow = wide[..., :64].contiguous(memory_format=torch.channels_last)
    wino, direct, exact = _block_both_paths(monkeypatch, narrow, p, 3)
    assert not torch.equal(wino, direct)


# ---- row pairs (F(2,3) along y on top of the rows' F(4,3); config conv_pairs=False computes rows alone)

def _block_pairs_and_single(monkeypatch, x, p, dilation, backward=False):
    """(row pairs, single rows, float64 reference) of one block call (outputs, or gradients of a weighted sum)."""
    g = torch.linspace(-1, 1, x.shape[-1])

    def run(dtype, f, xs, ps):
        if not backward:
            return [f(xs, *ps, dilation)]
        xs = xs.clone().requires_grad_()
        ps = [t.clone().requires_grad_() for t in ps]
        (f(xs, *ps, dilation) * g.to(dtype)).sum().backward()
        return [xs.grad] + [t.grad for t in ps]

    dk.config.conv_pairs = True
    pairs = run(torch.float32, torch.ops.derain.self_correcting_block, x, p)
    dk.config.conv_pairs = False
    single = run(torch.float32, torch.ops.derain.self_correcting_block, x, p)
    dk.config.conv_pairs = True
    exact = run(torch.float64, ref.self_correcting_block, x.double(), [t.double() for t in p])
    return pairs, single, exact


@needs_winograd
@pytest.mark.parametrize("dilation", [1, 2, 3])
@pytest.mark.parametrize("height", [1, 2, 3, 5, 6, 7, 12, 31])
def test_row_pairs_close_to_single_rows(monkeypatch, dilation, height):
    # heights shorter than a pair, odd heights (the last head has no partner), several pair blocks
    x = torch.randn(2, 16, height, 29).contiguous(memory_format=torch.channels_last)
    p = _params(16)
    (pairs,), (single,), (exact,) = _block_pairs_and_single(monkeypatch, x, p, dilation)
    err_p = (pairs.double() - exact).abs().max().item()
    err_s = (single.double() - exact).abs().max().item()
    assert err_p <= 1e-6 * exact.abs().max().item() + 2 * err_s, (err_p, err_s)
    if height > 1:  # the first convolution (d = 1) pairs rows 0 and 1: the pair path ran (other rounding)
        assert not torch.equal(pairs, single)
    else:  # a one-row image has no pairs: both switches run the same kernels
        assert torch.equal(pairs, single)


@needs_winograd
@pytest.mark.parametrize("dilation", [1, 3])
def test_row_pairs_backward_close_to_single_rows(monkeypatch, dilation):
    # the backward's recompute of la and its two adjoint convolutions run as row pairs too
    x = torch.randn(2, 16, 11, 37).contiguous(memory_format=torch.channels_last)
    p = _params(16)
    pairs, single, exact = _block_pairs_and_single(monkeypatch, x, p, dilation, backward=True)
    for a, b, e in zip(pairs, single, exact):
        err_p = (a.double() - e).abs().max().item()
        err_s = (b.double() - e).abs().max().item()
        assert err_p <= 1e-6 * e.abs().max().item() + 2 * err_s, (err_p, err_s)
    assert not torch.equal(pairs[0], single[0])


@needs_winograd
@pytest.mark.parametrize("dilation", [1, 2, 3])
@pytest.mark.parametrize("height", [1, 2, 3, 4, 5, 7, 12, 31])
def test_weight_gradient_row_pairs_close_to_single_rows(monkeypatch, dilation, height):
    # the Winograd weight gradients also accumulate rows y and y + d together (F(2,3) along y);
    # config wgrad_pairs=False accumulates rows alone. Heights without a pair, odd heights (the last
    # head has no partner) and several pair blocks, against float64 gradients through the same masks
    x = torch.randn(2, 16, height, 29).contiguous(memory_format=torch.channels_last)
    p = _params(16)
    g = torch.randn(x.shape, dtype=torch.float64)
    want = _block_grads_f64_same_masks(x, p, g, dilation)
    got = {}
    for flag in ("1", "0"):
        dk.config.wgrad_pairs = flag == "1"
        got[flag] = _block_grads_f32(x, p, g.float(), dilation)
    for k, what in ((1, "w1"), (2, "b1"), (3, "w3"), (4, "b3")):
        err_p, err_s = _rel_err(got["1"][k], want[k]), _rel_err(got["0"][k], want[k])
        assert err_p < 1e-5 and err_p <= 2 * err_s + 1e-6, (what, err_p, err_s)
    torch.testing.assert_close(got["1"][0], got["0"][0], rtol=0, atol=0)  # gx: no weight gradient involved
    # the pair kernel ran where a pair exists (other rounding): w1 (d = 1) from two rows, w3 from d + 1
    assert torch.equal(got["1"][1], got["0"][1]) == (height < 2), "w1"
    assert torch.equal(got["1"][3], got["0"][3]) == (height < dilation + 1), "w3"


@needs_winograd
def test_row_pairs_band_seams_float32():
    # one image in several bands: rows near a band's ends are computed alone, the others in the same
    # pairs as with one band; both stay within float32 round-off of the float64 reference
    x = torch.randn(1, 16, 61, 35).contiguous(memory_format=torch.channels_last)
    p = _params(16)
    exact = ref.self_correcting_block(x.double(), *[t.double() for t in p], 3)
    old = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 4):
            torch.set_num_threads(threads)
            outs.append(dk.self_correcting_block(x, *p))
    finally:
        torch.set_num_threads(old)
    for out in outs:
        torch.testing.assert_close(out.double(), exact, **_tol(torch.float32))


@pytest.mark.parametrize("layout", ["channels-last", "contiguous"])
def test_large_outputs_streamed_like_small_ones(layout):
    # outputs of 4 MiB and more are written with non-temporal stores (kStreamBytes): a batch of two
    # 2 MiB images (out, la and the gradient streamed) must equal each image run alone (plain stores);
    # one thread, so both runs take one band per image and round identically
    x = torch.randn(2, 16, 128, 256) - 0.3
    if layout == "channels-last":
        x = x.contiguous(memory_format=torch.channels_last)
    p = _params(16)
    g = torch.randn_like(x)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        big = _block_grads_f32(x, p, g, 3)
        big_out, big_la = torch.ops.derain._self_correcting_block_train(x, *p, 3)
        for i in range(2):
            small = _block_grads_f32(x[i:i + 1], p, g[i:i + 1], 3)
            out, la = torch.ops.derain._self_correcting_block_train(x[i:i + 1], *p, 3)
            assert torch.equal(big_out[i:i + 1], out) and torch.equal(big_la[i:i + 1], la)
            assert torch.equal(big[0][i:i + 1], small[0]), "gx"
    finally:
        torch.set_num_threads(old)
    assert big_out.is_contiguous(memory_format=torch.channels_last) == (layout == "channels-last")
    exact = ref.self_correcting_block(x.double(), *[t.double() for t in p], 3)
    torch.testing.assert_close(big_out.double(), exact, **_tol(torch.float32))


def _bits(t):
    return t.contiguous().view(torch.int32)


@pytest.mark.parametrize("shape", [(1, 16, 19, 23), (2, 16, 128, 256)])  # plain stores; 4 MiB: streamed
def test_fused_epilogues_match_scalar_loops(monkeypatch, shape):
    # the one-pass AVX-512 epilogues (the final ReLU writing out and la with the mask in its sign bit,
    # the plain forward's final ReLU, the input gradient's add) against the scalar loops they replace
    # (config fused_epilogues=False): the same bits, NaN, infinities and zeros included
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    x[0, 2, 3, :] = 0.0
    x[0, 5, 7, 4] = float("nan")
    x[-1, 1, 10, 10] = float("inf")
    x[-1, 9, 12, 3] = -float("inf")
    p = _params(16)
    g = torch.randn_like(x)

    def run():
        out, la = torch.ops.derain._self_correcting_block_train(x, *p, 3)
        grads = torch.ops.derain._self_correcting_block_backward_la(g, x, la, p[0], p[2], 3)
        return [out, la, torch.ops.derain.self_correcting_block(x, *p, 3), *grads]

    dk.config.fused_epilogues = False
    scalar = run()
    dk.config.fused_epilogues = True
    fused = run()
    assert torch.isnan(fused[0]).any() and (fused[1] == 0).any() and torch.signbit(fused[1]).any()
    for a, b in zip(scalar, fused):
        assert torch.equal(_bits(a), _bits(b))


@pytest.mark.parametrize("channels", [16, 32])
def test_backward_reads_saved_la_in_place_like_from_rings(channels):
    # with la saved in dense channels-last rows the backward reads its mask (|la| > 0) straight from
    # the tensor; any other layout of la goes through ring rows of |la|: the same bits either way,
    # zeros, -0 (the final ReLU's mask on a zero la), NaN and infinities included
    torch.manual_seed(1)
    x = torch.randn(2, channels, 21, 26).contiguous(memory_format=torch.channels_last)
    x[0, 1, 4, :] = float("nan")
    x[1, 2, 9, 3] = float("inf")
    p = _params(channels)
    g = torch.randn_like(x)
    _, la = torch.ops.derain._self_correcting_block_train(x, *p, 3)
    assert la.is_contiguous(memory_format=torch.channels_last)
    assert (la == 0).any() and torch.signbit(la).any() and torch.isnan(la).any()
    direct = torch.ops.derain._self_correcting_block_backward_la(g, x, la, p[0], p[2], 3)
    rings = torch.ops.derain._self_correcting_block_backward_la(g, x, la.contiguous(), p[0], p[2], 3)
    for a, b in zip(direct, rings):
        assert torch.equal(_bits(a), _bits(b))


def test_output_cache_reuses_freed_buffers(monkeypatch, tmp_path):
    # outputs of >= 1 MiB reuse the buffers of freed outputs of the same size (no fresh pages to
    # fault in every training step); values, layout and ordinary tensor use are unaffected
    x = torch.randn(2, 16, 96, 96).contiguous(memory_format=torch.channels_last)  # 1.1 MiB
    p = _params(16)
    dk.empty_output_cache()
    dk.config.output_cache_mb = 64
    first = dk.self_correcting_block(x, *p)
    ptr, expected = first.data_ptr(), first.clone()
    del first
    again = dk.self_correcting_block(x, *p)
    assert again.data_ptr() == ptr and torch.equal(again, expected)
    assert again.is_contiguous(memory_format=torch.channels_last)
    torch.save(again, tmp_path / "out.pt")
    assert torch.equal(torch.load(tmp_path / "out.pt"), expected)
    xs = x.clone().requires_grad_()
    dk.self_correcting_block(xs, *p).sum().backward()  # the gradient too comes from the cache
    dk.self_correcting_block(xs, *p).sum().backward()  # and accumulates in place
    ref_x = x.double().requires_grad_()
    ref.self_correcting_block(ref_x, *[t.double() for t in p], 3).sum().backward()
    torch.testing.assert_close(xs.grad.double(), 2 * ref_x.grad, rtol=1e-4, atol=1e-4 * ref_x.grad.abs().max().item())
    del again, xs
    assert dk.empty_output_cache() >= x.numel() * 4 * 2  # the output and the gradient were kept
    assert dk.empty_output_cache() == 0
    # small outputs, and everything with the cache off, come from torch's allocator
    dk.config.output_cache_mb = 0
    del expected
    out = dk.self_correcting_block(x, *p)
    del out
    assert dk.empty_output_cache() == 0
    dk.config.output_cache_mb = 64
    out = dk.self_correcting_block(x[:, :, :8], *p)  # 64 KiB
    del out
    assert dk.empty_output_cache() == 0


def test_output_cache_bounded_and_evicts_the_oldest(monkeypatch):
    # at most config output_cache_mb MiB are kept; a freed buffer of a new size evicts the least
    # recently freed ones, and is the one handed back for that size
    p = _params(16)
    small = torch.randn(2, 16, 96, 96).contiguous(memory_format=torch.channels_last)   # 1.125 MiB out
    large = torch.randn(2, 16, 96, 128).contiguous(memory_format=torch.channels_last)  # 1.5 MiB out
    dk.empty_output_cache()
    dk.config.output_cache_mb = 3
    a, b = dk.self_correcting_block(small, *p), dk.self_correcting_block(small, *p)
    del a, b  # two 1.125 MiB buffers kept (2.25 MiB)
    c = dk.self_correcting_block(large, *p)
    c_ptr = c.data_ptr()
    del c  # 1.5 MiB more would pass 3 MiB: the oldest small buffer goes
    again = dk.self_correcting_block(large, *p)
    assert again.data_ptr() == c_ptr
    torch.testing.assert_close(again, ref.self_correcting_block(large, *p, 3), **_tol(torch.float32))
    del again
    assert dk.empty_output_cache() == small.numel() * 4 + large.numel() * 4
    dk.config.output_cache_mb = 1  # smaller than one output: nothing kept
    out = dk.self_correcting_block(large, *p)
    del out
    assert dk.empty_output_cache() == 0


@pytest.mark.parametrize("seed", range(40))
def test_random_configurations_float32(seed):
    # seeded random mixes of what the targeted tests above vary one at a time: batch, channels (row
    # kernels, Winograd 16/32, padded 17), odd sizes down to 1, dilations 1-4, thread counts 1-4 (one
    # band per image or several), layouts, weight scales; the forward and all five gradients of the
    # training pair against float64 through the float32 forward's ReLU masks (gradients) and the
    # float64 reference (forward); the float64 kernel's gradients against autograd through the reference
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    old = torch.get_num_threads()
    try:
        for _ in range(8):
            n, c = rng.choice([1, 1, 2, 3]), rng.choice([1, 3, 16, 16, 17, 32])
            h, w, d = rng.randint(1, 40), rng.randint(1, 60), rng.choice([1, 2, 3, 3, 4])
            torch.set_num_threads(rng.choice([1, 2, 3, 4]))
            scale = rng.choice([0.05, 0.25, 1.0])
            p = [t * scale for t in (torch.randn(c, c, 3, 3, generator=gen), torch.randn(c, generator=gen),
                                     torch.randn(c, c, 3, 3, generator=gen), torch.randn(c, generator=gen))]
            x0 = torch.rand(n, c, h, w, generator=gen) - 0.3
            name, x = list(layouts(x0))[rng.randrange(4)]
            g = torch.randn(x.shape, generator=gen, dtype=torch.float64)
            what = f"N={n} C={c} H={h} W={w} d={d} threads={torch.get_num_threads()} {name} scale={scale}"
            out, _ = torch.ops.derain._self_correcting_block_train(x, *p, d)
            exact = ref.self_correcting_block(x.double(), *[t.double() for t in p], d)
            torch.testing.assert_close(out.double(), exact, rtol=1e-5, atol=3e-5 * max(1.0, exact.abs().max().item()),
                                       msg=what)
            want = _block_grads_f64_same_masks(x, p, g, d)
            # the float64 kernel (which shares the band schedule) against autograd through the reference
            xr = x.double().requires_grad_()
            pr = [t.double().requires_grad_() for t in p]
            ref.self_correcting_block(xr, *pr, d).backward(g)
            with torch.no_grad():
                la64 = torch.ops.derain._self_correcting_block_train(x.double(), *pr, d)[1]
                mine = torch.ops.derain._self_correcting_block_backward_la(g, x.double(), la64, pr[0], pr[2], d)
            for a, b, k in zip(mine, [xr.grad] + [t.grad for t in pr], ("gx", "gw1", "gb1", "gw3", "gb3")):
                torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * max(1.0, b.abs().max().item()),
                                           msg=f"float64 {k}: {what}")
            got = _block_grads_f32(x, p, g.float(), d)
            for a, b, k in zip(got, want, ("gx", "gw1", "gb1", "gw3", "gb3")):
                torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=3e-5 * max(1.0, b.abs().max().item()),
                                           msg=f"{k}: {what}")
    finally:
        torch.set_num_threads(old)
