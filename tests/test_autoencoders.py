"""Latent spaces: exact round trips of the weight-free spaces, the single home of the scale factor, and a tiny
diffusers AutoencoderKL loaded from a diffusers folder, a diffusers-layout file and an LDM-layout file."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import load_script
from safetensors.torch import save_file

from cfm_core.autoencoders import (
    DiffusersVAE,
    LatentScaling,
    LatentSpec,
    PixelSpace,
    SpaceToDepth,
    check_space_matches,
    vae_fingerprint,
)
from cfm_core.errors import CFMError
from cfm_core.upsample import latent_upsample, pixel_space_upsample, upsample

diffusers = pytest.importorskip("diffusers")


def pixels(seed: int = 0, size=(2, 3, 16, 24)) -> torch.Tensor:
    return torch.rand(size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_pixel_space_is_the_identity():
    x = pixels()
    space = PixelSpace()
    assert torch.equal(space.decode(space.encode(x)), x)
    assert space.spec.kind == "pixels" and space.spec.channels == 3 and space.spec.scale_factor == 1.0


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_space_to_depth_round_trips_exactly(factor):
    x = pixels(1)
    space = SpaceToDepth(factor)
    z = space.encode(x)
    assert z.shape == (2, 3 * factor ** 2, 16 // factor, 24 // factor)
    assert torch.equal(space.decode(z), x)
    assert space.spec.channels == 3 * factor ** 2 and space.spec.downscale == factor


def test_space_to_depth_refuses_sizes_that_do_not_divide():
    with pytest.raises(CFMError, match="multiple"):
        SpaceToDepth(4).encode(pixels(size=(1, 3, 10, 16)))
    with pytest.raises(CFMError, match="factor"):
        SpaceToDepth(0)


def test_psu_in_pixel_space_is_bilinear_upsampling():
    x = pixels(2)
    expected = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert torch.equal(pixel_space_upsample(x, PixelSpace(), 2), expected)
    assert torch.equal(upsample(x, PixelSpace(), 2, "psu"), expected)
    assert torch.equal(latent_upsample(x, 2, "bilinear"), expected)


def test_psu_through_space_to_depth_is_bilinear_in_pixels():
    x = pixels(3)
    space = SpaceToDepth(2)
    up = pixel_space_upsample(space.encode(x), space, 2)
    assert torch.equal(space.decode(up), F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))


def test_psu_any_factor_gives_round_f_h_latents_and_checks_its_mode_first():
    space, z = SpaceToDepth(2), torch.randn(1, 12, 7, 5)
    assert pixel_space_upsample(z, space, 1.5).shape == (1, 12, 10, 8)  # pixels resized to 2·round(1.5·7) = 20
    small = pixel_space_upsample(z, space, 0.5, "bicubic")  # shrinking is antialiased; round(2.5) = 2
    expected = F.interpolate(space.decode(z), size=(8, 4), mode="bicubic", align_corners=False, antialias=True)
    assert torch.equal(space.decode(small), expected)

    class Undecodable(SpaceToDepth):
        def decode(self, z):
            raise AssertionError("decoded before the arguments were checked")

    with pytest.raises(CFMError, match="resize mode 'lanczos'"):
        pixel_space_upsample(z, Undecodable(2), 2, "lanczos")
    with pytest.raises(CFMError, match="above 0"):
        pixel_space_upsample(z, space, 0)


def test_upsample_dispatch_and_refusals():
    z = torch.randn(1, 4, 5, 5)
    assert torch.equal(upsample(z, None, 2, "latent-nearest"), F.interpolate(z, scale_factor=2, mode="nearest"))
    with pytest.raises(CFMError, match="psu"):
        upsample(z, None, 2, "psu")
    with pytest.raises(CFMError, match="upsample"):
        upsample(z, None, 2, "lanczos")


def test_latent_scaling_round_trip():
    raw = torch.randn(2, 4, 3, 3)
    scaling = LatentScaling(0.13025, 0.1)
    torch.testing.assert_close(scaling.to_model(raw), (raw - 0.1) * 0.13025)
    torch.testing.assert_close(scaling.to_raw(scaling.to_model(raw)), raw)
    assert LatentSpec().scaling == LatentScaling(0.18215, 0.0)


def test_latent_spec_refuses_unknown_kinds_and_survives_a_dict_round_trip():
    spec = LatentSpec(channels=16, downscale=8, scale_factor=0.3611, shift_factor=0.1159, name="flux", fingerprint="ab")
    assert LatentSpec.from_dict({**spec.to_dict(), "future_field": 1}) == spec
    with pytest.raises(CFMError, match="kind"):
        LatentSpec(kind="wavelet")


def test_check_space_matches():
    spec = LatentSpec(channels=4, fingerprint="aaaa")
    check_space_matches(spec, LatentSpec(channels=4, fingerprint="aaaa"))
    check_space_matches(spec, LatentSpec(channels=4, fingerprint=""))  # unknown weights: channel check only
    with pytest.raises(CFMError, match="4-channel"):
        check_space_matches(spec, LatentSpec(channels=16, fingerprint="aaaa"))
    with pytest.raises(CFMError, match="fingerprint"):
        check_space_matches(spec, LatentSpec(channels=4, fingerprint="bbbb"))


def test_fingerprint_agrees_across_precisions_and_differs_across_vaes():
    for seed in range(20):
        w = torch.randn(8, 8, 1, 1, generator=torch.Generator().manual_seed(seed)) * 0.1
        fp = vae_fingerprint(w)
        assert vae_fingerprint(w.half()) == fp == vae_fingerprint(w.bfloat16()) == vae_fingerprint(w.double())
        other = torch.randn(8, 8, 1, 1, generator=torch.Generator().manual_seed(seed + 100)) * 0.1
        assert vae_fingerprint(other) != fp
    assert vae_fingerprint(None) == ""


# --------------------------------------------------------------------------------------------- diffusers VAE

def tiny_autoencoder():
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 32),
                                  layers_per_block=1, latent_channels=4, norm_num_groups=32, sample_size=32)
    with torch.no_grad():  # make the posterior mean depend on the input strongly enough to be checked
        for p in vae.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return vae.eval()


# the original LDM (``first_stage_model``) key layout of a diffusers AutoencoderKL state dict
diffusers_to_ldm = load_script("make_family_vae").diffusers_to_ldm


@pytest.fixture(scope="module")
def vae_files(tmp_path_factory):
    vae = tiny_autoencoder()
    root = tmp_path_factory.mktemp("vae")
    vae.save_pretrained(str(root / "folder"), safe_serialization=True)
    sd = {k: v.contiguous() for k, v in vae.state_dict().items()}
    save_file(sd, str(root / "diffusers.safetensors"))
    save_file({f"first_stage_model.{k}": v.contiguous() for k, v in diffusers_to_ldm(sd, 2).items()},
              str(root / "ldm.safetensors"))
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)},
              str(root / "not_a_vae.safetensors"))
    save_file({k: v for k, v in sd.items() if not k.startswith("decoder.")}, str(root / "encoder_only.safetensors"))
    torch.save(sd, str(root / "pickled.ckpt"))
    return vae, root


@pytest.mark.parametrize("source", ["folder", "diffusers.safetensors", "ldm.safetensors"])
def test_diffusers_vae_loads_from_every_layout(vae_files, source):
    vae, root = vae_files
    if source != "folder":  # a 4-channel single file does not say whether it is SD1.x or SDXL: it asks
        with pytest.raises(CFMError, match="--vae-family sd15|sdxl"):
            DiffusersVAE.load(str(root / source))
    space = DiffusersVAE.load(str(root / source), family=None if source == "folder" else "sd15")
    loaded = space.vae.state_dict()
    assert loaded.keys() == vae.state_dict().keys()
    assert all(torch.equal(loaded[k], v) for k, v in vae.state_dict().items())
    spec = space.spec
    assert (spec.kind, spec.channels, spec.downscale, spec.scale_factor) == ("vae", 4, 2, 0.18215)
    assert spec.fingerprint == vae_fingerprint(vae.quant_conv.weight) != ""
    assert spec.name == spec.family == "sd15"  # the folder's config.json says scaling_factor 0.18215


def test_encode_is_the_scaled_posterior_mean_and_decode_inverts_the_scale(vae_files):
    vae, root = vae_files
    space = DiffusersVAE.load(str(root / "ldm.safetensors"), scale_factor=0.5, shift_factor=0.25)
    x = pixels(4, (1, 3, 16, 16))
    with torch.no_grad():
        posterior = vae.encode(x).latent_dist
        z = space.encode(x)
        torch.testing.assert_close(z, (posterior.mean - 0.25) * 0.5)
        assert (posterior.std > 1e-3).all() and not torch.allclose(z, (posterior.sample() - 0.25) * 0.5)
        torch.testing.assert_close(space.decode(z), vae.decode(posterior.mean).sample)
    assert z.shape == (1, 4, 8, 8)


def test_latent_scaling_is_the_only_place_the_scale_is_applied(vae_files, monkeypatch):
    """With LatentScaling made the identity, the VAE space returns the raw posterior mean and decodes raw latents:
    no other code path scales."""
    vae, root = vae_files
    space = DiffusersVAE.load(str(root / "folder"))
    monkeypatch.setattr(LatentScaling, "to_model", lambda self, raw: raw)
    monkeypatch.setattr(LatentScaling, "to_raw", lambda self, z: z)
    x = pixels(5, (1, 3, 16, 16))
    with torch.no_grad():
        mean = vae.encode(x).latent_dist.mean
        torch.testing.assert_close(space.encode(x), mean)
        torch.testing.assert_close(space.decode(mean), vae.decode(mean).sample)


def test_files_that_are_not_vaes_are_refused(vae_files, tmp_path):
    _, root = vae_files
    with pytest.raises(CFMError, match="not an SD-style"):
        DiffusersVAE.load(str(root / "not_a_vae.safetensors"))
    with pytest.raises(CFMError, match="complete VAE"):
        DiffusersVAE.load(str(root / "encoder_only.safetensors"))
    with pytest.raises(CFMError, match="pickle"):
        DiffusersVAE.load(str(root / "pickled.ckpt"))
    with pytest.raises(CFMError, match="does not exist"):
        DiffusersVAE.load(str(tmp_path / "absent.safetensors"))
    with pytest.raises(CFMError, match="config.json"):
        DiffusersVAE.load(str(tmp_path))
    (tmp_path / "cut.safetensors").write_bytes((root / "ldm.safetensors").read_bytes()[:300])
    with pytest.raises(CFMError, match="complete"):
        DiffusersVAE.load(str(tmp_path / "cut.safetensors"))


def test_space_from_spec_checks_the_vae_against_the_model(vae_files):
    from cfm_core.autoencoders import space_from_spec

    vae, root = vae_files
    good = LatentSpec(channels=4, downscale=2, fingerprint=vae_fingerprint(vae.quant_conv.weight), name="tiny")
    space = space_from_spec(good, str(root / "folder"))
    assert space.spec.fingerprint == good.fingerprint and space.spec.name == "tiny"
    other = torch.randn_like(vae.quant_conv.weight)
    with pytest.raises(CFMError, match="fingerprint"):
        space_from_spec(LatentSpec(channels=4, downscale=2, fingerprint=vae_fingerprint(other)), str(root / "folder"))
    with pytest.raises(CFMError, match="--vae"):
        space_from_spec(good)
    assert isinstance(space_from_spec(PixelSpace.spec), PixelSpace)
    assert space_from_spec(SpaceToDepth(4).spec).factor == 4


def test_upscale_image_through_a_vae(vae_files):
    from helpers import tiny_model

    from cfm_core.pipeline import upscale_image

    _, root = vae_files
    space = DiffusersVAE.load(str(root / "diffusers.safetensors"), family="sd15")
    model = tiny_model(4, space.spec)
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    out, result = upscale_image(model, image, space, steps=2, seed=3)
    again, _ = upscale_image(model, image, space, steps=2, seed=3)
    assert out.shape == (1, 3, 32, 32) and result.latent.shape == (1, 4, 16, 16) and result.nfe == 2
    assert torch.equal(out, again) and 0 <= out.min() and out.max() <= 1
