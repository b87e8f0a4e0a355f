"""tv_loss: C++ and Triton kernels against the reference."""
import pytest
import torch

import derain_kernels as dk
from derain_kernels import reference as ref
from derain_kernels.reference.tv import tv_sums
from helpers import layouts, needs_triton, triton_device

FLOATS = [torch.float32, torch.float64]


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 3, 17, 23), (1, 1, 1, 1), (3, 2, 1, 9), (2, 1, 7, 1), (1, 3, 70, 5)])
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("dtype", FLOATS)
def test_sums_match_reference(shape, p, dtype):
    x = torch.rand(shape, dtype=dtype)
    torch.testing.assert_close(torch.ops.derain.tv_sums(x, p), tv_sums(x, p), **_tol(dtype))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("p", [1, 2])
def test_loss_and_gradient_match_reference(reduction, p):
    x = torch.rand(3, 3, 13, 11, dtype=torch.float64)
    x[:, :, 4] = x[:, :, 5]  # zero vertical differences: sign(0) = 0
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    la, lb = dk.tv_loss(a, reduction, p), ref.tv_loss(b, reduction, p)
    torch.testing.assert_close(la, lb, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(la)
    la.backward(g)
    lb.backward(g)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12)


def test_definition_on_a_small_example():
    x = torch.tensor([[[[0.0, 1.0, 3.0], [2.0, 2.0, 2.0]]]])  # H = 2, W = 3
    # vertical |d|: 2, 1, 1 -> mean 4/3; horizontal |d|: 1, 2, 0, 0 -> mean 3/4
    torch.testing.assert_close(dk.tv_loss(x), torch.tensor(4 / 3 + 3 / 4))
    torch.testing.assert_close(dk.tv_loss(x, "sum"), torch.tensor(7.0))
    torch.testing.assert_close(dk.tv_loss(x, "sum", p=2), torch.tensor(4 + 1 + 1 + 1 + 4.0))
    # the papers' eager code: torch.diff abs mean per direction, summed
    eager = torch.diff(x, dim=-2).abs().mean() + torch.diff(x, dim=-1).abs().mean()
    torch.testing.assert_close(dk.tv_loss(x), eager)


def test_gradcheck_float64():
    x = torch.rand(2, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    for p in (1, 2):
        for reduction in ("mean", "none"):
            assert torch.autograd.gradcheck(lambda t: dk.tv_loss(t, reduction, p), (x,))


def test_layouts_leading_dims_and_degenerate_sizes():
    x = torch.rand(2, 3, 11, 13, dtype=torch.float64)
    for p in (1, 2):
        expected = ref.tv_loss(x, "none", p)
        for name, xl in layouts(x):
            xl = xl.detach().requires_grad_()
            out = dk.tv_loss(xl, "none", p)
            torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12, msg=name)
            out.sum().backward()
            xr = x.clone().requires_grad_()
            ref.tv_loss(xr, "none", p).sum().backward()
            torch.testing.assert_close(xl.grad, xr.grad, rtol=1e-12, atol=1e-12, msg=name)
    assert dk.tv_loss(x.view(1, 2, 3, 11, 13), "none").shape == (1, 2)
    assert dk.tv_loss(x[0], "none").shape == ()
    torch.testing.assert_close(dk.tv_loss(x[0, 0]), ref.tv_loss(x[0, 0]))  # (H, W)
    assert dk.tv_loss(torch.rand(2, 3, 1, 1)).item() == 0.0
    assert dk.tv_loss(torch.rand(0, 3, 4, 4), "sum").item() == 0.0


def test_nan_propagates():
    x = torch.rand(1, 1, 4, 4)
    x[0, 0, 1, 1] = float("nan")
    assert torch.isnan(dk.tv_loss(x))


def test_opcheck():
    x = torch.rand(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    for p in (1, 2):
        torch.library.opcheck(torch.ops.derain.tv_sums, (x, p))
        torch.library.opcheck(torch.ops.derain.tv_sums, (x.detach().contiguous(memory_format=torch.channels_last), p))
        g = torch.randn(2, 2, dtype=torch.float64)
        torch.library.opcheck(torch.ops.derain.tv_sums_backward, (g, x.detach(), p))


def test_compiles_fullgraph():
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    f = lambda t: dk.tv_loss(t * 2.0) + dk.tv_loss(t, "sum", p=2)  # noqa: E731
    out = torch.compile(f, fullgraph=True, backend="aot_eager")(x)
    out.backward()
    torch.testing.assert_close(out, f(x))


@pytest.mark.parametrize("bad,match", [
    (lambda: dk.tv_loss(torch.rand(1, 3, 8, 8), p=3), "p must be 1 or 2"),
    (lambda: dk.tv_loss(torch.rand(1, 3, 8, 8), p=True), "p must be 1 or 2"),
    (lambda: dk.tv_loss(torch.rand(1, 3, 8, 8), "avg"), "reduction must be one of"),
    (lambda: dk.tv_loss(torch.rand(8)), "x must have at least 2 dimensions"),
    (lambda: dk.tv_loss(torch.ones(1, 3, 8, 8, dtype=torch.int32)), "x must have dtype"),
    (lambda: dk.tv_loss("image"), "x must be a torch.Tensor"),
])
def test_bad_arguments(bad, match):
    with pytest.raises((TypeError, ValueError), match=match):
        bad()


@needs_triton
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("p", [1, 2])
def test_triton_matches_cpp(dtype, p):
    from derain_kernels.triton import tv as tk
    dev = triton_device()
    x = torch.rand(2, 3, 9, 12, dtype=dtype)
    x[0, 0, 3] = x[0, 0, 4]
    torch.testing.assert_close(tk.tv_sums(x.to(dev), p).cpu(), torch.ops.derain.tv_sums(x, p), **_tol(dtype))
    g = torch.randn(2, 2, dtype=dtype)
    xc = x.contiguous(memory_format=torch.channels_last)
    out = tk.tv_sums_backward(g.to(dev), xc.to(dev), p)
    expected = torch.ops.derain.tv_sums_backward(g, xc, p)
    assert out.stride() == expected.stride()
    torch.testing.assert_close(out.cpu(), expected, **_tol(dtype))
