"""Noise augmentation: the official cosine log-SNR schedule's constants, the x0 formula, batch-stable noise."""
from __future__ import annotations

import math

import pytest
import torch

from cfm_core.augment import DEFAULT_NOISE_STEP, alpha_bar, alpha_bars, batch_stable_noise, gaussian_like, noise_augment
from cfm_core.errors import CFMError

# ᾱ at these steps of the official 1000-step schedule (official-code-facts.md)
OFFICIAL_ALPHA_BARS = {100: 0.975477, 200: 0.904318, 300: 0.793504, 400: 0.6539040, 500: 0.499209, 600: 0.344591}


@pytest.mark.parametrize("step, expected", sorted(OFFICIAL_ALPHA_BARS.items()))
def test_alpha_bar_matches_the_official_schedule(step, expected):
    assert alpha_bar(step) == pytest.approx(expected, abs=1e-6)


def test_step_400_is_the_default_and_its_signal_and_noise_scales():
    assert DEFAULT_NOISE_STEP == 400
    ab = alpha_bar(400)
    assert math.sqrt(ab) == pytest.approx(0.80864328, abs=1e-7)
    assert math.sqrt(1 - ab) == pytest.approx(0.58829927, abs=1e-7)


def test_schedule_shape():
    ab = alpha_bars()
    assert ab.shape == (1000,) and ab.dtype == torch.float64
    assert ab[0] == pytest.approx(1.0, abs=1e-9) and ab[-1] < 1e-9
    assert bool((ab[1:] < ab[:-1]).all())  # strictly decreasing: more noise at higher steps
    tau = 400 / 999  # step 400 is τ = 400/999, not 0.4
    logsnr = -2 * math.log(math.tan(math.pi * tau / 2) + 1e-5)
    assert alpha_bar(400) == pytest.approx(1 / (1 + math.exp(-logsnr)), abs=1e-12)


@pytest.mark.parametrize("step", [-1, 1000, 400.0, "400", None, True])
def test_bad_noise_step_is_refused(step):
    with pytest.raises(CFMError, match="noise_step"):
        alpha_bar(step)
    with pytest.raises(CFMError, match="noise_step"):
        noise_augment(torch.zeros(1, 4, 2, 2), step, seed=0)


def test_noise_augment_formula_with_explicit_noise():
    z = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(1))
    for step in (0, 250, 400, 999):
        ab = alpha_bar(step)
        expected = math.sqrt(ab) * z + math.sqrt(1 - ab) * eps
        torch.testing.assert_close(noise_augment(z, step, noise=eps), expected)
    torch.testing.assert_close(noise_augment(z, 0, noise=eps), z, atol=1e-4, rtol=0)


def test_noise_augment_with_a_seed_uses_batch_stable_noise():
    z = torch.randn(3, 4, 6, 6)
    eps = batch_stable_noise(tuple(z.shape), seed=7)
    torch.testing.assert_close(noise_augment(z, 400, seed=7), noise_augment(z, 400, noise=eps))


def test_batch_stable_noise_element_i_is_the_same_in_a_batch_of_one_and_of_four():
    batch = batch_stable_noise((4, 4, 8, 8), seed=123)
    for i in range(4):
        alone = batch_stable_noise((1, 4, 8, 8), seed=123, batch_indices=[i])
        assert torch.equal(alone[0], batch[i])
    picked = batch_stable_noise((2, 4, 8, 8), seed=123, batch_indices=[3, 1])
    assert torch.equal(picked[0], batch[3]) and torch.equal(picked[1], batch[1])


def test_batch_stable_noise_differs_across_seeds_elements_and_streams():
    a = batch_stable_noise((2, 4, 8, 8), seed=1)
    b = batch_stable_noise((2, 4, 8, 8), seed=2)
    s = batch_stable_noise((2, 4, 8, 8), seed=1, stream=1)
    assert not torch.equal(a, b) and not torch.equal(a[0], a[1]) and not torch.equal(a, s)
    assert torch.equal(a, batch_stable_noise((2, 4, 8, 8), seed=1))  # deterministic


def test_batch_stable_noise_is_standard_normal():
    eps = batch_stable_noise((8, 4, 32, 32), seed=0)
    assert abs(eps.mean().item()) < 0.02 and abs(eps.std().item() - 1) < 0.02


def test_batch_stable_noise_dtype_and_bad_batch_indices():
    eps = batch_stable_noise((2, 3, 4, 4), seed=0, dtype=torch.float16)
    assert eps.dtype == torch.float16
    with pytest.raises(CFMError, match="batch_indices"):
        batch_stable_noise((2, 3, 4, 4), seed=0, batch_indices=[0])


def test_gaussian_like_from_a_generator_is_reproducible():
    like = torch.zeros(2, 3, 4, 4, dtype=torch.float64)
    a = gaussian_like(like, generator=torch.Generator().manual_seed(5))
    b = gaussian_like(like, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.dtype == torch.float64 and a.shape == like.shape
