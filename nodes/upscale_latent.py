"""CFMUpscaleLatent: integrate the coupling ODE from the (noised) upsampled latent to the high-res latent.

Input LATENT, either
* from PixelSpaceUpsample: ``samples`` is the clean z_up; the node noise-augments it (seed, noise_step), or
* from NoiseAugment: ``samples`` is the start x0 and ``cfm_context`` the clean z_up.
Raw → model space before the solve, model → raw after; the output is an ordinary unscaled LATENT (VAE Decode or a
second KSampler pass), with batch_index/noise_mask kept and the ``cfm_*`` keys dropped.
"""
from __future__ import annotations

from cfm_core import CFMError

from .common import (
    CATEGORY,
    batch_indices,
    check_latent_for_model,
    is_augmented,
    latent_samples,
    output_latent,
    require_latent_model,
    to_model_space,
    to_raw_space,
)
from .inputs import NOISE_STEP_INPUT, SOLVER_INPUTS, TILE_INPUTS, with_tooltip
from .pixel_model import (
    PIXEL_MODEL_NOTE,
    is_pixel_model,
    reject_noised_for_pixel_model,
    require_vae_for_pixel_model,
    solve_upsampled_in_pixels,
)
from .solve import SolveSettings, solve_latent


def start_and_context(handle, latent: dict):
    """(x0 or None, z_up) in model space, checked against the model."""
    raw = latent_samples(latent)
    check_latent_for_model(handle.model, raw, "LATENT")
    scaling = handle.config.latent.scaling
    if not is_augmented(latent):
        return None, to_model_space(raw, scaling)
    context = latent_samples({"samples": latent["cfm_context"]}, "LATENT cfm_context")
    if context.shape != raw.shape:
        raise CFMError(f"LATENT cfm_context {tuple(context.shape)} and samples {tuple(raw.shape)} differ; connect "
                       "NoiseAugment's output directly")
    stored = (latent.get("cfm_scale_factor", scaling.scale), latent.get("cfm_shift_factor", scaling.shift))
    if abs(stored[0] - scaling.scale) > 1e-6 * scaling.scale or abs(stored[1] - scaling.shift) > 1e-6:
        raise CFMError(f"NoiseAugment used scale_factor={stored[0]:g}, shift={stored[1]:g} but the CFM model's latent "
                       f"space has {scaling.scale:g}, {scaling.shift:g}; connect the CFM model to NoiseAugment too")
    check_latent_for_model(handle.model, context, "LATENT cfm_context")
    return to_model_space(raw, scaling), to_model_space(context, scaling)


class CFMUpscaleLatent:
    DESCRIPTION = ("Upscales a LATENT with a CFM model: solves the flow from the upsampled (noise-augmented) "
                   "latent to a sharp high-resolution latent in a few steps. Input: PixelSpaceUpsample's output "
                   "(clean, augmented here with seed/noise_step) or NoiseAugment's output. Output: an unscaled "
                   "LATENT for VAE Decode or a second KSampler pass. For a latent model the latent must come from "
                   "the VAE the model was trained for. With a pixel-space model connect the VAE (optional input) "
                   "and PixelSpaceUpsample's output (not NoiseAugment's): " + PIXEL_MODEL_NOTE)
    DISPLAY_NAME = "CFM Upscale Latent"  # what the node menu and the node's title show
    CATEGORY = CATEGORY
    FUNCTION = "upscale"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The high-resolution latent in the VAE's unscaled space.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "cfm_model": ("CFM_MODEL", {"tooltip": "A CFM model from CFMLoader: a latent model, or a pixel-space "
                                                   "one (then connect the VAE)."}),
            "samples": ("LATENT", {
                "tooltip": "The upsampled latent: PixelSpaceUpsample's output (already at the target size) or "
                           "NoiseAugment's output."}),
            **SOLVER_INPUTS,
            "noise_step": with_tooltip(NOISE_STEP_INPUT, "Ignored for NoiseAugment outputs (already noised)."),
            **TILE_INPUTS,
        }, "optional": {
            "vae": ("VAE", {"tooltip": "Only for pixel-space CFM models (e.g. the bundled one): the VAE of this "
                                       "latent, used to decode it and encode the result. " + PIXEL_MODEL_NOTE}),
        }}

    def upscale(self, cfm_model, samples: dict, solver: str = "default", steps: int = 0, seed: int = 0,
                noise_step: int = -1, tile: int = 0, overlap: int = 8, vae=None):
        if is_pixel_model(cfm_model):
            require_vae_for_pixel_model(cfm_model, vae, "CFMUpscaleLatent")
            reject_noised_for_pixel_model(samples)
            settings = SolveSettings.from_inputs(solver, steps, seed, noise_step, tile, overlap)
            return (solve_upsampled_in_pixels(cfm_model, vae, samples, settings),)
        require_latent_model(cfm_model.config.latent, cfm_model.name)
        x0, z_up = start_and_context(cfm_model, samples)
        settings = SolveSettings.from_inputs(solver, steps, seed, noise_step, tile, overlap)
        indices = batch_indices(samples, z_up.shape[0])
        z1 = solve_latent(cfm_model, z_up, settings, x0=x0, batch_indices=indices)
        return (output_latent(samples, to_raw_space(z1, cfm_model.config.latent.scaling)),)
