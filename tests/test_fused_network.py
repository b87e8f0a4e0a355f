"""Fused inference of the whole network (RainOerMeNet.fused / nn.FusedRainOerMe) against eager PyTorch."""
import pytest
import torch

import derain_kernels as dk
from derain.models.rain_oer_me import FUSED_PARAM_KEYS, RainOerMeNet, fused_params
from derain_kernels import reference as ref
from derain_kernels.ops.network import N_PARAMS
from contract import CONTRACTS, contract_tests, network_model as _model

# layouts x dtypes, opcheck, torch.compile, bad arguments of the op library's side: tests/contract.py;
# here: the model's side (RainOerMeNet.fused(), fused_params) against the eager network
TestContract = contract_tests(CONTRACTS["rain_oer_me_derain"])


def _close(a, b, scale=1.0):
    torch.testing.assert_close(a, b, rtol=0, atol=2e-5 * scale)


@pytest.mark.parametrize("shape", [(1, 3, 37, 51), (2, 3, 20, 17), (1, 3, 1, 1), (3, 3, 2, 5), (1, 3, 90, 7)])
def test_matches_eager_random_weights(shape):
    m = _model()
    x = torch.rand(shape)
    with torch.no_grad():
        expected = m(x)
    out = m.fused()(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    _close(out, expected)


def test_matches_eager_with_authors_weights(shared_dir):
    m = RainOerMeNet().eval()
    sd = torch.load(shared_dir / "weights" / "rain-over-me" / "rain1400.pth", map_location="cpu")
    m.load_state_dict(sd)
    x = torch.rand(1, 3, 61, 83)
    with torch.no_grad():
        expected = m(x)
    _close(dk.nn.FusedRainOerMe(fused_params(sd))(x), expected)  # extra keys (out2.*) are ignored
    _close(m.fused()(x), expected)


def test_band_seams_with_many_threads():
    m = _model(1)
    x = torch.rand(1, 3, 133, 29)
    fused = m.fused()
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        out = fused(x)
    finally:
        torch.set_num_threads(old)
    with torch.no_grad():
        _close(out, m(x))


def test_float64_and_reference():
    m = _model(2).double()
    x = torch.rand(2, 3, 19, 23, dtype=torch.float64)
    out = m.fused()(x)
    expected = ref.rain_oer_me_derain(x, fused_params(m.state_dict()))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-11)
    with torch.no_grad():
        torch.testing.assert_close(out, m(x), rtol=0, atol=1e-11)


def test_no_grad():
    fused = _model(3).fused()
    assert not fused.training
    x = torch.rand(2, 3, 15, 21, requires_grad=True)
    assert not fused(x).requires_grad
    assert not fused(x.contiguous(memory_format=torch.channels_last)).requires_grad


def test_nan_propagates():
    m = _model(4)
    x = torch.rand(1, 3, 40, 40)
    x[0, 1, 20, 20] = float("nan")
    out = m.fused()(x)
    with torch.no_grad():
        expected = m(x)
    assert torch.isnan(out).any()
    torch.testing.assert_close(out, expected, rtol=0, atol=2e-5, equal_nan=True)


def test_fused_module_buffers_follow_state_dict():
    m = _model(5)
    fused = dk.nn.FusedRainOerMe(fused_params(m.state_dict()))
    assert len(list(fused.buffers())) == len(FUSED_PARAM_KEYS) == N_PARAMS == 38
    with torch.no_grad():
        m.inc[0].bias.add_(1.0)  # a snapshot: later changes of the model do not leak in
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(fused(x), m(x))
        _close(m.fused()(x), m(x))


@pytest.mark.parametrize("bad,match,exc", [
    (lambda f: f(torch.rand(1, 4, 8, 8)), r"x must have 3 \(RGB\) channels", ValueError),
    (lambda f: f(torch.rand(3, 8, 8)), "4-D", ValueError),
    (lambda f: f(torch.rand(1, 3, 8, 8).half()), "x must have dtype", TypeError),
    (lambda f: f("image"), "x must be a torch.Tensor", TypeError),
    (lambda f: fused_params({"inc.0.weight": torch.rand(16, 3, 3, 3)}), "missing", ValueError),
])
def test_bad_arguments(bad, match, exc):
    fused = _model().fused()
    with pytest.raises(exc, match=match):
        bad(fused)
