"""min_composite and rain_composite: C++ and Triton kernels against the reference."""
import pytest
import torch

import derain_kernels as dk
from contract import CONTRACTS, contract_tests
from derain_kernels import reference as ref
from helpers import needs_triton, triton_device

# layouts x dtypes, gradcheck, opcheck, torch.compile, bad arguments, empty inputs: tests/contract.py
TestMinCompositeContract = contract_tests(CONTRACTS["min_composite"])
TestRainCompositeContract = contract_tests(CONTRACTS["rain_composite"])

SHAPES = [(1, 1, 1, 1), (2, 3, 17, 23), (3, 5, 31), (7,), (4, 3, 129, 65)]
FLOATS = [torch.float32, torch.float64]


def _pair(shape, dtype, ties=True):
    x = torch.rand(shape, dtype=dtype)
    y = torch.rand(shape, dtype=dtype)
    if ties:  # make about a third of the elements equal
        tie = torch.rand(shape) < 0.3
        y[tie] = x[tie]
    return x, y


# ---------------------------------------------------------------- min_composite
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", FLOATS + [torch.float16, torch.bfloat16])
def test_min_composite_matches_reference(shape, dtype):
    x, y = _pair(shape, dtype)
    out = dk.min_composite(x, y)
    assert out.dtype == dtype and out.shape == x.shape
    torch.testing.assert_close(out, ref.min_composite(x, y), rtol=0, atol=0)
    torch.testing.assert_close(out, torch.minimum(x, y), rtol=0, atol=0)


def test_min_composite_gradient_goes_to_the_smaller_and_ties_to_x():
    x = torch.tensor([1.0, 2.0, 3.0, 5.0], requires_grad=True)
    y = torch.tensor([2.0, 2.0, 1.0, 5.0], requires_grad=True)
    g = torch.tensor([10.0, 20.0, 30.0, 40.0])
    dk.min_composite(x, y).backward(g)
    assert x.grad.tolist() == [10.0, 20.0, 0.0, 40.0]
    assert y.grad.tolist() == [0.0, 0.0, 30.0, 0.0]


def test_min_composite_nan_propagates_with_gradient_to_the_nan():
    nan = float("nan")
    x = torch.tensor([nan, 1.0, nan], requires_grad=True)
    y = torch.tensor([0.0, nan, nan], requires_grad=True)
    out = dk.min_composite(x, y)
    assert torch.isnan(out).all()
    out.backward(torch.ones(3))
    assert x.grad.tolist() == [1.0, 0.0, 1.0]
    assert y.grad.tolist() == [0.0, 1.0, 0.0]


@pytest.mark.parametrize("x_shape,y_shape", [((2, 3, 5, 7), (1, 3, 5, 7)), ((2, 3, 5, 7), (7,)),
                                             ((5, 1), (1, 4)), ((2, 3, 5, 7), ())])
def test_min_composite_broadcasting(x_shape, y_shape):
    x = torch.rand(x_shape, dtype=torch.float64, requires_grad=True)
    y = torch.rand(y_shape, dtype=torch.float64, requires_grad=True)
    out = dk.min_composite(x, y)
    assert out.shape == torch.broadcast_shapes(x_shape, y_shape)
    torch.testing.assert_close(out, ref.min_composite(x, y), rtol=0, atol=0)
    assert torch.autograd.gradcheck(dk.min_composite, (x, y))


# ---------------------------------------------------------------- rain_composite
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("clamp", [True, False])
def test_rain_composite_matches_reference(shape, dtype, clamp):
    clean = torch.rand(shape, dtype=dtype)
    rain = torch.rand(shape, dtype=dtype) - 0.3  # some sums below 0, some above 1
    out = dk.rain_composite(clean, rain, clamp=clamp)
    torch.testing.assert_close(out, ref.rain_composite(clean, rain, clamp), rtol=0, atol=0)
    if clamp:
        assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_rain_composite_half(dtype):
    clean, rain = torch.rand(3, 17, 19).to(dtype), (torch.rand(3, 17, 19) - 0.3).to(dtype)
    torch.testing.assert_close(dk.rain_composite(clean, rain), ref.rain_composite(clean, rain), rtol=0, atol=0)


@pytest.mark.parametrize("dtype,a,b", [(torch.bfloat16, 0.5, 0.50390625), (torch.float16, 0.5, 0.5 + 2 ** -11),
                                       (torch.bfloat16, 0.75, 0.25390625)])
def test_rain_composite_half_clamps_the_exact_sum(dtype, a, b):
    # the sum is formed in float32 and the clamp (value and gradient) acts on it: 0.5 + 0.50390625 =
    # 1.00390625 > 1 is clamped, as in float64, though rounded to bfloat16 first it would be 1.0
    # (and pass the gradient, as (a + b).clamp(0, 1) in bfloat16 does)
    exact = torch.tensor(a, dtype=torch.float64) + torch.tensor(b, dtype=torch.float64)
    assert not 0 <= exact <= 1 and 0 <= (torch.tensor(a, dtype=dtype) + torch.tensor(b, dtype=dtype)) <= 1
    for impl in (dk.rain_composite, ref.rain_composite):
        x = torch.tensor([a], dtype=dtype, requires_grad=True)
        y = torch.tensor([b], dtype=dtype, requires_grad=True)
        out = impl(x, y)
        assert out.item() == exact.clamp(0, 1).to(dtype).item()
        out.backward(torch.ones_like(out))
        assert x.grad.item() == 0.0 and y.grad.item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_rain_composite_half_gradients_match_reference_with_broadcast(dtype):
    # values on a grid of 1/64 so that many sums land on or next to the clamp bounds
    for seed in range(4):
        g = torch.Generator().manual_seed(seed)
        clean = (torch.randint(-8, 72, (3, 3, 13, 17), generator=g) / 64).to(dtype)
        rain = (torch.randint(-40, 40, (1, 3, 13, 17), generator=g) / 64
                + torch.randint(-1, 2, (1, 3, 13, 17), generator=g) * 2.0 ** -9).to(dtype)
        grad = torch.randn(3, 3, 13, 17, generator=g).to(dtype)
        got, want = [], []
        for impl, store in ((dk.rain_composite, got), (ref.rain_composite, want)):
            c, r = clean.clone().requires_grad_(), rain.clone().requires_grad_()
            out = impl(c, r)
            out.backward(grad)
            store += [out, c.grad, r.grad]
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_rain_composite_gradient_is_zero_where_clamped():
    clean = torch.tensor([0.5, 0.9, 0.1, 0.5, 0.5], requires_grad=True)
    rain = torch.tensor([0.2, 0.3, -0.4, 0.5, -0.5], requires_grad=True)  # 0.7, 1.2, -0.3, 1.0, 0.0
    dk.rain_composite(clean, rain).backward(torch.full((5,), 2.0))
    assert clean.grad.tolist() == [2.0, 0.0, 0.0, 2.0, 2.0]  # bounds pass, like torch.clamp
    assert rain.grad.tolist() == clean.grad.tolist()


def test_rain_composite_nan():
    clean = torch.tensor([float("nan"), 0.5], requires_grad=True)
    rain = torch.tensor([0.1, float("nan")], requires_grad=True)
    out = dk.rain_composite(clean, rain)
    assert torch.isnan(out).all()
    out.sum().backward()
    assert clean.grad.tolist() == [0.0, 0.0]


def test_rain_composite_gradients_match_reference():
    clean = torch.rand(3, 3, 13, 17, dtype=torch.float64)
    rain = torch.rand(1, 3, 13, 17, dtype=torch.float64) - 0.3
    g = torch.randn(3, 3, 13, 17, dtype=torch.float64)
    a = [clean.clone().requires_grad_(), rain.clone().requires_grad_()]
    b = [clean.clone().requires_grad_(), rain.clone().requires_grad_()]
    dk.rain_composite(*a).backward(g)
    ref.rain_composite(*b).backward(g)
    torch.testing.assert_close(a[0].grad, b[0].grad, rtol=0, atol=0)
    torch.testing.assert_close(a[1].grad, b[1].grad, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- Triton kernels
@needs_triton
@pytest.mark.parametrize("dtype", FLOATS)
def test_triton_min_composite(dtype):
    from derain_kernels.triton import composite as tk
    dev = triton_device()
    x, y = (t.to(dev) for t in _pair((2, 3, 17, 23), dtype))
    torch.testing.assert_close(tk.min_composite(x, y), ref.min_composite(x, y), rtol=0, atol=0)
    # broadcast + channels-last + NaN
    x[0, 0, 0, 0] = float("nan")
    xc = x.contiguous(memory_format=torch.channels_last)
    out = tk.min_composite(xc, y[:1])
    torch.testing.assert_close(out, ref.min_composite(x, y[:1]), rtol=0, atol=0, equal_nan=True)
    assert out.is_contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(x)
    gx, gy = tk.min_composite_backward(g, x, y)
    rx, ry = torch.ops.derain._min_composite_backward(g.cpu(), x.cpu(), y.cpu())
    torch.testing.assert_close(gx.cpu(), rx, rtol=0, atol=0)
    torch.testing.assert_close(gy.cpu(), ry, rtol=0, atol=0)


@needs_triton
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("clamp", [True, False])
def test_triton_rain_composite(dtype, clamp):
    from derain_kernels.triton import composite as tk
    dev = triton_device()
    clean = torch.rand(2, 3, 17, 23, dtype=dtype, device=dev)
    rain = torch.rand(2, 3, 17, 23, dtype=dtype, device=dev) - 0.3
    torch.testing.assert_close(tk.rain_composite(clean, rain, clamp), ref.rain_composite(clean, rain, clamp),
                               rtol=0, atol=0)
    torch.testing.assert_close(tk.rain_composite(clean, rain[..., :1, :], clamp),
                               ref.rain_composite(clean, rain[..., :1, :], clamp), rtol=0, atol=0)
    g = torch.randn_like(clean)
    expected = torch.ops.derain._rain_composite_backward(g.cpu(), clean.cpu(), rain.cpu(), clamp)
    torch.testing.assert_close(tk.rain_composite_backward(g, clean, rain, clamp).cpu(), expected, rtol=0, atol=0)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_rain_composite_half_follows_the_float32_sum(dtype):
    from derain_kernels.triton import composite as tk
    dev = triton_device()
    g = torch.Generator().manual_seed(1)
    clean = (torch.randint(-8, 72, (2, 3, 9, 11), generator=g) / 64).to(dtype)
    rain = (torch.randint(-40, 40, (2, 3, 9, 11), generator=g) / 64
            + torch.randint(-1, 2, (2, 3, 9, 11), generator=g) * 2.0 ** -9).to(dtype)
    clean[0, 0, 0, :2] = torch.tensor([0.5, 0.75]).to(dtype)
    rain[0, 0, 0, :2] = torch.tensor([0.50390625, 0.25390625]).to(dtype)  # exact sums just above 1
    grad = torch.randn(2, 3, 9, 11, generator=g).to(dtype)
    out = tk.rain_composite(clean.to(dev), rain.to(dev)).cpu()
    gout = tk.rain_composite_backward(grad.to(dev), clean.to(dev), rain.to(dev)).cpu()
    c, r = clean.clone().requires_grad_(), rain.clone().requires_grad_()
    expected = ref.rain_composite(c, r)
    expected.backward(grad)
    # (the interpreter casts float32 to bfloat16 by truncation, a GPU rounds to nearest: one ulp)
    loose = dev == "cpu" and dtype == torch.bfloat16
    torch.testing.assert_close(out, expected.detach(), rtol=2.0 ** -7 if loose else 0, atol=0)
    torch.testing.assert_close(gout, c.grad, rtol=0, atol=0)
    torch.testing.assert_close(torch.ops.derain._rain_composite_backward(grad, clean, rain, True), c.grad,
                               rtol=0, atol=0)
