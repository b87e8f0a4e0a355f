"""directional_kernels / rain_direction_loss: C++ and Triton kernels against the reference."""
import math

import pytest
import torch
import torch.nn.functional as F

import derain_kernels as dk
from derain_kernels import reference as ref
from derain_kernels._contracts import kernel_indices
from derain_kernels.reference.rain_direction import rain_direction_sums
from contract import CONTRACTS, contract_tests
from helpers import needs_triton, triton_device

FLOATS = [torch.float32, torch.float64]

# layouts x dtypes, gradcheck, opcheck, torch.compile, bad arguments, empty inputs: tests/contract.py
TestContract = contract_tests(CONTRACTS["rain_direction_loss"])


# ---------------------------------------------------------------- the kernel bank
def test_bank_shape_normalisation_and_axis_kernels():
    bank = dk.directional_kernels()
    assert bank.shape == (18, 5, 5) and bank.dtype == torch.float32
    torch.testing.assert_close(bank.sum((1, 2)), torch.ones(18))
    horizontal = torch.zeros(5, 5)
    horizontal[2] = 0.2
    torch.testing.assert_close(bank[0], horizontal)  # 0° points right
    torch.testing.assert_close(bank[9], horizontal.t())  # 90° vertical
    diag = torch.zeros(5, 5)
    for i in range(5):
        diag[4 - i, i] = 0.2  # 45°: counter-clockwise, up to the right
    torch.testing.assert_close(dk.directional_kernels(4, 5)[1], diag, rtol=0, atol=1e-12)
    # point symmetry (convolution = correlation) and mirror symmetry theta <-> 180 - theta
    torch.testing.assert_close(bank, bank.flip(-1, -2))
    torch.testing.assert_close(bank[1:], bank[1:].flip(0).flip(-1))


def test_bank_limits_dtypes_and_devices():
    # the largest bank allowed is built in about a second; floating dtypes only (the kernels are
    # fractions summing to 1: an integer bank would be zeros); any device, meta included
    big = dk.directional_kernels(1, 1023, dtype=torch.float64)
    assert big.shape == (1, 1023, 1023) and big.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert dk.directional_kernels(4096, 15).shape == (4096, 15, 15)
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        bank = dk.directional_kernels(dtype=dtype)
        assert bank.dtype == dtype
        torch.testing.assert_close(bank.double().sum((1, 2)), torch.ones(18, dtype=torch.float64),
                                   rtol=0, atol=1e-2 if bank.element_size() == 2 else 1e-6)
    assert dk.directional_kernels(device="meta").device.type == "meta"
    assert dk.directional_kernels(device=torch.device("cpu")).device.type == "cpu"


def test_bank_is_a_fresh_tensor():
    k = dk.directional_kernels(dtype=torch.float64)
    k.mul_(0)
    assert dk.directional_kernels(dtype=torch.float64).sum() == 18


def test_bank_lines_have_the_right_direction():
    bank = dk.directional_kernels(18, 7, dtype=torch.float64)
    rows, cols = torch.meshgrid(torch.arange(7.0) - 3, torch.arange(7.0) - 3, indexing="ij")
    for i in range(18):
        k = bank[i]
        # principal axis of the mass distribution (x = col, y = -row: counter-clockwise)
        xx, yy = cols, -rows
        cxx, cyy, cxy = (k * xx * xx).sum(), (k * yy * yy).sum(), (k * xx * yy).sum()
        theta = 0.5 * math.degrees(math.atan2(2 * cxy, cxx - cyy)) % 180
        assert min(abs(theta - 10 * i), 180 - abs(theta - 10 * i)) < 2.5, (i, theta)


def test_kernel_indices_rounding_and_perpendicular():
    par, perp = kernel_indices(torch.tensor([0.0, 4.99, 5.0, 95.0, 175.0, 180.0, -10.0, 360 + 20]), 8, 18, "cpu")
    assert par.tolist() == [0, 0, 1, 10, 0, 0, 17, 2]
    assert perp.tolist() == [9, 9, 10, 1, 9, 9, 8, 11]
    p2, q2 = kernel_indices(30, 3, 18, "cpu")
    assert p2.tolist() == [3, 3, 3] and q2.tolist() == [12, 12, 12]


# ---------------------------------------------------------------- the loss
def _pair(shape, dtype=torch.float64):
    return torch.rand(shape, dtype=dtype), torch.rand(shape, dtype=dtype)


@pytest.mark.parametrize("shape", [(2, 3, 17, 23), (1, 1, 1, 1), (1, 2, 3, 2), (3, 3, 40, 9)])
@pytest.mark.parametrize("dtype", FLOATS)
def test_sums_match_reference(shape, dtype):
    z, g = _pair(shape, dtype)
    k = torch.rand(shape[0], 3, 5, 5, dtype=dtype)
    k[k < 0.4] = 0
    tol = dict(rtol=1e-5, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-11)
    torch.testing.assert_close(torch.ops.derain._rain_direction_sums(z, g, k), rain_direction_sums(z, g, k), **tol)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_loss_and_gradients_match_reference(reduction):
    z, g = _pair((3, 3, 12, 14))
    angle = torch.tensor([0.0, 37.0, 123.0])
    a = [z.clone().requires_grad_(), g.clone().requires_grad_()]
    b = [z.clone().requires_grad_(), g.clone().requires_grad_()]
    la, lb = dk.rain_direction_loss(*a, angle, reduction), ref.rain_direction_loss(*b, angle, reduction)
    torch.testing.assert_close(la, lb, rtol=1e-12, atol=1e-12)
    w = torch.randn_like(la)
    la.backward(w)
    lb.backward(w)
    torch.testing.assert_close(a[0].grad, b[0].grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a[1].grad, b[1].grad, rtol=1e-10, atol=1e-12)


def test_matches_the_papers_eager_formulation():
    # UDRDR Eq. 5 as written: two depthwise conv2d per input, then F.l1_loss, summed
    z, g = _pair((2, 3, 16, 15), torch.float32)
    angle = 60.0
    bank = dk.directional_kernels()
    loss = 0
    for idx in (6, 15):
        w = bank[idx].expand(3, 1, 5, 5)
        loss = loss + F.l1_loss(F.conv2d(z, w, padding=2, groups=3), F.conv2d(g, w, padding=2, groups=3))
    torch.testing.assert_close(dk.rain_direction_loss(z, g, angle), loss, rtol=1e-5, atol=1e-6)
    # one number for all images = a tensor of equal angles
    torch.testing.assert_close(dk.rain_direction_loss(z, g, torch.tensor([60.0, 60.0])), loss, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (2, 3, 0, 4), (2, 0, 4, 4), (2, 3, 4, 0)])
def test_empty_inputs_reduce_like_torch_mean_and_sum(shape):
    # the package's rule (torch.mean / torch.sum): "mean" over no values NaN, "sum" 0, per-image
    # means of images without values NaN, an empty batch an empty result; gradients and the
    # reference: the contract tests
    for reduction, expected in (("mean", torch.tensor(float("nan"))), ("sum", torch.tensor(0.0)),
                                ("none", torch.full((shape[0],), float("nan")))):
        out = dk.rain_direction_loss(*_pair(shape), 30.0, reduction)
        torch.testing.assert_close(out, expected.double(), equal_nan=True)


def test_nan_and_empty():
    z, g = _pair((1, 1, 6, 6))
    z[0, 0, 2, 2] = float("nan")
    assert torch.isnan(dk.rain_direction_loss(z, g, 0.0))
    z, g = _pair((2, 1, 6, 6))
    per_image = dk.rain_direction_loss(z, g, torch.tensor([30.0, float("nan")]), "none")
    assert not torch.isnan(per_image[0]) and torch.isnan(per_image[1])
    e = torch.rand(0, 3, 4, 4)
    assert dk.rain_direction_loss(e, e, torch.zeros(0), "sum").item() == 0.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("reduction", ["mean", "none", "sum"])
def test_non_finite_inputs_values_and_gradients_match_reference(bad, reduction):
    # documented rules, followed by the reference too: responses k ⋆ (z − z_gt) over the kernel's
    # non-zero taps (a tap outside the kernel reads nothing, so an infinity stays infinite), and
    # sign(NaN) = NaN in the gradient
    angle = torch.tensor([10.0, 80.0])
    for pos in [(0, 0, 2, 3), (1, 1, 0, 0), (0, 1, 5, 6)]:
        for other in (None, bad, -bad):  # z_gt finite, the same value, the opposite infinity
            z, g = _pair((2, 2, 6, 7))
            z[pos] = bad
            if other is not None:
                g[pos] = other
            res = []
            for impl in (dk.rain_direction_loss, ref.rain_direction_loss):
                a, b = z.clone().requires_grad_(), g.clone().requires_grad_()
                out = impl(a, b, angle, reduction)
                out.backward(torch.ones_like(out))
                res.append((out.detach(), a.grad, b.grad))
            for got, want in zip(*res):
                torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, equal_nan=True)
            if bad == float("inf") and other is None:
                assert torch.isinf(res[0][0]).any()  # an infinity in z alone: an infinite loss


@needs_triton
def test_triton_matches_cpp():
    from derain_kernels.triton import rain_direction as tk
    dev = triton_device()
    z, g = _pair((2, 2, 6, 7))
    k = torch.stack([dk.directional_kernels(dtype=torch.float64)[[2, 11]], dk.directional_kernels(dtype=torch.float64)[[5, 14]]])
    torch.testing.assert_close(tk.rain_direction_sums(z.to(dev), g.to(dev), k.to(dev)).cpu(),
                               torch.ops.derain._rain_direction_sums(z, g, k), rtol=1e-12, atol=1e-12)
    w = torch.randn(2, 2, dtype=torch.float64)
    zc = z.contiguous(memory_format=torch.channels_last)
    out = tk.rain_direction_sums_backward(w.to(dev), zc.to(dev), g.to(dev), k.to(dev))
    expected = torch.ops.derain._rain_direction_sums_backward(w, zc, g, k)
    assert out.stride() == expected.stride()
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-12, atol=1e-12)
