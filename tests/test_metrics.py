"""derain.metrics against scikit-image (the evaluation convention of docs/method.md#evaluation-protocol)."""
import numpy as np
import pytest
import torch
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from derain.io import load_image
from derain.metrics import psnr_y, quantise, rgb_to_y, ssim_y


def skimage_y(img: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> skimage's Y (16–235) of the uint8 image, float64."""
    u8 = np.round(np.clip(img.permute(1, 2, 0).double().numpy(), 0, 1) * 255).astype(np.uint8)
    return rgb2ycbcr(u8)[..., 0]


def skimage_metrics(pred, target):
    yp, yt = skimage_y(pred), skimage_y(target)
    psnr = peak_signal_noise_ratio(yt, yp, data_range=255)
    ssim = structural_similarity(yp, yt, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=255)
    return psnr, ssim


def test_rgb_to_y_matches_matlab_bt601():
    x = torch.rand(2, 3, 5, 7, dtype=torch.float64)
    y = rgb_to_y(x)
    assert y.shape == (2, 1, 5, 7) and y.dtype == torch.float64
    ref = rgb2ycbcr(x[0].permute(1, 2, 0).numpy())[..., 0] / 255.0
    np.testing.assert_allclose(y[0, 0].numpy(), ref, atol=1e-12)
    assert rgb_to_y(torch.zeros(3, 1, 1)).item() == pytest.approx(16 / 255)
    assert rgb_to_y(torch.ones(3, 1, 1, dtype=torch.float64)).item() == pytest.approx(235 / 255)


def test_metrics_match_skimage_on_random_images():
    target = torch.rand(3, 37, 45)
    pred = (target + 0.1 * torch.randn_like(target)).clamp(0, 1)
    want_psnr, want_ssim = skimage_metrics(pred, target)
    assert psnr_y(pred, target).item() == pytest.approx(want_psnr, abs=1e-4)
    assert ssim_y(pred, target).item() == pytest.approx(want_ssim, abs=1e-4)


def real_pairs(shared_dir):
    out = []
    for name, files in (("rain100h-dev", ("3.png",)), ("sirr-test20", None)):   # 480×320 and odd 481×321
        folder = shared_dir / "data" / "paired" / name
        if not folder.is_dir():
            continue
        rain = sorted((folder / "rain").iterdir())[:1] if files is None else [folder / "rain" / f for f in files]
        for r in rain:
            c = folder / "norain" / r.name
            if r.is_file() and c.is_file():
                out.append((load_image(r), load_image(c)))
    if not out:
        pytest.skip("no paired images in the shared data folder")
    return out


def test_metrics_match_skimage_on_real_pairs(shared_dir):
    pairs = real_pairs(shared_dir)
    for rain, clean in pairs:
        want_psnr, want_ssim = skimage_metrics(rain, clean)
        assert psnr_y(rain, clean).item() == pytest.approx(want_psnr, abs=1e-4)
        assert ssim_y(rain, clean).item() == pytest.approx(want_ssim, abs=1e-4)
        # a slightly better "prediction": halfway between rain and clean
        mid = 0.5 * (rain + clean)
        want_psnr, want_ssim = skimage_metrics(mid, clean)
        assert psnr_y(mid, clean).item() == pytest.approx(want_psnr, abs=1e-4)
        assert ssim_y(mid, clean).item() == pytest.approx(want_ssim, abs=1e-4)


def test_batches_give_one_value_per_image():
    target = torch.rand(3, 3, 24, 20)
    pred = (target + 0.05 * torch.randn_like(target)).clamp(0, 1)
    p, s = psnr_y(pred, target), ssim_y(pred, target)
    assert p.shape == (3,) and s.shape == (3,) and p.dtype == torch.float64
    for i in range(3):
        assert p[i].item() == pytest.approx(psnr_y(pred[i], target[i]).item(), abs=1e-9)
        assert s[i].item() == pytest.approx(ssim_y(pred[i], target[i]).item(), abs=1e-9)


def test_quantisation_to_uint8_first():
    target = torch.rand(3, 16, 16)
    q = quantise(target)
    nudged = (q + 0.4 / 255 * (torch.rand_like(q) - 0.5)).float()   # same uint8 values
    assert torch.isinf(psnr_y(nudged, q.float()))
    assert ssim_y(nudged, q.float()).item() == pytest.approx(1.0, abs=1e-12)
    outside = target.clone()
    outside[0, 0, 0] = 1.7                                             # clamped like a saved image
    clamped = outside.clamp(0, 1)
    assert psnr_y(outside, target).item() == psnr_y(clamped, target).item()


def test_bad_arguments():
    a = torch.rand(3, 16, 16)
    with pytest.raises(ValueError, match="same shape"):
        psnr_y(a, torch.rand(3, 16, 15))
    with pytest.raises(ValueError, match="RGB"):
        ssim_y(torch.rand(1, 16, 16), torch.rand(1, 16, 16))
    with pytest.raises(TypeError, match="floating-point"):
        psnr_y((a * 255).to(torch.uint8), a)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim_y(torch.rand(3, 10, 30), torch.rand(3, 10, 30))
    with pytest.raises(TypeError, match="torch.Tensor"):
        rgb_to_y(np.zeros((3, 4, 4)))
