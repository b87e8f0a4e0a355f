"""The public ops on CUDA tensors: their CUDA kernels (compiled C++, or Triton) on a real GPU.

With the extension built with its CUDA kernels (scripts/gpu_check.sh builds it so, and
DERAIN_TEST_CUDA_COMPILED=1, which it sets, requires it) every call below runs the compiled kernels.

Runs only with DERAIN_TEST_CUDA=1 on a machine whose torch sees a GPU (scripts/gpu_check.sh);
CI has no GPU, and there the same Triton kernels are tested under TRITON_INTERPRET=1 by
the test_triton_* tests of each op. Here every op goes through its public entry point and
the torch.ops dispatcher: the CUDA result is compared with the op's CPU kernel on the same
inputs (odd shapes, contiguous / channels-last / strided), gradients included; float64
gradcheck, opcheck and torch.compile(fullgraph=True) on CUDA; device-mixing errors.
"""
import os

import pytest
import torch

import derain_kernels as dk
from helpers import layouts

pytestmark = pytest.mark.skipif(
    not (os.environ.get("DERAIN_TEST_CUDA", "0") == "1" and torch.cuda.is_available()),
    reason="GPU tests: set DERAIN_TEST_CUDA=1 on a machine where torch sees a CUDA device")

DEV = "cuda"


@pytest.fixture(autouse=True)
def _exact_float32_convolutions():
    """Compare float32 convolutions with the CPU's at float32 accuracy: cuDNN's TF32 (PyTorch's default
    for convolutions, which the compiled block follows like nn.Conv2d) rounds inputs to 10 bits."""
    old = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = old


def _image(shape, dtype=torch.float32, lo=0.0, hi=1.0):
    return (torch.rand(shape, dtype=torch.float64) * (hi - lo) + lo).to(dtype)


def _angle(b):
    return torch.rand(b, dtype=torch.float64) * 360 - 90


# name -> (fn(*tensors), make_inputs(dtype) -> list of CPU tensors, indices of inputs that get gradients, exact)
CASES = {
    "median_filter 5 reflect": (lambda x: dk.median_filter(x, 5), lambda d: [_image((2, 3, 19, 23), d)], [0], True),
    "median_filter (3,7) zeros": (lambda x: dk.median_filter(x, (3, 7), "zeros"),
                                  lambda d: [_image((1, 2, 17, 9), d)], [0], True),
    "median_filter 31 replicate": (lambda x: dk.median_filter(x, 31, "replicate"),
                                   lambda d: [_image((1, 3, 40, 36), d)], [0], True),
    "soft_label min_composite": (lambda x: dk.soft_label(x, 7, min_composite=True),
                                 lambda d: [_image((2, 3, 21, 18), d)], [], True),
    "ssim zeros mean": (lambda x, y: dk.ssim(x, y), lambda d: [_image((2, 3, 23, 17), d), _image((2, 3, 23, 17), d)],
                        [0, 1], False),
    "ssim valid none": (lambda x, y: dk.ssim(x, y, padding="valid", reduction="none"),
                        lambda d: [_image((3, 2, 25, 31), d), _image((3, 2, 25, 31), d)], [0], False),
    "ssim reflect map": (lambda x, y: dk.ssim(x, y, 7, 1.0, padding="reflect", reduction="map"),
                         lambda d: [_image((2, 3, 13, 29), d), _image((2, 3, 13, 29), d)], [0, 1], False),
    "ssim_loss y only": (lambda x, y: dk.ssim_loss(x, y), lambda d: [_image((1, 3, 30, 33), d),
                                                                     _image((1, 3, 30, 33), d)], [1], False),
    "dark_channel 5": (lambda x: dk.dark_channel(x, 5), lambda d: [_image((2, 3, 17, 22), d)], [0], True),
    "dark_channel_loss 15": (lambda x: dk.dark_channel_loss(x, 15), lambda d: [_image((2, 3, 33, 27), d)], [0], False),
    "tv_loss mean": (lambda x: dk.tv_loss(x), lambda d: [_image((2, 3, 19, 21), d)], [0], False),
    "tv_loss none p2": (lambda x: dk.tv_loss(x, "none", 2), lambda d: [_image((3, 2, 11, 14), d)], [0], False),
    "rain_direction_loss": (lambda z, zg, a: dk.rain_direction_loss(z, zg, a),
                            lambda d: [_image((2, 3, 21, 19), d, -0.3, 0.3), _image((2, 3, 21, 19), d, -0.3, 0.3),
                                       _angle(2).to(d)], [0, 1], False),
    "min_composite broadcast": (lambda x, y: dk.min_composite(x, y),
                                lambda d: [_image((2, 3, 17, 23), d), _image((1, 3, 17, 23), d)], [0, 1], True),
    "rain_composite clamp": (lambda c, r: dk.rain_composite(c, r),
                             lambda d: [_image((2, 3, 17, 23), d), _image((2, 3, 17, 23), d, -0.4, 0.6)], [0, 1], True),
    "self_correcting_block 16 d3": (lambda x, w1, b1, w3, b3: dk.self_correcting_block(x, w1, b1, w3, b3, 3),
                                    lambda d: [_image((2, 16, 13, 19), d, -0.5, 1.0),
                                               0.1 * torch.randn(16, 16, 3, 3, dtype=d), 0.1 * torch.randn(16, dtype=d),
                                               0.1 * torch.randn(16, 16, 3, 3, dtype=d), 0.1 * torch.randn(16, dtype=d)],
                                    [0, 1, 2, 3, 4], False),
    "conv3x3_relu cat": (lambda x, x2, w, b: dk.conv3x3_relu(x, w, b, x2),
                         lambda d: [_image((2, 16, 13, 19), d, -0.5, 1.0), _image((2, 16, 13, 19), d, -0.5, 1.0),
                                    0.1 * torch.randn(16, 32, 3, 3, dtype=d), 0.1 * torch.randn(16, dtype=d)],
                         [0, 1, 2, 3], False),
    "conv3x3 tanh": (lambda x, w, b: dk.conv3x3(x, w, b, "tanh"),
                     lambda d: [_image((2, 16, 13, 19), d, -0.5, 1.0), 0.1 * torch.randn(3, 16, 3, 3, dtype=d),
                                0.1 * torch.randn(3, dtype=d)],
                     [0, 1, 2], False),
    "self_correcting_block 3 d2": (lambda x, w1, b1, w3, b3: dk.self_correcting_block(x, w1, b1, w3, b3, 2),
                                   lambda d: [_image((1, 3, 9, 7), d, -0.5, 1.0),
                                              0.3 * torch.randn(3, 3, 3, 3, dtype=d), 0.1 * torch.randn(3, dtype=d),
                                              0.3 * torch.randn(3, 3, 3, 3, dtype=d), 0.1 * torch.randn(3, dtype=d)],
                                   [0, 1, 2, 3, 4], False),
}


def _run(fn, inputs, grad_idx):
    """(output, gradients of sum(out * weight) w.r.t. inputs[grad_idx]); weight fixed per output shape."""
    xs = [t.detach().clone().requires_grad_(i in grad_idx) for i, t in enumerate(inputs)]
    out = fn(*xs)
    grads = []
    if grad_idx:
        gen = torch.Generator().manual_seed(1)
        w = torch.rand(out.shape, generator=gen, dtype=torch.float64).to(out.dtype).to(out.device)
        grads = torch.autograd.grad((out * w).sum(), [xs[i] for i in grad_idx])
    return out.detach(), grads


def _close(got, want, exact, what):
    got = got.cpu()
    if exact:
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True, msg=what)
    else:
        scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
        tol = 2e-5 if want.dtype == torch.float32 else 1e-10
        torch.testing.assert_close(got, want, rtol=tol, atol=tol * scale, equal_nan=True, msg=what)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu_kernel(name, dtype):
    fn, make, grad_idx, exact = CASES[name]
    inputs = make(dtype)
    want, want_g = _run(fn, inputs, grad_idx)
    got, got_g = _run(fn, [t.to(DEV) for t in inputs], grad_idx)
    assert got.device.type == "cuda"
    _close(got, want, exact, f"{name} forward")
    for i, a, b in zip(grad_idx, got_g, want_g):
        assert a.device.type == "cuda"
        # gradients that gather several outputs into one input (median, dark channel: scatter-add with
        # atomics on the GPU) are sums in another order than the CPU's: equal up to round-off
        _close(a, b, False, f"{name} gradient of input {i}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_cuda_layouts(name):
    """Channels-last, strided and transposed views of the first input give the contiguous result."""
    fn, make, grad_idx, exact = CASES[name]
    inputs = [t.to(DEV) for t in make(torch.float32)]
    if inputs[0].dim() != 4:
        pytest.skip("first input is not an image")
    want, want_g = _run(fn, inputs, grad_idx)
    for layout, x in layouts(inputs[0]):
        got, got_g = _run(fn, [x, *inputs[1:]], grad_idx)
        _close(got, want.cpu(), exact, f"{name} {layout} forward")
        for a, b in zip(got_g, want_g):
            _close(a, b.cpu(), False, f"{name} {layout} gradient")


def test_cuda_uint8_median_matches_cpu():
    x = (torch.rand(2, 3, 29, 31) * 255).round().to(torch.uint8)
    for k, pad in [(3, "reflect"), (9, "replicate"), ((5, 11), "zeros"), (31, "reflect")]:
        want = dk.median_filter(x, k, pad)
        got = dk.median_filter(x.to(DEV), k, pad)
        assert got.dtype == torch.uint8 and got.device.type == "cuda"
        torch.testing.assert_close(got.cpu(), want, rtol=0, atol=0, msg=f"k={k} {pad}")


def test_cuda_nan_policy_matches_cpu():
    x = torch.rand(1, 2, 15, 16)
    x[0, 1, 7, 3] = float("nan")
    for f in (lambda t: dk.median_filter(t, 5), lambda t: dk.dark_channel(t, 3),
              lambda t: dk.ssim(t, t.flip(-1), reduction="map"), lambda t: dk.tv_loss(t, "none")):
        torch.testing.assert_close(f(x.to(DEV)).cpu(), f(x), rtol=2e-5, atol=2e-5, equal_nan=True)


@pytest.mark.parametrize("name", ["median_filter 5 reflect", "ssim zeros mean", "ssim reflect map", "dark_channel 5",
                                  "tv_loss mean", "rain_direction_loss", "min_composite broadcast",
                                  "rain_composite clamp", "self_correcting_block 3 d2"])
def test_cuda_gradcheck_float64(name):
    fn, make, grad_idx, _ = CASES[name]
    inputs = [t.to(DEV) for t in make(torch.float64)]
    if name.startswith("median") or name.startswith("dark") or name.startswith("min"):
        inputs[0] = inputs[0] + 1e-3 * torch.arange(inputs[0].numel(), device=DEV,
                                                    dtype=torch.float64).reshape(inputs[0].shape)  # no ties
    xs = [t.detach().requires_grad_(i in grad_idx) for i, t in enumerate(inputs)]
    assert torch.autograd.gradcheck(fn, xs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_cuda_opcheck():
    x, y = torch.rand(2, 3, 11, 13, device=DEV), torch.rand(2, 3, 11, 13, device=DEV)
    ops = torch.ops.derain
    torch.library.opcheck(ops.median_filter, (x, [3, 5], "reflect"))
    torch.library.opcheck(ops.ssim, (x, y, 11, 1.5, 1.0, "zeros", "mean", 0.01, 0.03))
    torch.library.opcheck(ops._dark_channel, (x, 5))
    torch.library.opcheck(ops.min_composite, (x, y))
    torch.library.opcheck(ops.rain_composite, (x, y - 0.5, True))
    xb = torch.randn(1, 16, 9, 10, device=DEV).contiguous(memory_format=torch.channels_last)
    p = [0.1 * torch.randn(16, 16, 3, 3, device=DEV), 0.1 * torch.randn(16, device=DEV),
         0.1 * torch.randn(16, 16, 3, 3, device=DEV), 0.1 * torch.randn(16, device=DEV)]
    torch.library.opcheck(ops.self_correcting_block, (xb, *p, 3))
    torch.library.opcheck(ops._self_correcting_block_train, (xb, *p, 2))


def test_cuda_torch_compile_fullgraph():
    """A training-loss graph with our ops, compiled whole on CUDA, equals eager (values and gradients)."""
    block = dk.nn.SelfCorrectingBlock(16, 3).to(DEV)
    head = torch.nn.Conv2d(3, 16, 3, padding=1).to(DEV)
    tail = torch.nn.Conv2d(16, 3, 3, padding=1).to(DEV)

    def loss(x, y):
        r = tail(block(head(x)))
        label = dk.soft_label(x, 7)
        d = x - r
        return (dk.ssim_loss(d, y) + 0.1 * dk.tv_loss(r) + dk.dark_channel_loss(d, 5)
                + (dk.rain_composite(d, r) - label).abs().mean())

    compiled = torch.compile(loss, fullgraph=True)
    x, y = torch.rand(2, 3, 24, 28, device=DEV), torch.rand(2, 3, 24, 28, device=DEV)
    params = [*block.parameters(), *head.parameters(), *tail.parameters()]
    want = loss(x, y)
    want_g = torch.autograd.grad(want, params)
    got = compiled(x, y)
    got_g = torch.autograd.grad(got, params)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for a, b in zip(got_g, want_g):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_cuda_training_step_of_the_model():
    """RainOerMeNet's training forward on CUDA runs our block op and matches the CPU model."""
    from derain.models.rain_oer_me import RainOerMeNet

    torch.manual_seed(0)
    cpu = RainOerMeNet().train()
    gpu = RainOerMeNet().train().to(DEV)
    gpu.load_state_dict(cpu.state_dict())
    x = torch.rand(2, 3, 20, 22)
    outs_c = cpu.forward_train(x)
    outs_g = gpu.forward_train(x.to(DEV))
    for a, b in zip(outs_g, outs_c):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-4)
    sum(o.abs().mean() for o in outs_c).backward()
    sum(o.abs().mean() for o in outs_g).backward()
    for (n, pc), pg in zip(cpu.named_parameters(), gpu.parameters()):
        if pc.grad is not None:
            torch.testing.assert_close(pg.grad.cpu(), pc.grad, rtol=1e-3, atol=1e-4, msg=n)


def test_cuda_kernels_are_the_compiled_ones_when_required():
    info = dk.backend_info()
    if os.environ.get("DERAIN_TEST_CUDA_COMPILED", "0") == "1":
        assert info["cuda_kernels"] == "compiled", info["cuda_kernel_per_op"]
    else:
        assert info["cuda_kernels"] in ("compiled", "Triton JIT"), info["cuda_kernel_per_op"]


def test_cuda_training_step_under_cuda_graphs():
    """A compiled training step with our ops runs under CUDA graphs (reduce-overhead) and matches eager."""
    block = dk.nn.SelfCorrectingBlock(8, 3).to(DEV)
    head = torch.nn.Conv2d(3, 8, 3, padding=1).to(DEV)
    tail = torch.nn.Conv2d(8, 3, 3, padding=1).to(DEV)
    params = [*block.parameters(), *head.parameters(), *tail.parameters()]

    def loss_fn(x, y):
        r = tail(block(head(x)))
        d = x - r
        return (dk.ssim_loss(d, y) + 0.1 * dk.tv_loss(r) + dk.dark_channel_loss(d, 5)
                + (dk.min_composite(dk.rain_composite(d, r), dk.median_filter(x, 3)) - y).abs().mean())

    compiled = torch.compile(loss_fn, mode="reduce-overhead", fullgraph=True)
    x, y = torch.rand(2, 3, 20, 24, device=DEV), torch.rand(2, 3, 20, 24, device=DEV)
    want = loss_fn(x, y)
    want_g = torch.autograd.grad(want, params)
    for _ in range(3):  # warm-up, recording, replay
        got = compiled(x, y)
        got_g = torch.autograd.grad(got, params)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for a, b in zip(got_g, want_g):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.uint8])
def test_cuda_tiled_median_matches_cpu_value_and_index(dtype):
    # tile shapes 32x32 (k <= 59), 32x16, 16x16, 16x8, 8x8 (k <= 83), then per pixel (85)
    x = torch.randint(0, 40, (2, 3, 70, 45)).to(dtype)
    for k, pad in [(3, "reflect"), (31, "zeros"), (61, "replicate"), (75, "reflect"), (83, "zeros"),
                   (85, "reflect")]:
        want = torch.ops.derain._median_filter_with_index(x, [k, k] if isinstance(k, int) else list(k), pad)
        got = torch.ops.derain._median_filter_with_index(x.to(DEV), [k, k] if isinstance(k, int) else list(k), pad)
        torch.testing.assert_close(got[0].cpu(), want[0], rtol=0, atol=0, msg=f"k={k} {pad}")
        assert torch.equal(got[1].cpu(), want[1]), f"index k={k} {pad}"
        with dk.config.override(gpu_tiles=False):
            assert torch.equal(dk.median_filter(x.to(DEV), k, pad).cpu(), want[0])


@pytest.mark.parametrize("padding", ["zeros", "valid", "reflect"])
def test_cuda_ssim_tiles_equal_per_element_kernels_bit_for_bit(padding):
    x = torch.rand(2, 3, 70, 97, device=DEV)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    args = (11, 1.5, 1.0, padding, "none", 0.01, 0.03)
    got = torch.ops.derain._ssim_with_grad(x, y, *args, True)
    with dk.config.override(gpu_tiles=False):
        want = torch.ops.derain._ssim_with_grad(x, y, *args, True)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    _close(got[1], torch.ops.derain._ssim_with_grad(x.cpu(), y.cpu(), *args, True)[1], False, "gx vs CPU")


def test_cuda_block_fused_epilogues_match_aten_epilogues():
    x = torch.randn(2, 16, 33, 41, device=DEV).contiguous(memory_format=torch.channels_last)
    p = [0.1 * torch.randn(16, 16, 3, 3, device=DEV), 0.1 * torch.randn(16, device=DEV),
         0.1 * torch.randn(16, 16, 3, 3, device=DEV), 0.1 * torch.randn(16, device=DEV)]
    fused = torch.ops.derain._self_correcting_block_train(x, *p, 3)
    with dk.config.override(fused_epilogues=False):
        plain = torch.ops.derain._self_correcting_block_train(x, *p, 3)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=2e-5, atol=2e-5)


def test_cuda_network_inference_matches_cpu():
    from derain_kernels.ops.network import param_shapes, rain_oer_me_derain

    torch.manual_seed(0)
    params = [0.05 * torch.randn(s) for s in param_shapes(3, 16)]
    x = torch.rand(2, 3, 37, 45)
    want = rain_oer_me_derain(x, params)
    got = rain_oer_me_derain(x.to(DEV), [p.to(DEV) for p in params])
    torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-5)
    if os.environ.get("DERAIN_TEST_CUDA_COMPILED", "0") == "1":  # the compiled network ran, not the reference
        from derain_kernels.ops.network import _compiled_cuda
        assert _compiled_cuda()
        with dk.config.override(fused_epilogues=False):  # cuDNN-fused epilogues against ATen's
            plain = rain_oer_me_derain(x.to(DEV), [p.to(DEV) for p in params])
        torch.testing.assert_close(got, plain, rtol=1e-5, atol=1e-5)


def test_cuda_device_mixing_is_a_clear_error():
    x = torch.rand(1, 3, 8, 8, device=DEV)
    with pytest.raises(ValueError, match="same device"):
        dk.ssim(x, x.cpu())
    with pytest.raises(ValueError, match="same device"):
        dk.min_composite(x, x.cpu())
    p = [torch.zeros(3, 3, 3, 3), torch.zeros(3), torch.zeros(3, 3, 3, 3), torch.zeros(3)]
    with pytest.raises(ValueError, match="same device"):
        dk.self_correcting_block(x, *p, 2)
