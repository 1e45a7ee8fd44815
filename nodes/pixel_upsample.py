"""PixelSpaceUpsample: the paper's pixel-space upsampling (PSU) of a LATENT, the CFM model's starting point.

    z_up = E(resize(D(z), ×s))        (bilinear, align_corners=False, no antialias: as the models are trained)

The engine's :func:`cfm_core.upsample.pixel_space_upsample` does it; this node adds the ComfyUI glue (the VAE with
ComfyUI's tiling, LATENT dicts, the noise mask). Everything happens on raw latents, so the VAE's scale factor plays
no part. The result is the *clean* upsampled latent: feed it to CFMUpscaleLatent (which noise-augments internally)
or to NoiseAugment first.
"""
from __future__ import annotations

import torch

from cfm_core import CFMError, pixel_space_upsample
from cfm_core.upsample import RESIZE_MODES

from .common import (
    CATEGORY,
    check_finite,
    check_vae_matches,
    latent_samples,
    output_latent,
    reject_augmented,
    resize_noise_mask,
    vae_downscale,
)
from .inputs import VAE_TILING_INPUTS
from .vae_space import DEFAULT_TILE_PX, ComfyVAESpace

MAX_SCALE = 8.0  # scale_by: any factor in (0, MAX_SCALE]; 0 on the widget = the CFM model's factor


def psu_raw(vae, raw: torch.Tensor, scale: float, mode: str = "bilinear", tiling: str = "auto",
            tile_size: int = DEFAULT_TILE_PX) -> torch.Tensor:
    """Raw latent [B, C, h, w] → raw latent [B, C, round(s·h), round(s·w)] through pixel space (the engine's PSU on
    the VAE's raw pixels, see :meth:`ComfyVAESpace.raw_pixels`)."""
    if not 0.0 < scale <= MAX_SCALE:
        raise CFMError(f"scale_by={scale:g} must be above 0 and at most {MAX_SCALE:g} (0 on the node = the CFM "
                       "model's factor)")
    if raw.shape[1] != vae.latent_channels:
        raise CFMError(f"LATENT has {raw.shape[1]} channels but the VAE makes {vae.latent_channels}-channel "
                       "latents; connect the VAE that produced this latent")
    check_finite(raw, "LATENT", "check the sampler/VAE that produced it")
    space = ComfyVAESpace(vae, tiling=tiling, tile_size=tile_size)  # identity scaling: raw in, raw out
    return pixel_space_upsample(raw, space.raw_pixels(), scale, mode)


class PixelSpaceUpsample:
    DESCRIPTION = ("Pixel-space upsampling (PSU), the starting point of a CFM upscale: VAE-decode the latent, "
                   "resize the image (bilinear, as the models are trained) and VAE-encode it again. The output is "
                   "the clean upsampled LATENT (unscaled, like every ComfyUI latent); noise_mask is resized and "
                   "batch_index kept. Connect it to CFMUpscaleLatent, or to NoiseAugment for manual control.")
    DISPLAY_NAME = "CFM Pixel-Space Upsample"  # what the node menu and the node's title show
    CATEGORY = CATEGORY
    FUNCTION = "upsample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The clean upsampled latent in the VAE's unscaled space.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "samples": ("LATENT", {"tooltip": "The low-resolution latent, e.g. from a KSampler."}),
                "vae": ("VAE", {"tooltip": "The VAE of this latent (and the one the CFM model was trained for)."}),
                "scale_by": ("FLOAT", {
                    "default": 2.0, "min": 0.0, "max": MAX_SCALE, "step": 0.05,
                    "tooltip": "Upscale factor. 0 = the connected CFM model's factor (2 if none); below 1 shrinks "
                               "(antialiased). CFM models are trained for one factor (usually 2): other values give "
                               "them unfamiliar input."}),
                "resize_method": (list(RESIZE_MODES), {
                    "default": "bilinear",
                    "tooltip": "Pixel resize between decode and encode. bilinear is what the models are trained "
                               "with; the others are for experiments."}),
                **VAE_TILING_INPUTS,
            },
            "optional": {
                "cfm_model": ("CFM_MODEL", {
                    "tooltip": "Optional: supplies the factor when scale_by is 0, and checks that the VAE is the "
                               "one a latent model was trained for (a pixel-space model only lends its factor)."}),
            },
        }

    def upsample(self, samples: dict, vae, scale_by: float = 2.0, resize_method: str = "bilinear",
                 vae_tiling: str = "auto", vae_tile_size: int = DEFAULT_TILE_PX, cfm_model=None):
        reject_augmented(samples, "PixelSpaceUpsample")
        raw = latent_samples(samples)
        if cfm_model is not None and cfm_model.config.latent.kind == "vae":
            check_vae_matches(cfm_model.config.latent, vae)  # a pixel-space model only lends its factor
        scale = scale_by or (cfm_model.config.factor if cfm_model is not None else 2.0)
        up = psu_raw(vae, raw, float(scale), resize_method, vae_tiling, vae_tile_size)
        d = vae_downscale(vae)
        out = output_latent(samples, up)
        return (resize_noise_mask(out, up.shape[-2] * d, up.shape[-1] * d),)
