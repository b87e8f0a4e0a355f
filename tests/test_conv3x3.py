"""conv3x3 (fused activation, few output channels): the C++ kernel against the reference in float64 and
float32 (AVX-512 rows for 16 float32 channels), every activation and output count, layouts, odd and
one-pixel sizes, the backward without an input gradient, NaN, determinism, ATen's path for more
output channels."""
import pytest
import torch

import derain_kernels as dk
from derain_kernels import reference as ref
from contract import CONTRACTS, contract_tests, conv_relu_params

# layouts x dtypes, gradcheck, opcheck, torch.compile, bad arguments, empty inputs: tests/contract.py
TestContract = contract_tests(CONTRACTS["conv3x3"])


def _run(fn, x, w, b, g, x_grad=True):
    leaves = [x.detach().clone().requires_grad_(x_grad), w.detach().clone().requires_grad_(),
              b.detach().clone().requires_grad_()]
    out = fn(*leaves)
    grads = torch.autograd.grad(out, [t for t in leaves if t.requires_grad], g)
    return out, grads


@pytest.mark.parametrize("activation", ["none", "relu", "tanh"])
@pytest.mark.parametrize("cin,cout,shape", [(16, 3, (2, 19, 23)), (16, 1, (1, 1, 30)), (16, 4, (3, 9, 1)),
                                            (16, 2, (1, 2, 2)), (5, 3, (2, 13, 11)), (16, 7, (1, 6, 9))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
def test_values_and_gradients_match_reference(activation, cin, cout, shape, dtype, channels_last):
    n, h, w_ = shape
    x = torch.randn(n, cin, h, w_, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w, b = conv_relu_params(cin, cout, dtype)
    g = torch.randn(n, cout, h, w_, dtype=dtype)
    out, grads = _run(lambda x, w, b: dk.conv3x3(x, w, b, activation), x, w, b, g)
    rout, rgrads = _run(lambda x, w, b: ref.conv3x3(x, w, b, activation), x.double(), w.double(), b.double(),
                        g.double())
    tol = 2e-6 if dtype == torch.float32 else 1e-12  # relative to the largest value of each tensor
    for a, r in zip([out, *grads], [rout, *rgrads]):
        assert a.dtype == dtype and a.shape == r.shape
        assert (a.double() - r).abs().max() <= tol * max(1.0, r.abs().max().item()) * 10
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert grads[0].is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@pytest.mark.parametrize("activation", ["none", "tanh"])
def test_no_input_gradient_when_x_needs_none(activation):
    torch.manual_seed(0)
    x = torch.rand(2, 16, 9, 10).contiguous(memory_format=torch.channels_last)
    w, b = conv_relu_params(16, 3)
    g = torch.randn(2, 3, 9, 10)
    _, full = _run(lambda x, w, b: dk.conv3x3(x, w, b, activation), x, w, b, g)
    _, part = _run(lambda x, w, b: dk.conv3x3(x, w, b, activation), x, w, b, g, x_grad=False)
    assert len(part) == 2 and torch.equal(part[0], full[1]) and torch.equal(part[1], full[2])
    out = dk.conv3x3(x, w, b, activation)
    gx, gw, gb = torch.ops.derain._conv3x3_backward(g, out, x, w, activation, False)
    assert gx.numel() == 0 and torch.equal(gw, full[1])


def test_nan_spreads_over_its_window_and_relu_passes_no_gradient_at_zero():
    x = torch.randn(1, 16, 7, 8)
    x[0, 3, 3, 4] = float("nan")
    for act in ("none", "relu", "tanh"):
        o = dk.conv3x3(x, *conv_relu_params(16, 3), act)
        assert torch.isnan(o[0, :, 2:5, 3:6]).all() and torch.isnan(o).sum() == 27
    xz = torch.zeros(1, 16, 5, 6, requires_grad=True)
    w = torch.randn(2, 16, 3, 3, requires_grad=True)
    out = dk.conv3x3(xz, w, torch.zeros(2), "relu")
    out.sum().backward()
    assert torch.equal(out, torch.zeros_like(out)) and torch.equal(xz.grad, torch.zeros_like(xz))


def test_deterministic_across_thread_counts():
    torch.manual_seed(1)
    x = torch.randn(3, 16, 37, 29).contiguous(memory_format=torch.channels_last)
    w, b = conv_relu_params(16, 3)
    g = torch.randn(3, 3, 37, 29)
    threads = torch.get_num_threads()
    results = []
    try:
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            out, grads = _run(lambda x, w, b: dk.conv3x3(x, w, b, "tanh"), x, w, b, g)
            results.append([out, *grads])
    finally:
        torch.set_num_threads(threads)
    for r in results[1:]:
        assert all(torch.equal(a, c) for a, c in zip(results[0], r))


def test_the_model_runs_its_output_layers_through_it():
    from derain.bench.network import eager_network
    from derain.models import RainOerMeNet

    model = RainOerMeNet()
    assert model.fused_layers and not eager_network(model).fused_layers
    calls = []
    real = torch.ops.derain.conv3x3

    class Spy:
        def __getattr__(self, name):
            return getattr(real, name)

        def __call__(self, *args):
            calls.append(args[3] if len(args) > 3 else "none")
            return real(*args)

    import derain_kernels.ops.conv3x3 as mod
    old = mod._OP
    mod._OP = Spy()
    try:
        model.forward_train(torch.rand(1, 3, 12, 12))
    finally:
        mod._OP = old
    assert calls == ["tanh", "none"]  # outc + tanh (G), out2's last convolution (g)
