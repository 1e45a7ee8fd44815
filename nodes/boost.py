"""CFMBoost: PixelSpaceUpsample + noise augmentation + CFMUpscaleLatent in one node (the usual graph)."""
from __future__ import annotations

from cfm_core import latent_upsample
from cfm_core.upsample import RESIZE_MODES

from .common import (
    CATEGORY,
    batch_indices,
    check_latent_for_model,
    check_vae_matches,
    latent_samples,
    output_latent,
    reject_augmented,
    require_latent_model,
    resize_noise_mask,
    to_model_space,
    to_raw_space,
    vae_downscale,
)
from .inputs import NOISE_STEP_INPUT, SOLVER_INPUTS, TILE_INPUTS, VAE_TILING_INPUTS
from .pixel_model import PIXEL_MODEL_NOTE, boost_latent_in_pixels, is_pixel_model
from .pixel_upsample import psu_raw
from .solve import SolveSettings, solve_latent
from .vae_space import DEFAULT_TILE_PX


def upsample_for_model(handle, vae, raw, resize_method: str, vae_tiling: str, vae_tile_size: int):
    """Model-space z_up: PSU through the VAE, or the latent resize a model was trained with instead."""
    cfg, scaling = handle.config, handle.config.latent.scaling
    if cfg.upsample.startswith("latent-"):
        return latent_upsample(to_model_space(raw, scaling), cfg.factor, cfg.upsample.split("-", 1)[1])
    return to_model_space(psu_raw(vae, raw, float(cfg.factor), resize_method, vae_tiling, vae_tile_size), scaling)


class CFMBoost:
    DESCRIPTION = ("All-in-one CFM upscale of a LATENT by the model's factor (usually 2×): pixel-space upsampling "
                   "through the VAE, noise augmentation and a few ODE steps of the CFM model. Equivalent to "
                   "PixelSpaceUpsample → CFMUpscaleLatent. Output: an unscaled high-res LATENT for VAE Decode or a "
                   "second KSampler pass. A latent model needs the VAE it was trained for. " + PIXEL_MODEL_NOTE)
    DISPLAY_NAME = "CFM Boost (upscale latent)"  # what the node menu and the node's title show
    CATEGORY = CATEGORY
    FUNCTION = "boost"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The upscaled latent (factor × the input size) in the VAE's unscaled space.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "samples": ("LATENT", {"tooltip": "The low-resolution latent, e.g. from a KSampler."}),
            "vae": ("VAE", {"tooltip": "The VAE of this latent: the one a latent CFM model was trained for; any "
                                       "image VAE for a pixel-space model."}),
            "cfm_model": ("CFM_MODEL", {"tooltip": "A CFM model from CFMLoader: a latent model for this VAE, or a "
                                                   "pixel-space one such as the bundled model. " + PIXEL_MODEL_NOTE}),
            **SOLVER_INPUTS,
            "noise_step": NOISE_STEP_INPUT,
            "resize_method": (list(RESIZE_MODES), {
                "default": "bilinear",
                "tooltip": "Pixel resize inside the upsampling; bilinear is what the models are trained with. "
                           "Pixel-space models always use bilinear (as in training)."}),
            **TILE_INPUTS,
            **VAE_TILING_INPUTS,
        }}

    def boost(self, samples: dict, vae, cfm_model, solver: str = "default", steps: int = 0, seed: int = 0,
              noise_step: int = -1, resize_method: str = "bilinear", tile: int = 0, overlap: int = 8,
              vae_tiling: str = "auto", vae_tile_size: int = DEFAULT_TILE_PX):
        reject_augmented(samples, "CFMBoost")
        settings = SolveSettings.from_inputs(solver, steps, seed, noise_step, tile, overlap)
        if is_pixel_model(cfm_model):
            return (boost_latent_in_pixels(cfm_model, vae, samples, settings, vae_tiling, vae_tile_size),)
        require_latent_model(cfm_model.config.latent, cfm_model.name)
        check_vae_matches(cfm_model.config.latent, vae)
        raw = latent_samples(samples)
        check_latent_for_model(cfm_model.model, raw, "LATENT")
        z_up = upsample_for_model(cfm_model, vae, raw, resize_method, vae_tiling, vae_tile_size)
        z1 = solve_latent(cfm_model, z_up, settings, batch_indices=batch_indices(samples, raw.shape[0]))
        out = output_latent(samples, to_raw_space(z1, cfm_model.config.latent.scaling))
        d = vae_downscale(vae)
        return (resize_noise_mask(out, z1.shape[-2] * d, z1.shape[-1] * d),)
