"""tv_loss: C++ and Triton kernels against the reference."""
import math

import pytest
import torch

import derain_kernels as dk
from derain_kernels import reference as ref
from derain_kernels._contracts import tv_counts
from derain_kernels.reference.tv import tv_sums
from contract import CONTRACTS, contract_tests
from helpers import layouts, needs_triton, triton_device

FLOATS = [torch.float32, torch.float64]

# layouts x dtypes, gradcheck, opcheck, torch.compile, bad arguments, empty inputs: tests/contract.py
TestContract = contract_tests(CONTRACTS["tv_loss"])


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 3, 17, 23), (1, 1, 1, 1), (3, 2, 1, 9), (2, 1, 7, 1), (1, 3, 70, 5)])
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("padding", ["valid", "zeros"])
def test_sums_match_reference(shape, p, dtype, padding):
    x = torch.rand(shape, dtype=dtype) - 0.3
    torch.testing.assert_close(torch.ops.derain._tv_sums(x, p, padding), tv_sums(x, p, padding), **_tol(dtype))
    xc = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(torch.ops.derain._tv_sums(xc, p, padding), tv_sums(x, p, padding), **_tol(dtype))


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


def test_leading_dims_and_degenerate_sizes():
    x = torch.rand(2, 3, 11, 13, dtype=torch.float64)
    assert dk.tv_loss(x.view(1, 2, 3, 11, 13), "none").shape == (1, 2)
    assert dk.tv_loss(x[0], "none").shape == ()
    torch.testing.assert_close(dk.tv_loss(x[0, 0]), ref.tv_loss(x[0, 0]))  # (H, W)
    assert dk.tv_loss(torch.rand(2, 3, 1, 1), "sum").item() == 0.0
    assert dk.tv_loss(torch.rand(0, 3, 4, 4), "sum").item() == 0.0


@pytest.mark.parametrize("padding", ["valid", "zeros"])
@pytest.mark.parametrize("shape", [(3, 0, 4), (1, 3, 2, 5, 0), (0, 8), (8, 0), (2, 3, 0, 8), (0, 3, 4, 4),
                                   (2, 0, 4, 4), (2, 3, 1, 1), (2, 3, 1, 6), (2, 3, 6, 1)])
@pytest.mark.parametrize("p", [1, 2])
def test_empty_inputs_and_directions_without_differences(shape, padding, p):
    # the package's rule, as torch.mean / torch.sum: a mean over no differences is NaN, a sum 0;
    # gradients stay finite (an empty direction passes none)
    x = torch.rand(shape, dtype=torch.float64)
    nv, nh = tv_counts(shape, padding)
    lead = shape[:-3]
    n = math.prod(lead)
    for reduction in ("mean", "sum", "none"):
        results = []
        for impl in (dk.tv_loss, ref.tv_loss):
            leaf = x.clone().requires_grad_()
            out = impl(leaf, reduction, p, padding)
            assert out.shape == (() if reduction != "none" else lead)
            out.sum().backward()
            assert leaf.grad.shape == shape and torch.isfinite(leaf.grad).all()
            results.append((out.detach(), leaf.grad))
        out = results[0][0]
        if reduction == "sum":
            assert torch.isfinite(out)
        elif reduction == "mean":
            assert torch.isnan(out) == (n * nv == 0 or n * nh == 0)
        elif out.numel():
            assert torch.isnan(out).all() == (nv == 0 or nh == 0)
        torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-12, atol=1e-12, equal_nan=True)
        torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-12, atol=1e-12)


def _ssid_kd_tv_sum(x, p=1):
    """SSID-KD's TVLossL1 convention written out: each difference image has the input's size, with
    the first row (column) taken against a zero row above (zero column left of) the image."""
    above = torch.cat([torch.zeros_like(x[..., :1, :]), x], dim=-2)
    left = torch.cat([torch.zeros_like(x[..., :, :1]), x], dim=-1)
    dv, dh = torch.diff(above, dim=-2), torch.diff(left, dim=-1)
    assert dv.shape == x.shape and dh.shape == x.shape
    return (dv.abs() ** p).sum() + (dh.abs() ** p).sum()


@pytest.mark.parametrize("p", [1, 2])
def test_zeros_padding_is_the_ssid_kd_convention(p):
    x = torch.rand(2, 3, 37, 45, dtype=torch.float64)
    zeros, valid = dk.tv_loss(x, "sum", p, padding="zeros"), dk.tv_loss(x, "sum", p)
    torch.testing.assert_close(zeros, _ssid_kd_tv_sum(x, p), rtol=1e-12, atol=0)
    # the difference is the border terms |x[..., 0, :]|^p + |x[..., :, 0]|^p
    border = (x[..., 0, :].abs() ** p).sum() + (x[..., :, 0].abs() ** p).sum()
    torch.testing.assert_close(zeros - valid, border, rtol=1e-10, atol=0)
    # "mean": H·W differences per direction and channel
    torch.testing.assert_close(dk.tv_loss(x, "mean", p, "zeros"), _ssid_kd_tv_sum(x, p) / x.numel(),
                               rtol=1e-12, atol=0)
    per_image = dk.tv_loss(x, "none", p, "zeros")
    torch.testing.assert_close(per_image, torch.stack([_ssid_kd_tv_sum(xi, p) / xi.numel() for xi in x]),
                               rtol=1e-12, atol=0)


def test_valid_padding_sum_equals_kornia():
    kornia = pytest.importorskip("kornia")
    x = torch.rand(2, 3, 17, 23, dtype=torch.float64)
    torch.testing.assert_close(dk.tv_loss(x, "sum"), kornia.losses.total_variation(x, reduction="sum").sum())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("p", [1, 2])
def test_zeros_padding_loss_and_gradient_match_reference(reduction, p):
    x = torch.rand(3, 3, 13, 11, dtype=torch.float64) - 0.5
    x[:, :, 4] = x[:, :, 5]
    x[:, 1, 0, 3] = 0.0  # a zero border difference: sign(0) = 0
    for name, xl in layouts(x):
        a, b = xl.detach().clone().requires_grad_(), x.clone().requires_grad_()
        la, lb = dk.tv_loss(a, reduction, p, "zeros"), ref.tv_loss(b, reduction, p, "zeros")
        torch.testing.assert_close(la, lb, rtol=1e-12, atol=1e-12, msg=name)
        w = torch.randn_like(la)
        la.backward(w)
        lb.backward(w)
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12, msg=name)
    xg = torch.rand(2, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: dk.tv_loss(t, reduction, p, "zeros"), (xg,))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("padding", ["valid", "zeros"])
@pytest.mark.parametrize("p", [1, 2])
def test_non_finite_inputs_values_and_gradients_match_reference(bad, padding, p):
    # documented rules, followed by the reference too: sign(NaN) = NaN passes NaN to the neighbours'
    # gradients (torch.abs would give 0 there); infinities: |±inf| = inf, sign ±1, inf - inf = NaN
    for pos in [(0, 1, 2, 3), (1, 0, 0, 0), (0, 2, 4, 5)]:
        for second in (None, (0, 1, 2, 4)):
            x = torch.rand(2, 3, 5, 6, dtype=torch.float64)
            x[pos] = bad
            if second is not None:
                x[second] = bad
            for reduction in ("mean", "sum", "none"):
                res = []
                for impl in (dk.tv_loss, ref.tv_loss):
                    leaf = x.clone().requires_grad_()
                    out = impl(leaf, reduction, p, padding)
                    out.backward(torch.ones_like(out))
                    res.append((out.detach(), leaf.grad))
                for got, want in zip(*res):
                    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, equal_nan=True)
            if bad != bad:
                leaf = x.clone().requires_grad_()
                dk.tv_loss(leaf, "sum", p, padding).backward()
                assert torch.isnan(leaf.grad[pos[0], pos[1], pos[2] + 1 if pos[2] < 4 else pos[2] - 1, pos[3]])


def test_nan_propagates():
    x = torch.rand(1, 1, 4, 4)
    x[0, 0, 1, 1] = float("nan")
    assert torch.isnan(dk.tv_loss(x))


@needs_triton
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("padding", ["valid", "zeros"])
def test_triton_matches_cpp(dtype, p, padding):
    from derain_kernels.triton import tv as tk
    dev = triton_device()
    x = torch.rand(2, 3, 9, 12, dtype=dtype) - 0.5
    x[0, 0, 3] = x[0, 0, 4]
    x[1, 2, 0, 5] = 0.0
    torch.testing.assert_close(tk.tv_sums(x.to(dev), p, padding).cpu(), torch.ops.derain._tv_sums(x, p, padding),
                               **_tol(dtype))
    torch.testing.assert_close(tk.tv_sums(x.to(dev), p, padding).cpu(), tv_sums(x, p, padding), **_tol(dtype))
    g = torch.randn(2, 2, dtype=dtype)
    xc = x.contiguous(memory_format=torch.channels_last)
    out = tk.tv_sums_backward(g.to(dev), xc.to(dev), p, padding)
    expected = torch.ops.derain._tv_sums_backward(g, xc, p, padding)
    assert out.stride() == expected.stride()
    torch.testing.assert_close(out.cpu(), expected, **_tol(dtype))
