"""Detail-adaptive noise: the step map falls off with the local detail of z_up (augment.py)."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import tiny_model

from cfm_core.augment import DETAIL_WINDOW, alpha_bar_map, alpha_bars, detail_noise_steps, local_detail, noise_augment
from cfm_core.autoencoders import SpaceToDepth
from cfm_core.checkpoint import load_model, save_model
from cfm_core.contrast import contrast
from cfm_core.errors import CFMError
from cfm_core.pipeline import boost


def test_fractional_schedule_agrees_with_the_table_at_integer_steps_and_lies_between_them():
    table = alpha_bars()
    steps = torch.arange(0, 1000, 37)
    assert torch.allclose(alpha_bar_map(steps), table[steps], rtol=0, atol=1e-12)
    mid = alpha_bar_map(torch.tensor([100.5]))
    assert table[101] < mid < table[100]


def test_local_detail_of_analytic_images():
    flat = torch.full((1, 3, 20, 20), 0.3)
    assert local_detail(flat).abs().max() < 1e-6  # float rounding of the box mean
    # a ±a checkerboard: box_3 of it is ±a/9 (five of one sign, four of the other), so the high-pass is ±(8/9)·a
    a = 0.5
    y, x = torch.meshgrid(torch.arange(20), torch.arange(20), indexing="ij")
    board = (a * (1 - 2 * ((x + y) % 2))).float().expand(1, 3, 20, 20)
    inner = local_detail(board)[..., DETAIL_WINDOW:-DETAIL_WINDOW, DETAIL_WINDOW:-DETAIL_WINDOW]
    assert torch.allclose(inner, torch.full_like(inner, 8 / 9 * a), atol=1e-6)
    assert local_detail(board).shape == (1, 1, 20, 20)


def test_step_map_is_zero_on_flat_regions_and_full_on_detailed_ones():
    z = torch.zeros(1, 3, 32, 64)
    z[..., 32:] = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    steps = detail_noise_steps(z, 200, reference=0.05)
    assert steps.shape == (1, 1, 32, 64)
    assert steps[..., :24].max() == 0 and steps[..., 40:].min() == 200
    with pytest.raises(CFMError, match="noise_step"):
        detail_noise_steps(z, 1000, reference=0.05)


def test_a_step_map_noises_each_pixel_at_its_own_step():
    z = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    eps = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    steps = torch.zeros(1, 1, 4, 4)
    steps[..., 2:] = 400
    x0 = noise_augment(z, steps, noise=eps)
    assert torch.allclose(x0[..., :2], z[..., :2], atol=1e-4)  # step 0: ᾱ = 1 − 1e-10
    assert torch.allclose(x0[..., 2:], noise_augment(z, 400, noise=eps)[..., 2:], atol=1e-6)


def pixel_model(noise_detail: float | None, noise_step: int = 200):
    model = tiny_model(latent=SpaceToDepth(2).spec, seed=0)
    model.config = dataclasses.replace(model.config, noise_detail=noise_detail, noise_step=noise_step)
    return model


def test_boost_on_a_flat_image_ignores_the_noise_and_on_a_detailed_one_uses_it():
    flat = torch.full((1, 12, 16, 16), 0.2)
    detailed = torch.randn(1, 12, 16, 16, generator=torch.Generator().manual_seed(3)).clamp(-1, 1)
    adaptive, fixed = pixel_model(0.05), pixel_model(None)
    with torch.no_grad():
        def close(a, b):
            return torch.allclose(a.latent, b.latent, atol=1e-4)
        assert close(boost(adaptive, flat, seed=1), boost(fixed, flat, seed=1, noise_step=0))
        assert close(boost(adaptive, detailed, seed=1), boost(fixed, detailed, seed=1))
        assert not close(boost(fixed, flat, seed=1), boost(fixed, flat, seed=1, noise_step=0))


def test_the_reference_is_saved_checked_and_absent_by_default(tmp_path):
    path = str(tmp_path / "m.safetensors")
    save_model(pixel_model(0.047), path)
    assert load_model(path).config.noise_detail == 0.047
    config = pixel_model(None).config
    assert "noise_detail" not in {k for k, v in config.to_dict().items() if v is not None}
    for bad in (0, -1.0, float("inf"), True, "0.1"):
        with pytest.raises(CFMError, match="noise_detail=.* must be a positive number"):
            dataclasses.replace(config, noise_detail=bad)


def test_the_contrast_gate_takes_the_noise_from_faded_images_only():
    model = pixel_model(0.01)
    model.config = dataclasses.replace(model.config, contrast_reference=0.4, noise_contrast_gate=True)
    texture = torch.randn(1, 12, 16, 16, generator=torch.Generator().manual_seed(4))
    contrasty = 0.5 * texture / texture.std()  # contrast 0.5 ≥ 0.4: untouched, full step where detailed
    faded = 0.1 * texture / texture.std()  # contrast 0.1: (0.1 / 0.4)² of the step
    both = torch.cat([contrasty, faded])
    ungated = dataclasses.replace(model.config, noise_contrast_gate=False).noise_steps(both)
    gated = model.config.noise_steps(both)
    assert torch.allclose(gated[0], ungated[0]) and ungated[1].min() == 200
    assert float(contrast(faded)[0]) == pytest.approx(0.1, rel=0.01)
    assert torch.allclose(gated[1], ungated[1] * (contrast(faded)[0] / 0.4) ** 2, rtol=1e-5)
    with pytest.raises(CFMError, match="noise_contrast_gate"):
        dataclasses.replace(model.config, contrast_reference=None)
