"""dark_channel / dark_channel_loss: C++ and Triton kernels against the reference."""
import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

import derain_kernels as dk
from derain_kernels import reference as ref
from derain_kernels.reference.dark_channel import dark_channel_with_index
from contract import CONTRACTS, contract_tests
from helpers import needs_triton, triton_device

FLOATS = [torch.float32, torch.float64]

# layouts x dtypes, gradcheck, opcheck, torch.compile, bad arguments, empty inputs: tests/contract.py
TestContract = contract_tests(CONTRACTS["dark_channel"])


def _quantised(shape, dtype=torch.float64, levels=4):
    """Random values on a coarse grid: many ties."""
    return (torch.rand(shape, dtype=dtype) * levels).round() / levels


@pytest.mark.parametrize("shape,patch", [((2, 3, 17, 23), 5), ((1, 3, 7, 5), 15), ((1, 1, 1, 1), 3),
                                         ((2, 2, 4, 9), 31), ((1, 3, 13, 13), 1), ((3, 1, 6, 2), 3),
                                         ((1, 4, 9, 10), 7), ((1, 3, 12, 10), 41)])
@pytest.mark.parametrize("dtype", FLOATS)
def test_values_and_indices_match_reference_with_ties(shape, patch, dtype):
    x = _quantised(shape, dtype)
    out, index = torch.ops.derain._dark_channel(x, patch)
    rv, ri = dark_channel_with_index(x, patch)
    torch.testing.assert_close(out, rv, rtol=0, atol=0)
    assert torch.equal(index, ri)
    torch.testing.assert_close(dk.dark_channel(x, patch), rv, rtol=0, atol=0)


def test_matches_scipy_mirror_minimum_filter():
    x = torch.rand(2, 3, 19, 26, dtype=torch.float64)
    for patch in (3, 15, 35):  # 35 > 19: periodic mirror, like scipy's 'mirror'
        expected = ndi.minimum_filter(x.min(1, keepdim=True).values.numpy(), size=(1, 1, patch, patch),
                                      mode="mirror")
        np.testing.assert_array_equal(dk.dark_channel(x, patch).numpy(), expected)


def test_matches_eager_maxpool_in_the_interior():
    # the papers' formulation: -max_pool2d(-min over channels) on a reflect-padded image
    x = torch.rand(2, 3, 32, 30)
    p = 9
    m = x.min(1, keepdim=True).values
    eager = -torch.nn.functional.max_pool2d(-torch.nn.functional.pad(m, (4,) * 4, mode="reflect"), p, stride=1)
    torch.testing.assert_close(dk.dark_channel(x, p), eager, rtol=0, atol=0)


def test_patch_covering_the_image_gives_the_global_minimum():
    x = torch.rand(2, 3, 6, 9, dtype=torch.float64)
    out = dk.dark_channel(x, 17)  # 17 >= 2 * 9 - 1
    expected = x.amin((1, 2, 3)).view(2, 1, 1, 1).expand(2, 1, 6, 9)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_tie_rule_channel_then_raster():
    x = torch.ones(1, 3, 3, 3, dtype=torch.float64)
    x[0, 2, 0, 0] = 0.0  # first in raster order, last channel
    x[0, 1, 2, 2] = 0.0
    x[0, 1, 1, 2] = 0.0  # first channel holding a tie, first in raster order there: wins
    x.requires_grad_()
    out, index = torch.ops.derain._dark_channel(x.detach(), 5)
    assert torch.all(index == 1 * 9 + 1 * 3 + 2)  # flat (C, H, W) index
    out = dk.dark_channel(x, 5)
    assert torch.all(out == 0)
    out.sum().backward()
    expected = torch.zeros(1, 3, 3, 3, dtype=torch.float64)
    expected[0, 1, 1, 2] = 9.0
    torch.testing.assert_close(x.grad, expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", FLOATS)
def test_gradient_matches_reference(dtype):
    x = _quantised((2, 3, 11, 14), dtype, levels=8)
    g = torch.randn(2, 1, 11, 14, dtype=dtype)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    dk.dark_channel(a, 5).backward(g)
    ref.dark_channel(b, 5).backward(g)
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-12 if dtype == torch.float64 else 1e-5)


def test_nan_propagates_and_takes_the_gradient():
    x = torch.rand(1, 3, 5, 5, dtype=torch.float64)
    x[0, 1, 2, 2] = float("nan")
    x.requires_grad_()
    out = dk.dark_channel(x, 3)
    assert torch.isnan(out[0, 0, 1:4, 1:4]).all() and not torch.isnan(out[0, 0, 0, 0])
    out.backward(torch.ones_like(out))
    assert x.grad[0, 1, 2, 2] == 9.0


def test_leading_dims():
    x = _quantised((2, 3, 11, 13))
    expected = ref.dark_channel(x, 5)
    assert dk.dark_channel(x[0], 5).shape == (1, 11, 13)
    torch.testing.assert_close(dk.dark_channel(x[0], 5), expected[0], rtol=0, atol=0)
    x5 = x.view(1, 2, 3, 11, 13)
    torch.testing.assert_close(dk.dark_channel(x5, 5), expected.view(1, 2, 1, 11, 13), rtol=0, atol=0)
    assert dk.dark_channel(torch.rand(0, 3, 4, 5), 3).shape == (0, 1, 4, 5)


@pytest.mark.parametrize("shape", [(1, 1, 3, 13, 0), (2, 3, 0, 5), (0, 3, 4, 5), (3, 0, 4), (2, 2, 3, 0, 0)])
def test_empty_inputs_reduce_like_torch_mean_and_sum(shape):
    # the package's rule: "mean" over no values NaN, "sum" 0, per-image means of images without
    # pixels NaN, an empty batch an empty result (torch.mean / torch.sum); maps, gradients and the
    # reference: the contract tests
    lead = shape[:-3]
    for reduction, expected in (("mean", torch.empty(0).mean()), ("sum", torch.tensor(0.0)),
                                ("none", torch.full(lead, float("nan")))):
        out = dk.dark_channel_loss(torch.rand(shape, dtype=torch.float64), 5, reduction)
        torch.testing.assert_close(out, expected.double(), equal_nan=True)


@pytest.mark.parametrize("patch", [35, 10 ** 9 + 1, 2 ** 63 + 1, 10 ** 30 + 1])
def test_patches_beyond_the_image_give_the_global_minimum(patch):
    # a patch >= 2·max(H, W) − 1 covers the whole periodic extension: any such patch (also past
    # int64) equals the image minimum, with the gradient at its first (channel, raster) occurrence
    x = _quantised((2, 3, 6, 9), levels=8)
    leaf = x.clone().requires_grad_()
    out = dk.dark_channel(leaf, patch)
    torch.testing.assert_close(out, x.amin((1, 2, 3)).view(2, 1, 1, 1).expand(2, 1, 6, 9), rtol=0, atol=0)
    out.sum().backward()
    r = x.clone().requires_grad_()
    ref.dark_channel(r, 17).sum().backward()  # 17 = 2 * 9 - 1
    torch.testing.assert_close(leaf.grad, r.grad, rtol=0, atol=0)
    torch.testing.assert_close(ref.dark_channel(x, patch), out.detach(), rtol=0, atol=0)
    torch.testing.assert_close(dk.dark_channel_loss(x, patch), out.detach().abs().mean(), rtol=0, atol=1e-15)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_loss_matches_reference(reduction):
    x = torch.rand(3, 3, 12, 10, dtype=torch.float64) - 0.2  # some negative dark channels
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    la, lb = dk.dark_channel_loss(a, 7, reduction), ref.dark_channel_loss(b, 7, reduction)
    torch.testing.assert_close(la, lb, rtol=1e-12, atol=1e-12)
    la.sum().backward()
    lb.sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-12)
    assert la.shape == (() if reduction != "none" else (3,))


@needs_triton
@pytest.mark.parametrize("dtype", FLOATS)
def test_triton_matches_cpp(dtype):
    from derain_kernels.triton import dark_channel as tk
    dev = triton_device()
    for shape, patch in (((2, 3, 9, 12), 5), ((1, 2, 5, 4), 15), ((1, 1, 1, 1), 3)):
        x = _quantised(shape, dtype)
        x[0, 0, 0, 0] = float("nan")
        rv, ri = torch.ops.derain._dark_channel(x, patch)
        xd = x.to(dev).contiguous(memory_format=torch.channels_last)
        v, i = tk.dark_channel(xd, patch)
        torch.testing.assert_close(v.cpu(), rv, rtol=0, atol=0, equal_nan=True)
        assert torch.equal(i.cpu(), ri)
        g = torch.randn_like(rv)
        # a GPU's atomic adds sum the gradients of one input element in any order: round-off only
        exact = {"rtol": 0, "atol": 0} if dev == "cpu" else {}
        torch.testing.assert_close(tk.dark_channel_backward(g.to(dev), i, shape[1]).cpu(),
                                   torch.ops.derain._dark_channel_backward(g, ri, shape[1]), **exact)
