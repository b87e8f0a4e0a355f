"""ssim / ssim_loss / SSIMLoss: kernels against the float64 reference and against the peers' conventions."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import derain_kernels as dk
from derain_kernels import reference as ref
from contract import CONTRACTS, contract_tests
from helpers import needs_triton, triton_device

PADDINGS = ["zeros", "valid", "reflect"]
REDUCTIONS = ["mean", "none", "map"]

# layouts x dtypes, gradcheck, opcheck, torch.compile, bad arguments, empty inputs: tests/contract.py
TestContract = contract_tests(CONTRACTS["ssim"])


def _images(shape, dtype=torch.float32, smooth=True):
    """A pair of correlated images in [0, 1] (y = x + noise), like a restored / clean pair."""
    x = torch.rand(shape, dtype=torch.float64)
    if smooth:  # some structure, so that variances and covariances span a realistic range
        x = 0.5 * x + 0.5 * F.avg_pool2d(x.reshape(-1, 1, *shape[-2:]), 3, 1, 1).reshape(shape)
    y = (x + 0.1 * torch.randn(shape, dtype=torch.float64)).clamp(0, 1)
    return x.to(dtype), y.to(dtype)


# ---------------------------------------------------------------- against the float64 reference
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(2, 3, 23, 17), (1, 1, 11, 40), (3, 13, 29)])
def test_ssim_matches_float64_reference(padding, reduction, shape):
    x, y = _images(shape)
    out = dk.ssim(x, y, padding=padding, reduction=reduction)
    expected = ref.ssim(x.double(), y.double(), padding=padding, reduction=reduction)
    assert out.dtype == torch.float32 and out.shape == expected.shape
    atol = 6e-6 if reduction == "map" else 2e-6  # float32 round-off of one map value / of a mean
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=atol)


@pytest.mark.parametrize("padding", PADDINGS)
def test_ssim_float64_and_other_windows(padding):
    x, y = _images((2, 2, 19, 21), torch.float64)
    for window_size, sigma in [(11, 1.5), (7, 1.0), (1, 0.5), (5, 3.0)]:
        for k1, k2, data_range in [(0.01, 0.03, 1.0), (0.02, 0.05, 2.0)]:
            out = dk.ssim(x, y, window_size, sigma, data_range, padding, "map", k1, k2)
            expected = ref.ssim(x, y, window_size, sigma, data_range, padding, "map", k1, k2)
            torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_ssim_reduction_shapes_and_loss():
    x, y = _images((4, 3, 16, 18))
    assert dk.ssim(x, y).shape == ()
    assert dk.ssim(x, y, reduction="none").shape == (4,)
    assert dk.ssim(x, y, reduction="map").shape == (4, 3, 16, 18)
    assert dk.ssim(x, y, padding="valid", reduction="map").shape == (4, 3, 6, 8)
    assert dk.ssim(x[0, 0], y[0, 0], reduction="none").shape == ()
    m = dk.ssim(x, y, reduction="map")
    torch.testing.assert_close(dk.ssim(x, y, reduction="none"), m.mean((1, 2, 3)))
    torch.testing.assert_close(dk.ssim(x, y), m.mean())
    torch.testing.assert_close(dk.ssim_loss(x, y, reduction="none"), 1 - dk.ssim(x, y, reduction="none"))
    loss = dk.SSIMLoss(padding="reflect", window_size=7)
    torch.testing.assert_close(loss(x, y), 1 - dk.ssim(x, y, window_size=7, padding="reflect"))
    assert "reflect" in repr(loss)
    assert isinstance(loss, torch.nn.Module)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_ssim_half_computes_in_float32(dtype):
    x, y = _images((1, 3, 16, 16), dtype)
    out = dk.ssim(x, y)
    assert out.dtype == dtype
    torch.testing.assert_close(out, ref.ssim(x.double(), y.double()).to(dtype))


# ---------------------------------------------------------------- peers' conventions
def _prenet_ssim(img1, img2):
    """Po-Hsun-Su pytorch_ssim / PReNet's SSIM, written from its definition: 11x11 Gaussian (σ 1.5) as a
    2-D grouped conv with zero padding 5, no clamping, mean over everything."""
    ch = img1.shape[1]
    g = torch.tensor([np.exp(-(k - 5) ** 2 / (2 * 1.5 ** 2)) for k in range(11)], dtype=img1.dtype)
    g = g / g.sum()
    window = (g[:, None] @ g[None, :]).expand(ch, 1, 11, 11).contiguous()
    mu1 = F.conv2d(img1, window, padding=5, groups=ch)
    mu2 = F.conv2d(img2, window, padding=5, groups=ch)
    s1 = F.conv2d(img1 * img1, window, padding=5, groups=ch) - mu1 * mu1
    s2 = F.conv2d(img2 * img2, window, padding=5, groups=ch) - mu2 * mu2
    s12 = F.conv2d(img1 * img2, window, padding=5, groups=ch) - mu1 * mu2
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    m = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1 * mu1 + mu2 * mu2 + c1) * (s1 + s2 + c2))
    return m.mean()


def test_ssim_zeros_equals_prenet_formula():
    x, y = _images((2, 3, 37, 41))
    torch.testing.assert_close(dk.ssim(x, y, padding="zeros"), _prenet_ssim(x, y), rtol=0, atol=2e-6)
    torch.testing.assert_close(dk.ssim(x.double(), y.double()), _prenet_ssim(x.double(), y.double()),
                               rtol=0, atol=1e-12)


def test_ssim_valid_equals_skimage():
    skm = pytest.importorskip("skimage.metrics")
    x, y = _images((1, 1, 45, 38), torch.float64)
    for data_range, scale in [(1.0, 1.0), (255.0, 255.0)]:
        expected = skm.structural_similarity(x[0, 0].numpy() * scale, y[0, 0].numpy() * scale, data_range=data_range,
                                             gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        out = dk.ssim(x * scale, y * scale, data_range=data_range, padding="valid")
        assert abs(out.item() - expected) < 1e-10
        out32 = dk.ssim((x * scale).float(), (y * scale).float(), data_range=data_range, padding="valid")
        assert abs(out32.item() - expected) < 2e-6


def test_ssim_valid_equals_pytorch_msssim():
    pm = pytest.importorskip("pytorch_msssim")
    x, y = _images((2, 3, 40, 33))
    expected = pm.ssim(x, y, data_range=1.0, size_average=True, win_size=11, win_sigma=1.5)
    torch.testing.assert_close(dk.ssim(x, y, padding="valid"), expected, rtol=0, atol=2e-6)
    per_image = pm.ssim(x, y, data_range=1.0, size_average=False)
    torch.testing.assert_close(dk.ssim(x, y, padding="valid", reduction="none"), per_image, rtol=0, atol=2e-6)


def test_ssim_reflect_equals_kornia_and_torchmetrics():
    kornia = pytest.importorskip("kornia")
    tm = pytest.importorskip("torchmetrics.functional.image")  # (torchmetrics.functional.* is deprecated)
    x, y = _images((2, 3, 31, 36))
    kmap = kornia.metrics.ssim(x, y, 11, max_val=1.0, eps=0.0, padding="same")
    # (both float32 maps are within ~5e-6 of the float64 map: E[x²] - μ² cancels)
    torch.testing.assert_close(dk.ssim(x, y, padding="reflect", reduction="map"), kmap, rtol=0, atol=1e-5)
    expected = tm.structural_similarity_index_measure(x, y, data_range=1.0)
    torch.testing.assert_close(dk.ssim(x, y, padding="reflect"), expected, rtol=0, atol=2e-6)
    # and the "valid" conventions disagree with "same" ones on the same images (why the option exists)
    assert abs(dk.ssim(x, y, padding="valid") - dk.ssim(x, y, padding="reflect")) > 1e-4


# ---------------------------------------------------------------- special inputs
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_identical_images_give_exactly_one(padding, dtype):
    x, _ = _images((2, 3, 24, 19), dtype)
    for img in (x, torch.full_like(x, 0.37), torch.zeros_like(x), 255 * x):
        a = img.clone().requires_grad_()
        b = img.clone().requires_grad_()
        data_range = 255.0 if img.max() > 1 else 1.0
        m = dk.ssim(a, b, padding=padding, reduction="map", data_range=data_range)
        assert torch.equal(m, torch.ones_like(m))
        m.sum().backward()
        assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


@pytest.mark.parametrize("padding", PADDINGS)
def test_constant_images(padding):
    x = torch.full((1, 2, 16, 16), 0.2, dtype=torch.float64, requires_grad=True)
    y = torch.full((1, 2, 16, 16), 0.6, dtype=torch.float64, requires_grad=True)
    m = dk.ssim(x, y, padding=padding, reduction="map")
    c1 = 0.01 ** 2
    lum = (2 * 0.2 * 0.6 + c1) / (0.2 ** 2 + 0.6 ** 2 + c1)
    if padding != "zeros":  # away from zero padding, the window sees a constant: SSIM = luminance term
        torch.testing.assert_close(m, torch.full_like(m, lum), rtol=0, atol=1e-12)
    else:
        assert abs(m[..., 5:-5, 5:-5] - lum).max() < 1e-12
    m.mean().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()
    x32 = x.detach().float().requires_grad_()
    dk.ssim(x32, y.detach().float(), padding=padding).backward()
    assert torch.isfinite(x32.grad).all()


def test_images_smaller_than_window():
    x, y = _images((1, 2, 4, 3), torch.float64)
    for padding in ("zeros",):
        torch.testing.assert_close(dk.ssim(x, y, padding=padding, reduction="map"),
                                   ref.ssim(x, y, padding=padding, reduction="map"), rtol=0, atol=1e-12)
    x, y = _images((1, 2, 6, 7), torch.float64)  # reflect needs H, W > window_size // 2
    torch.testing.assert_close(dk.ssim(x, y, padding="reflect"), ref.ssim(x, y, padding="reflect"),
                               rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="window_size"):
        dk.ssim(x, y, padding="valid")
    with pytest.raises(ValueError, match="window_size"):
        dk.ssim(x[..., :5, :], y[..., :5, :], padding="reflect")
    one = torch.rand(1, 1, 1, 1, dtype=torch.float64)
    assert dk.ssim(one, one).item() == 1.0


def test_nan_propagates():
    x, y = _images((1, 1, 30, 30))
    x[0, 0, 3, 4] = float("nan")
    m = dk.ssim(x, y, reduction="map")
    assert torch.isnan(m[0, 0, 3, 4]) and torch.isnan(m[0, 0, 0, 0]) and not torch.isnan(m[0, 0, 20:, 20:]).any()
    assert torch.isnan(dk.ssim(x, y))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("data_range", [1e-30, 1e-300, 5e-324, 3e-8, 1e-9, 1e12, 1e30, 1e300, 1.7e308])
def test_identical_images_give_one_for_any_data_range(dtype, data_range):
    # C1 and C2 are kept in a range where C1·C2 and its inverse are normal numbers (float32
    # computations whose constants would leave it run in float64): never 0/0 or inf/inf
    x, _ = _images((2, 2, 12, 13), torch.float64)
    for img in (torch.zeros_like(x), torch.full_like(x, 0.37), x, x * data_range if data_range < 1 else x):
        img = img.to(dtype)
        for padding in PADDINGS:
            a, b = img.clone().requires_grad_(), img.clone().requires_grad_()
            m = dk.ssim(a, b, 5, data_range=data_range, padding=padding, reduction="map")
            assert torch.equal(m, torch.ones_like(m)), (padding, m.min(), m.max())
            m.sum().backward()
            assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
            assert dk.ssim(img, img.clone(), 5, data_range=data_range, padding=padding).item() == 1.0
            assert ref.ssim(img, img.clone(), 5, data_range=data_range, padding=padding).item() == 1.0


@pytest.mark.parametrize("data_range", [1e-30, 1e-12, 3e-8, 1e12, 1e30])
def test_small_and_large_data_ranges_are_finite_and_scale_invariant(data_range):
    # SSIM is invariant under scaling images and data_range together: float32 images at the scale of
    # a tiny or huge data_range give the same values and (scaled) gradients as at scale 1, finite
    x, y = _images((2, 3, 17, 19), torch.float64)
    for padding in PADDINGS:
        want = ref.ssim(x, y, 7, data_range=1.0, padding=padding, reduction="map")
        a, b = (x * data_range).float().requires_grad_(), (y * data_range).float().requires_grad_()
        m = dk.ssim(a, b, 7, data_range=data_range, padding=padding, reduction="map")
        torch.testing.assert_close(m.double(), want, rtol=0, atol=1e-5)
        m.sum().backward()
        xr = x.clone().requires_grad_()
        ref.ssim(xr, y, 7, data_range=1.0, padding=padding, reduction="map").sum().backward()
        scale = float(xr.grad.abs().max())
        torch.testing.assert_close(a.grad.double() * data_range, xr.grad, rtol=0, atol=2e-5 * scale)
        # images far from data_range's scale: finite, both ways
        for big in (x, y * 1e3):
            out = dk.ssim(big.float(), y.float(), 7, data_range=data_range, padding=padding)
            assert torch.isfinite(out)


def test_tiny_sigma_is_the_one_tap_window():
    # every off-centre tap of a Gaussian with sigma < 0.02 is exactly 0 in double; below ~1e-162,
    # 2σ² itself underflows: the window is a delta for every such sigma, not NaN
    x, y = _images((2, 2, 11, 12), torch.float64)
    want = ref.ssim(x, y, 1, reduction="map")
    for sigma in (0.01, 1e-100, 1e-200, 5e-324):
        for padding in PADDINGS:
            torch.testing.assert_close(dk.ssim(x, y, 5, sigma, padding=padding, reduction="map"),
                                       ref.ssim(x, y, 5, 0.02, padding=padding, reduction="map"), rtol=0, atol=0)
            torch.testing.assert_close(ref.ssim(x, y, 5, sigma, padding=padding, reduction="map"),
                                       ref.ssim(x, y, 5, 0.02, padding=padding, reduction="map"), rtol=0, atol=0)
        if padding != "valid":
            torch.testing.assert_close(dk.ssim(x, y, 5, sigma, reduction="map"), want, rtol=0, atol=1e-15)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_one_tap_window_gradients_match_float64(reduction):
    # window_size=1: the variances and covariance are identically 0, S is the luminance term alone;
    # float32 gradients are those of that element-wise formula (within a few ulp), where the general
    # formula's variance terms cancel only up to round-off amplified by 1/C2 (errors ~1e-5 of the scale)
    x, y = _images((2, 3, 17, 19), torch.float64, smooth=False)
    g = torch.linspace(-1, 1, 2 * 3 * 17 * 19, dtype=torch.float64).reshape(2, 3, 17, 19)
    g = g if reduction == "map" else (torch.tensor([0.7, -1.3], dtype=torch.float64) if reduction == "none"
                                      else torch.tensor(1.0, dtype=torch.float64))
    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
    ref.ssim(xr, yr, 1, reduction=reduction).backward(g)
    for impl in (dk.ssim, ref.ssim):
        a, b = x.float().requires_grad_(), y.float().requires_grad_()
        impl(a, b, 1, reduction=reduction).backward(g.float())
        for got, want in ((a.grad, xr.grad), (b.grad, yr.grad)):
            torch.testing.assert_close(got.double(), want, rtol=2e-6, atol=1e-7 * float(want.abs().max()))


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(2, 3, 0, 8), (2, 3, 8, 0), (0, 8)])
def test_empty_images(padding, reduction, shape):
    # the package's rule: empty maps, means over no values NaN (torch.mean), empty gradients;
    # "valid" and "reflect" keep their image-size requirements (images without rows or columns
    # are smaller than the window). Empty batches and planes: the contract tests.
    h, w = shape[-2:]
    if (padding == "valid" and min(h, w) < 5) or (padding == "reflect" and min(h, w) <= 2):
        with pytest.raises(ValueError, match="window_size"):
            dk.ssim(torch.rand(shape), torch.rand(shape), 5, padding=padding)
        return
    outs = []
    for impl in (dk.ssim, ref.ssim, dk.ssim_loss, ref.ssim_loss):
        a, b = torch.rand(shape, requires_grad=True), torch.rand(shape, requires_grad=True)
        out = impl(a, b, 5, padding=padding, reduction=reduction)
        expected = torch.empty(shape).mean() if reduction == "mean" else (
            torch.empty(shape).flatten(1).mean(1) if reduction == "none" and len(shape) >= 3 else
            torch.empty(shape).mean() if reduction == "none" else None)
        if expected is not None:
            torch.testing.assert_close(out.detach(), expected, equal_nan=True)
        else:
            h_out, w_out = (h - 4, w - 4) if padding == "valid" else (h, w)
            assert out.shape == (*shape[:-2], h_out, w_out)
        out.sum().backward()
        assert a.grad.shape == shape and b.grad.shape == shape
        outs.append(out.detach())
    torch.testing.assert_close(outs[0], outs[1], equal_nan=True)


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_ssim_gradients_match_reference_float32(padding, reduction):
    x, y = _images((2, 3, 33, 27))
    outs = []
    for impl, dtype in ((dk.ssim, torch.float32), (ref.ssim, torch.float64)):
        a = x.detach().to(dtype).clone().requires_grad_()
        b = y.detach().to(dtype).clone().requires_grad_()
        out = impl(a, b, padding=padding, reduction=reduction)
        g = torch.ones_like(out) if reduction != "map" else torch.linspace(-1, 1, out.numel()).reshape(out.shape)
        out.backward(g.to(dtype))
        outs.append((a.grad.double(), b.grad.double()))
    scale = outs[1][0].abs().max().item()
    for got, want in zip(outs[0], outs[1]):
        torch.testing.assert_close(got, want, rtol=0, atol=2e-5 * scale)


# ---------------------------------------------------------------- bad arguments
# ---------------------------------------------------------------- registration: opcheck, compile
# ---------------------------------------------------------------- value and gradients in one sweep
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(2, 3, 37, 29), (1, 1, 70, 41), (3, 12, 13)])
def test_ssim_with_grad_matches_value_and_backward_ops(padding, reduction, dtype, shape):
    # ssim() with gradients runs ssim_with_grad: the value must be the same bits as without
    # gradients, and g * (d value/dx) the same bits as ssim_backward_x(g) (same arithmetic);
    # (1, 1, 70, 41) is split into strips of rows over the threads
    x, y = _images(shape, dtype)
    args = (x, y, 11, 1.5, 1.0, padding, reduction, 0.01, 0.03)
    value, ux, uy = torch.ops.derain._ssim_with_grad(*args, True)
    assert torch.equal(value, torch.ops.derain.ssim(*args))
    g = torch.rand(value.shape, dtype=dtype) + 0.5
    gb = g.reshape(-1, *([1] * (x.dim() - 1))) if g.dim() == 1 else g
    gx, gy = torch.ops.derain._ssim_backward(g, *args)
    assert torch.equal(gb * ux, gx) and torch.equal(gb * uy, gy)
    value1, ux1, uy1 = torch.ops.derain._ssim_with_grad(*args, False)
    assert torch.equal(value1, value) and torch.equal(ux1, ux) and uy1.shape == (0,)
    a, b = x.clone().requires_grad_(), y.clone().requires_grad_()
    out = dk.ssim(a, b, padding=padding, reduction=reduction)
    assert torch.equal(out.detach(), value)
    out.backward(g)
    assert torch.equal(a.grad, gx) and torch.equal(b.grad, gy)
    # against the float64 reference
    ra, rb = x.double().clone().requires_grad_(), y.double().clone().requires_grad_()
    ref.ssim(ra, rb, 11, 1.5, 1.0, padding, reduction).backward(g.double())
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(a.grad.double(), ra.grad, rtol=0, atol=tol * float(ra.grad.abs().max()))
    torch.testing.assert_close(b.grad.double(), rb.grad, rtol=0, atol=tol * float(rb.grad.abs().max()))


def test_ssim_with_grad_thread_counts_agree():
    # strips depend on the thread count; values and gradients must not (beyond float64 sums)
    x, y = _images((1, 2, 90, 57), torch.float64)
    args = (x, y, 11, 1.5, 1.0, "reflect", "none", 0.01, 0.03)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = torch.ops.derain._ssim_with_grad(*args, True)
        torch.set_num_threads(max(2, threads))
        two = torch.ops.derain._ssim_with_grad(*args, True)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-15)


def test_ssim_backward_twice_with_retain_graph():
    # the first backward scales the op's gradient maps in place; a second one must not reuse them
    x, y = _images((2, 3, 19, 23))
    a, b = x.clone().requires_grad_(), y.clone().requires_grad_()
    loss = dk.ssim_loss(a, b, reduction="none").sum()
    loss.backward(retain_graph=True)
    ga, gb = a.grad.clone(), b.grad.clone()
    loss.backward()
    torch.testing.assert_close(a.grad, 2 * ga, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(b.grad, 2 * gb, rtol=1e-6, atol=1e-7)


def test_ssim_double_backward_is_not_silent():
    # the fast path's backward is a multiply by saved gradients; with create_graph the
    # backward ops run instead, and differentiating them again raises instead of returning zeros.
    # torch warns on the way that the backward op has no autograd kernel: that warning is part of
    # the expected outcome (asserted here, so that it does not reach the test summary).
    x, y = _images((1, 1, 16, 16), torch.float64)
    a = x.clone().requires_grad_()
    (gx,) = torch.autograd.grad(dk.ssim_loss(a, y), a, create_graph=True)
    torch.testing.assert_close(gx, torch.autograd.grad(dk.ssim_loss(a, y), a)[0], rtol=0, atol=1e-15)
    with pytest.warns(UserWarning, match=r"derain::_ssim_backward_\w+: an autograd kernel was not registered"), \
            pytest.raises(RuntimeError):
        torch.autograd.grad(gx.sum(), a)


@pytest.mark.parametrize("padding,reduction", [("zeros", "mean"), ("valid", "none"), ("reflect", "map")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_sided_gradients(padding, reduction, dtype):
    # only the gradient autograd asks for is computed (ssim_backward_x, with x and y swapped for y)
    x, y = _images((2, 3, 21, 18), dtype)
    a, b = x.double().clone().requires_grad_(), y.double().clone().requires_grad_()
    g = torch.randn_like(ref.ssim(a, b, 7, 1.5, 1.0, padding, reduction))
    ref.ssim(a, b, 7, 1.5, 1.0, padding, reduction).backward(g)
    atol = 1e-12 if dtype == torch.float64 else 2e-5 * float(a.grad.abs().max())
    for wants_x in (True, False):
        xs, ys = x.clone().requires_grad_(wants_x), y.clone().requires_grad_(not wants_x)
        dk.ssim(xs, ys, 7, padding=padding, reduction=reduction).backward(g.to(dtype))
        leaf, other, expected = (xs, ys, a.grad) if wants_x else (ys, xs, b.grad)
        assert other.grad is None
        torch.testing.assert_close(leaf.grad.double(), expected, rtol=0, atol=atol)
    both_x, both_y = x.clone().requires_grad_(), y.clone().requires_grad_()
    dk.ssim(both_x, both_y, 7, padding=padding, reduction=reduction).backward(g.to(dtype))
    gx = torch.ops.derain._ssim_backward_x(g.to(dtype), x, y, 7, 1.5, 1.0, padding, reduction, 0.01, 0.03)
    assert torch.equal(gx, both_x.grad)  # same arithmetic as the two-sided kernel


def test_ssim_loss_module_trains():
    x, y = _images((2, 3, 24, 24))
    p = torch.nn.Parameter(x.clone())
    loss_fn = dk.SSIMLoss()
    opt = torch.optim.SGD([p], lr=50.0)
    first = loss_fn(p, y).item()
    for _ in range(5):
        opt.zero_grad()
        loss = loss_fn(p, y)
        loss.backward()
        opt.step()
    assert loss_fn(p, y).item() < first


# ---------------------------------------------------------------- Triton kernels (interpreter on CPU)
@needs_triton
@pytest.mark.parametrize("padding,reduction,dtype", [("zeros", "map", torch.float32), ("valid", "none", torch.float32),
                                                     ("reflect", "mean", torch.float64), ("reflect", "map", torch.float32)])
def test_triton_ssim_matches_cpp(padding, reduction, dtype):
    from derain_kernels.triton import ssim as ts
    dev = triton_device()
    x, y = _images((2, 2, 13, 20), dtype)
    x, y = x.to(dev), y.to(dev)
    out = ts.ssim(x, y, 7, 1.5, 1.0, padding, reduction, 0.01, 0.03)
    expected = ref.ssim(x.double(), y.double(), 7, 1.5, 1.0, padding, reduction)
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-12)
    g = torch.randn(out.shape, dtype=dtype, device=dev)
    gx, gy = ts.ssim_backward(g, x, y, 7, 1.5, 1.0, padding, reduction, 0.01, 0.03)
    a, b = x.double().clone().requires_grad_(), y.double().clone().requires_grad_()
    ref.ssim(a, b, 7, 1.5, 1.0, padding, reduction).backward(g.double())
    scale = a.grad.abs().max().item()
    tol = 2e-5 * scale if dtype == torch.float32 else 1e-10 * scale
    torch.testing.assert_close(gx.double(), a.grad, rtol=0, atol=tol)
    torch.testing.assert_close(gy.double(), b.grad, rtol=0, atol=tol)


@needs_triton
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_triton_ssim_with_grad(reduction):
    from derain_kernels.triton import ssim as ts
    x, y = _images((2, 2, 13, 20))
    dev = triton_device()
    x, y = x.to(dev), y.to(dev)
    value, gx, gy = ts.ssim_with_grad(x, y, 7, 1.5, 1.0, "reflect", reduction, 0.01, 0.03, True)
    cv, cx, cy = torch.ops.derain._ssim_with_grad(x.cpu(), y.cpu(), 7, 1.5, 1.0, "reflect", reduction, 0.01, 0.03, True)
    torch.testing.assert_close(value.cpu(), cv, rtol=0, atol=2e-6)
    scale = float(cx.abs().max())
    torch.testing.assert_close(gx.cpu(), cx, rtol=0, atol=2e-5 * scale)
    torch.testing.assert_close(gy.cpu(), cy, rtol=0, atol=2e-5 * scale)
    assert ts.ssim_with_grad(x, y, 7, 1.5, 1.0, "reflect", reduction, 0.01, 0.03, False)[2].shape == (0,)


@needs_triton
def test_triton_ssim_identical_images_and_no_save():
    from derain_kernels.triton import ssim as ts
    x, _ = _images((1, 2, 9, 12))
    x = x.to(triton_device())
    out, dmaps = ts.ssim_with_dmaps(x, x.clone(), 11, 1.5, 1.0, "zeros", "map", 0.01, 0.03, False)
    assert torch.equal(out, torch.ones_like(out)) and dmaps.numel() == 0
    out, dmaps = ts.ssim_with_dmaps(x, x.clone(), 11, 1.5, 1.0, "zeros", "map", 0.01, 0.03, True)
    assert torch.equal(out, torch.ones_like(out)) and torch.isfinite(dmaps).all()


@needs_triton
@pytest.mark.parametrize("padding,reduction", [("zeros", "map"), ("reflect", "none")])
def test_triton_one_tap_window_gradients(padding, reduction):
    from derain_kernels.triton import ssim as ts
    dev = triton_device()
    x, y = _images((2, 2, 9, 13), torch.float64, smooth=False)
    out = ts.ssim(x.float().to(dev), y.float().to(dev), 1, 1.5, 1.0, padding, reduction, 0.01, 0.03)
    g = torch.randn(out.shape, dtype=torch.float64)
    gx, gy = ts.ssim_backward(g.float().to(dev), x.float().to(dev), y.float().to(dev), 1, 1.5, 1.0, padding,
                              reduction, 0.01, 0.03)
    a, b = x.clone().requires_grad_(), y.clone().requires_grad_()
    ref.ssim(a, b, 1, padding=padding, reduction=reduction).backward(g)
    for got, want in ((gx, a.grad), (gy, b.grad)):
        torch.testing.assert_close(got.cpu().double(), want, rtol=2e-6, atol=1e-7 * float(want.abs().max()))


@needs_triton
def test_triton_empty_images():
    from derain_kernels.triton import ssim as ts
    x = torch.rand(2, 3, 0, 8, device=triton_device())
    assert torch.isnan(ts.ssim(x, x, 5, 1.5, 1.0, "zeros", "mean", 0.01, 0.03))
    assert ts.ssim(x, x, 5, 1.5, 1.0, "zeros", "map", 0.01, 0.03).shape == x.shape
    value, gx, gy = ts.ssim_with_grad(x, x, 5, 1.5, 1.0, "zeros", "none", 0.01, 0.03, True)
    assert value.shape == (2,) and torch.isnan(value).all() and gx.shape == gy.shape == x.shape
