"""The latent nodes with a VAE of every family, in the stand-in ComfyUI: 4-channel SD1.x/SDXL-style VAEs (with
quant_conv) and 16-channel SD3/Flux-style VAEs (no quant_conv, as ComfyUI loads them); each family's scale and
shift; a model for one family refused in one line with any other family's VAE."""
from __future__ import annotations

import os

import pytest
import torch

from cfm_core import CFMConfig, CFMError, CFMModel, LatentScaling, LatentSpec, boost, preset, save_model
from cfm_core.autoencoders import vae_fingerprint
from cfm_core.vae_families import FAMILIES

# (seed, latent channels, quant_conv) of each family's stand-in VAE: four different VAEs
STUB_VAES = {"sd15": (0, 4, True), "sdxl": (1, 4, True), "sd3": (2, 16, False), "flux": (3, 16, False)}


def stub_vae(comfy, family: str, dtype=None):
    seed, channels, quant_conv = STUB_VAES[family]
    return comfy.sd.VAE(comfy.sd.stub_vae_state_dict(seed, channels, quant_conv), dtype=dtype)


def install_model(comfy, family: str):
    """A tiny CFM model trained (as far as its spec says) on ``family``'s stand-in VAE, loaded by CFMLoader."""
    from nodes.common import comfy_vae_fingerprint

    f = FAMILIES[family]
    spec = LatentSpec(kind="vae", channels=f.channels, downscale=8, scale_factor=f.scale, shift_factor=f.shift,
                      name=family, family=family, fingerprint=comfy_vae_fingerprint(stub_vae(comfy, family)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CFMModel(CFMConfig(unet=preset("tiny", latent_channels=f.channels), latent=spec, default_steps=2))
        torch.nn.init.normal_(model.net.out[2].weight, std=0.05)
    save_model(model, os.path.join(comfy.folder_paths.models_dir, "cfm", f"{family}.safetensors"))
    handle, _ = comfy.nodes.NODE_CLASS_MAPPINGS["CFMLoader"]().load(f"{family}.safetensors", "fp32")
    return handle


def node(comfy, node_id: str):
    return comfy.nodes.NODE_CLASS_MAPPINGS[node_id]()


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


def test_vaes_without_quant_conv_have_a_fingerprint_in_every_precision(comfy):
    from nodes.common import comfy_vae_fingerprint

    sd = comfy.sd.stub_vae_state_dict(2, 16, quant_conv=False)
    expected = vae_fingerprint(sd["encoder.conv_out.weight"])
    assert expected != ""
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        assert comfy_vae_fingerprint(comfy.sd.VAE(sd, dtype=dtype)) == expected
    assert comfy_vae_fingerprint(stub_vae(comfy, "flux")) != expected


@pytest.mark.parametrize("family", list(STUB_VAES))
def test_the_latent_graph_runs_in_every_family(comfy, family):
    """PixelSpaceUpsample → NoiseAugment → CFMUpscaleLatent → VAE Decode, with the family's channels and scaling;
    CFMBoost gives the same latent; the result is the model's solve in (raw − shift)·scale space."""
    vae, handle = stub_vae(comfy, family), install_model(comfy, family)
    f = FAMILIES[family]
    latent = {"samples": torch.randn(1, f.channels, 8, 8, generator=torch.Generator().manual_seed(5))}
    up, = node(comfy, "PixelSpaceUpsample").upsample(latent, vae, 0.0, cfm_model=handle)
    noised, = node(comfy, "NoiseAugment").augment(up, 300, 7, cfm_model=handle)
    out, = node(comfy, "CFMUpscaleLatent").upscale(handle, noised, "euler", 2, 7)
    assert up["samples"].shape == out["samples"].shape == (1, f.channels, 16, 16)
    assert not any(k.startswith("cfm_") for k in out)
    scaling = LatentScaling(f.scale, f.shift)
    expected = boost(handle.model, scaling.to_model(up["samples"]), solver="euler", steps=2, seed=7,
                     noise_step=300).latent
    torch.testing.assert_close(out["samples"], scaling.to_raw(expected), atol=1e-5, rtol=1e-5)
    boosted, = node(comfy, "CFMBoost").boost(latent, vae, handle, "euler", 2, 7, 300)
    torch.testing.assert_close(boosted["samples"], out["samples"], atol=1e-5, rtol=1e-5)
    image = vae.decode(out["samples"])
    assert image.shape == (1, 128, 128, 3)


@pytest.mark.parametrize("family", list(STUB_VAES))
def test_a_model_refuses_every_other_familys_vae_in_one_line(comfy, family):
    handle = install_model(comfy, family)
    f = FAMILIES[family]
    latent = {"samples": torch.randn(1, f.channels, 8, 8)}
    for other in STUB_VAES:
        if other == family:
            continue
        vae = stub_vae(comfy, other)
        other_latent = {"samples": torch.randn(1, FAMILIES[other].channels, 8, 8)}
        with pytest.raises(CFMError) as psu:
            node(comfy, "PixelSpaceUpsample").upsample(other_latent, vae, 0.0, cfm_model=handle)
        with pytest.raises(CFMError) as boosted:
            node(comfy, "CFMBoost").boost(other_latent, vae, handle)
        for err in (psu, boosted):
            message = one_line(err)
            assert family in message if FAMILIES[other].channels == f.channels else "channel" in message
        if FAMILIES[other].channels != f.channels:
            with pytest.raises(CFMError) as upscale:
                node(comfy, "CFMUpscaleLatent").upscale(handle, other_latent)
            assert "channels" in one_line(upscale)
            with pytest.raises(CFMError) as augment:
                node(comfy, "NoiseAugment").augment(other_latent, cfm_model=handle)
            assert "channels" in one_line(augment)
    half = stub_vae(comfy, family, dtype=torch.float16)  # ComfyUI's fp16 copy of the right VAE is accepted
    out, = node(comfy, "CFMBoost").boost(latent, half, handle, "euler", 1)
    assert out["samples"].shape == (1, f.channels, 16, 16)
