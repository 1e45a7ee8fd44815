"""Contrast normalisation of pixel-space models (cfm_core/contrast.py): exact algebra around the network."""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch
from helpers import default_latent, tiny_model

from cfm_core.autoencoders import SpaceToDepth
from cfm_core.checkpoint import load_model, read_config, save_model
from cfm_core.contrast import CONTRAST_GAIN_MAX, ContrastGain, contrast
from cfm_core.errors import CFMError
from cfm_core.pipeline import boost


def pixel_model(reference: float | None, seed: int = 0):
    model = tiny_model(latent=SpaceToDepth(2).spec, seed=seed)
    model.config = dataclasses.replace(model.config, contrast_reference=reference)
    return model


def image(seed: int = 0, shape=(1, 12, 16, 16)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).mul(0.4).clamp(-1, 1)


def test_images_at_the_reference_contrast_are_untouched_bit_for_bit():
    z = image()
    plain, normed = pixel_model(None), pixel_model(float(contrast(z)) * 0.9)
    assert torch.equal(boost(plain, z, noise_step=0).latent, boost(normed, z, noise_step=0).latent)


@pytest.mark.parametrize("fade", [0.5, 0.2])
def test_a_faded_image_gets_the_faded_result_of_the_contrasty_one(fade):
    # reference = the contrast of z, so a copy faded by s is solved at z's contrast (gain 1/s ≤ 8) and the result is
    # faded back: boost(faded) = μ + s·(boost(z) − μ), whatever the network does
    z = image(1)
    mean = z.mean((2, 3), keepdim=True)
    faded = mean + fade * (z - mean)
    plain, normed = pixel_model(None), pixel_model(float(contrast(z)))
    expected = mean + fade * (boost(plain, z, noise_step=0).latent - mean)
    got = boost(normed, faded, noise_step=0).latent
    assert torch.allclose(got, expected, atol=1e-5)
    without = boost(plain, faded, noise_step=0).latent  # and the network alone does not scale like that
    assert (without - expected).abs().max() > 100 * (got - expected).abs().max()


def test_gain_is_per_sample_and_bounded():
    z = torch.cat([image(2), 0.001 * image(3), image(4) * 0.3])
    gain = ContrastGain.measure(z, reference=float(contrast(image(2))[0]))
    assert gain.gain.shape == (3, 1, 1, 1)
    assert gain.gain[0] == 1 and gain.gain[1] == CONTRAST_GAIN_MAX and 1 < gain.gain[2] < CONTRAST_GAIN_MAX
    assert torch.allclose(gain.inverse(gain.forward(z)), z, atol=1e-6)
    normed = pixel_model(float(contrast(image(2))[0]))
    batch = boost(normed, z, noise_step=0).latent
    for i in range(3):
        alone = boost(normed, z[i:i + 1], noise_step=0, batch_indices=[i]).latent  # the same start-point noise
        assert torch.allclose(batch[i:i + 1], alone, atol=1e-5)


def test_previews_show_the_returned_image():
    z = 0.2 * image(5)
    normed = pixel_model(float(contrast(image(5))))
    seen = []
    result = boost(normed, z, noise_step=0, steps=3, callback=lambda info: seen.append(info.x1_estimate()))
    assert len(seen) == 3 and torch.allclose(seen[-1], result.latent, atol=1e-5)


def test_the_reference_is_saved_checked_and_absent_in_old_files(tmp_path):
    path = str(tmp_path / "m.safetensors")
    save_model(pixel_model(0.45), path)
    assert read_config(path).contrast_reference == 0.45 and load_model(path).config.contrast_reference == 0.45
    config = pixel_model(None).config
    assert config.contrast_reference is None and "contrast_reference" not in {
        k for k, v in config.to_dict().items() if v is not None}
    for bad in (0, -1.0, float("nan"), True, "0.4"):
        with pytest.raises(CFMError, match="contrast_reference=.* must be a positive number"):
            dataclasses.replace(config, contrast_reference=bad)
    with pytest.raises(CFMError, match="pixel-space models only"):
        dataclasses.replace(tiny_model(latent=default_latent(4)).config, contrast_reference=0.4)


def test_the_cli_switch_turns_it_off(tmp_path):
    from PIL import Image

    from cfm_core.__main__ import main

    normed, plain = str(tmp_path / "normed.safetensors"), str(tmp_path / "plain.safetensors")
    save_model(pixel_model(0.45, seed=7), normed)
    save_model(pixel_model(None, seed=7), plain)
    flat = (128 + 4 * torch.randn(32, 32, 3, generator=torch.Generator().manual_seed(0))).clamp(0, 255)
    Image.fromarray(flat.to(torch.uint8).numpy()).save(tmp_path / "flat.png")

    def run(model: str, *flags: str) -> torch.Tensor:
        out = tmp_path / f"{len(os.listdir(tmp_path))}.png"
        assert main(["upscale", str(tmp_path / "flat.png"), "-o", str(out), "--model", model, "--quiet", *flags]) == 0
        return torch.from_numpy(np.array(Image.open(out))).float()

    on, off, none = run(normed), run(normed, "--no-contrast-norm"), run(plain)
    assert torch.equal(off, none) and not torch.equal(on, off)
    assert (on - on.mean()).std() < (off - off.mean()).std()  # on a flat image it adds less
