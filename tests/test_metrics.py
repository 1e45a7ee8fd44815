"""PSNR / SSIM / SWD against known values, skimage and scipy references, and their defining properties."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cfm_core.errors import CFMError
from cfm_core.evaluate.metrics import (
    _blur5,
    laplacian_pyramid,
    psnr,
    pyramid_levels,
    pyramid_up,
    sliced_wasserstein,
    ssim,
    swd,
)


def photo(size: int = 128) -> torch.Tensor:
    """skimage's astronaut, area-downsampled to size², (3, H, W) in [0, 1]."""
    from skimage import data

    image = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float() / 255
    return F.interpolate(image[None], size=(size, size), mode="area")[0]


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    from scipy.ndimage import gaussian_filter

    return torch.from_numpy(gaussian_filter(image.numpy(), sigma=(0, sigma, sigma), mode="mirror")).float()


def test_identical_images_give_inf_psnr_ssim_one_and_zero_swd():
    image = photo(64)
    assert psnr(image, image.clone()) == math.inf
    assert ssim(image, image.clone()) == pytest.approx(1.0, abs=1e-12)
    result = swd([image, image.flip(-1)], [image.clone(), image.flip(-1)])
    assert result.average == 0.0 and result.levels == [0.0] * len(result.levels)


@pytest.mark.parametrize("sigma", [0.01, 0.05, 0.1])
def test_psnr_of_gaussian_noise_on_a_constant_image(sigma):
    gen = torch.Generator().manual_seed(1)
    clean = torch.full((3, 128, 128), 0.5)
    noisy = clean + sigma * torch.randn(clean.shape, generator=gen)
    assert psnr(noisy, clean) == pytest.approx(20 * math.log10(1 / sigma), abs=0.1)
    assert psnr(noisy * 255, clean * 255, data_range=255) == pytest.approx(psnr(noisy, clean), abs=1e-5)


def test_psnr_of_a_batch_is_the_mean_of_per_image_values():
    a, gen = photo(32), torch.Generator().manual_seed(0)
    b1 = (a + 0.02 * torch.randn(a.shape, generator=gen)).clamp(0, 1)
    b2 = (a + 0.08 * torch.randn(a.shape, generator=gen)).clamp(0, 1)
    batch = psnr(torch.stack([b1, b2]), torch.stack([a, a]))
    assert batch == pytest.approx((psnr(b1, a) + psnr(b2, a)) / 2, abs=1e-9)


@pytest.mark.parametrize("distortion", ["noise", "blur", "shift"])
def test_ssim_matches_skimage(distortion):
    from skimage.metrics import structural_similarity

    a = photo(96)
    if distortion == "noise":
        b = (a + 0.06 * torch.randn(a.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    elif distortion == "blur":
        b = gaussian_blur(a, 1.5)
    else:
        b = torch.roll(a, shifts=(1, 2), dims=(1, 2))
    reference = structural_similarity(a.permute(1, 2, 0).double().numpy(), b.permute(1, 2, 0).double().numpy(),
                                      gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                      data_range=1.0, channel_axis=-1)
    assert ssim(a, b) == pytest.approx(reference, abs=1e-3)
    assert 0 < ssim(a, b) < 0.99


def test_blur5_is_karras_mirror_binomial_filter():
    from scipy.ndimage import convolve

    image = photo(40)[:, :37, :]  # odd height too
    k = np.array([1, 4, 6, 4, 1], dtype=np.float64) / 16
    reference = np.stack([convolve(c, np.outer(k, k), mode="mirror") for c in image.double().numpy()])
    np.testing.assert_allclose(_blur5(image[None].double())[0].numpy(), reference, atol=1e-12)


def test_laplacian_pyramid_shapes_and_exact_reconstruction():
    image = photo(64)[:, :, :60]  # non-square
    levels = laplacian_pyramid(image, 3)
    assert [tuple(lv.shape) for lv in levels] == [(3, 64, 60), (3, 32, 30), (3, 16, 15)]
    x = levels[-1][None]
    for band in reversed(levels[:-1]):
        x = band[None] + pyramid_up(x, band.shape[-2:])
    torch.testing.assert_close(x[0], image, atol=1e-5, rtol=0)


def test_pyramid_levels_stop_at_16_pixels():
    assert pyramid_levels([torch.zeros(3, 128, 128)]) == 4  # 128, 64, 32, 16
    assert pyramid_levels([torch.zeros(3, 128, 200), torch.zeros(3, 40, 64)]) == 2  # 40, 20
    with pytest.raises(CFMError, match="min_resolution"):
        pyramid_levels([torch.zeros(3, 12, 64)])


def test_swd_grows_with_blur_strength_on_a_photo():
    image = photo(128)
    results = [swd([image], [gaussian_blur(image, s)], patches_per_image=256) for s in (0.5, 1.0, 2.0, 4.0)]
    averages = [r.average for r in results]
    assert averages == sorted(averages) and averages[0] > 0, averages
    assert len(results[0].levels) == 4 and results[0].resolutions == [128, 64, 32, 16]
    finest = [r.levels[0] for r in results]
    assert finest == sorted(finest), finest


def test_swd_is_deterministic_in_its_seed():
    image = photo(64)
    other = gaussian_blur(image, 1.0)
    first, again = swd([image], [other], seed=3), swd([image], [other], seed=3)
    assert first == again
    assert swd([image], [other], seed=4).average != first.average


def test_sliced_wasserstein_of_shifted_sets_is_the_shift_along_the_directions():
    # Projections of a set shifted by c: every sorted pair differs by <c, dir>; the mean |.| over random unit
    # directions in D dims is |c|·E|u_1| = |c|·Γ(D/2)/(√π·Γ((D+1)/2)).
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(200, 8, generator=gen, dtype=torch.float64)
    shift = torch.zeros(8, dtype=torch.float64)
    shift[0] = 2.0
    expected = 2.0 * math.gamma(4) / (math.sqrt(math.pi) * math.gamma(4.5))
    assert sliced_wasserstein(a, a + shift, projections=512, repeats=4) == pytest.approx(expected, rel=0.05)
    assert sliced_wasserstein(a, a.clone()) == 0.0


def test_metric_input_errors():
    with pytest.raises(CFMError, match="differ in shape"):
        psnr(torch.zeros(3, 8, 8), torch.zeros(3, 8, 9))
    with pytest.raises(CFMError, match="window"):
        ssim(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))
    with pytest.raises(CFMError, match="equally many"):
        swd([torch.zeros(3, 32, 32)], [])
