"""conv3x3_relu: the C++ kernel (the block's convolution engine) against the reference, cat-free
inputs, float32 error bounds, layouts, the ReLU's mask, NaN."""
import pytest
import torch

import derain_kernels as dk
from derain_kernels import reference as ref
from contract import CONTRACTS, contract_tests, conv_relu_params

# layouts x dtypes, gradcheck, opcheck, torch.compile, bad arguments, empty inputs: tests/contract.py
TestContract = contract_tests(CONTRACTS["conv3x3_relu"])


def _grads(fn, inputs, g):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    return out, torch.autograd.grad(out, leaves, g)


# the network's layers (3 -> 16 input conv, 32 -> 16 aggregations over two maps, the detail block's
# 16 -> 16) and odd channel counts, odd sizes, a single row / column
@pytest.mark.parametrize("c1,c2,cout,shape", [(3, 0, 16, (2, 19, 23)), (16, 16, 16, (2, 21, 17)),
                                              (16, 0, 16, (1, 33, 40)), (5, 7, 9, (3, 9, 11)),
                                              (16, 16, 16, (1, 1, 30)), (3, 2, 4, (2, 13, 1))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_values_and_all_gradients_match_reference(c1, c2, cout, shape, dtype):
    n, h, w = shape
    x = torch.randn(n, c1, h, w, dtype=dtype)
    x2 = torch.randn(n, c2, h, w, dtype=dtype) if c2 else None
    wt, b = conv_relu_params(c1 + c2, cout, dtype)
    ins = [x, wt, b] + ([x2] if c2 else [])
    g = torch.randn(n, cout, h, w, dtype=dtype)
    out, grads = _grads(lambda x, w, b, *x2: dk.conv3x3_relu(x, w, b, *x2), ins, g)
    rout, rgrads = _grads(lambda x, w, b, *x2: ref.conv3x3_relu(x, w, b, *x2), [t.double() for t in ins], g.double())
    # float32: Winograd F(4,3) rows where the engine has them (16 or 32 input channels) round about
    # 1.5x more than direct summation; relative to the largest value of each tensor
    tol = 2e-6 if dtype == torch.float32 else 1e-12
    for a, r in zip([out, *grads], [rout, *rgrads]):
        assert a.dtype == dtype and a.shape == r.shape
        assert (a.double() - r).abs().max() <= tol * max(1.0, r.abs().max().item()) * 10


def test_relu_mask_zero_and_nan():
    # ReLU(0) passes no gradient (as torch.relu); a NaN input spreads NaN over its 3x3 neighbourhood
    x = torch.zeros(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    w, b = conv_relu_params(2, 3, torch.float64)
    out = dk.conv3x3_relu(x, w, torch.zeros(3, dtype=torch.float64))
    out.sum().backward()
    assert torch.equal(out, torch.zeros_like(out)) and torch.equal(x.grad, torch.zeros_like(x))
    xn = torch.randn(1, 2, 7, 8)
    xn[0, 1, 3, 4] = float("nan")
    o = dk.conv3x3_relu(xn, *conv_relu_params(2, 3))
    assert torch.isnan(o[0, :, 2:5, 3:6]).all() and torch.isnan(o).sum() == 27


@pytest.mark.parametrize("detail,shape", [("rain1400", (2, 3, 20, 22)), ("did", (1, 3, 23, 17)),
                                          ("rain1400", (3, 3, 9, 31))])
def test_the_model_runs_its_layers_through_it_and_the_plain_layers_agree(detail, shape):
    """The training path (forward_train, fused layers and blocks) against autograd through the plain model:
    every output and every parameter's gradient, both detail variants, odd sizes."""
    from derain.bench.network import eager_network
    from derain.models import RainOerMeNet

    torch.manual_seed(0)
    model = RainOerMeNet(detail=detail).train()
    plain = eager_network(model)
    assert model.inc.fused_op and not plain.inc.fused_op and not plain.fused_layers
    assert callable(plain.fused)  # the model's method, untouched
    x = torch.rand(shape)
    for a, b in zip(model.forward_train(x), plain.forward_train(x)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    sum(o.square().mean() for o in model.forward_train(x)).backward()
    sum(o.square().mean() for o in plain.forward_train(x)).backward()
    for (name, p), q in zip(model.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-7, msg=name)


def test_the_model_training_step_is_deterministic():
    """Same weights, same input: bit-identical gradients run to run (two threads, channels-last)."""
    from derain.models import RainOerMeNet

    torch.manual_seed(0)
    model = RainOerMeNet().train().to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 33, 29).contiguous(memory_format=torch.channels_last)
    grads = []
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for _ in range(2):
            model.zero_grad(set_to_none=True)
            sum(o.square().mean() for o in model.forward_train(x)).backward()
            grads.append([p.grad.clone() for p in model.parameters()])
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(*grads))
    assert all(g.abs().sum() > 0 for g in grads[0])


@pytest.mark.parametrize("with_x2", [False, True])
def test_backward_without_input_gradients(with_x2):
    """When no input needs a gradient (a network's first layer) the backward skips the adjoint convolution:
    the weight and bias gradients stay those of the full backward."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 11, 13).contiguous(memory_format=torch.channels_last)
    x2 = torch.rand(2, 16, 11, 13).contiguous(memory_format=torch.channels_last) if with_x2 else None
    w, b = conv_relu_params(3 + (16 if with_x2 else 0), 16)
    grads = []
    for need_x in (True, False):
        xs = [t.clone().requires_grad_(need_x) if t is not None else None for t in (x, x2)]
        wr, br = w.clone().requires_grad_(), b.clone().requires_grad_()
        out = dk.conv3x3_relu(xs[0], wr, br, xs[1])
        out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape))
        assert (xs[0].grad is not None) == need_x
        grads.append((wr.grad, br.grad))
    for a, c in zip(*grads):
        torch.testing.assert_close(a, c, rtol=0, atol=0)
    g = torch.rand(2, 16, 11, 13)
    out = dk.conv3x3_relu(x, w, b, x2)
    gx, gx2, gw, gb = torch.ops.derain._conv3x3_relu_backward(g, out, x, w, x2, input_grad=False)
    assert gx.numel() == 0 and gx2.numel() == 0
    full = torch.ops.derain._conv3x3_relu_backward(g, out, x, w, x2)
    assert full[0].shape == x.shape and torch.equal(gw, full[2]) and torch.equal(gb, full[3])
    torch.library.opcheck(torch.ops.derain._conv3x3_relu_backward.default, (g, out, x, w, x2),
                          {"input_grad": False})
