"""NoiseAugment: the coupling's noised start point, for users who want to see or control it.

    x0 = √ᾱ·z + √(1−ᾱ)·ε        in MODEL space (z = (raw − shift)·scale), ᾱ from the cosine log-SNR schedule

The noise must be added in model space (that is where the model was trained with unit-variance ε); the result is
converted back to raw for the LATENT. ε is batch-stable: element i depends only on (seed, batch_index[i]).
Output keys: ``samples`` = x0 (raw), ``cfm_context`` = the clean z (raw), ``cfm_noise_step``, ``cfm_scale_factor``,
``cfm_shift_factor``; CFMUpscaleLatent reads them. CFMUpscaleLatent also augments by itself when given a clean
latent, so this node is optional.
"""
from __future__ import annotations

from cfm_core import DEFAULT_NOISE_STEP, LatentScaling, noise_augment
from cfm_core.path import start_point
from cfm_core.vae_families import FAMILIES

from .common import (
    CATEGORY,
    batch_indices,
    check_finite,
    latent_samples,
    output_latent,
    reject_augmented,
    require_latent_model,
    to_model_space,
    to_raw_space,
)
from .inputs import NOISE_STEP_INPUT, SEED_INPUT


class NoiseAugment:
    DESCRIPTION = ("Noise-augments a clean upsampled LATENT (from PixelSpaceUpsample) into the CFM start point "
                   "x0 = √ᾱ·z + √(1−ᾱ)·ε, computed in the model's scaled space. The output LATENT holds x0 in "
                   "'samples' and the clean latent in 'cfm_context'; connect it to CFMUpscaleLatent. Optional: "
                   "CFMUpscaleLatent does this by itself when given a clean latent.")
    DISPLAY_NAME = "CFM Noise Augment"  # what the node menu and the node's title show
    CATEGORY = CATEGORY
    FUNCTION = "augment"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The noised start x0 (unscaled) with the clean context attached, for CFMUpscaleLatent.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "samples": ("LATENT", {"tooltip": "The clean upsampled latent, e.g. from PixelSpaceUpsample."}),
                "noise_step": NOISE_STEP_INPUT,
                "seed": SEED_INPUT,
                "scale_factor": ("FLOAT", {
                    "default": FAMILIES["sd15"].scale, "min": 0.001, "max": 10.0, "step": 0.00001,
                    "tooltip": "The VAE's latent scale factor (SD1.x 0.18215, SDXL 0.13025, SD3 1.5305, Flux 0.3611). "
                               "Used only without a CFM model; with one, the model's own factor is used."}),
                "shift_factor": ("FLOAT", {
                    "default": 0.0, "min": -10.0, "max": 10.0, "step": 0.0001,
                    "tooltip": "The VAE's latent shift (0 for SD1.x/SDXL, SD3 0.0609, Flux 0.1159). Used only "
                               "without a CFM model."}),
            },
            "optional": {
                "cfm_model": ("CFM_MODEL", {
                    "tooltip": "Optional: supplies the noise step (when -1) and the latent scaling, and checks "
                               "the latent's channels."}),
            },
        }

    def augment(self, samples: dict, noise_step: int = -1, seed: int = 0, scale_factor: float = 0.18215,
                shift_factor: float = 0.0, cfm_model=None):
        reject_augmented(samples, "NoiseAugment")
        raw = latent_samples(samples)
        if cfm_model is not None:
            require_latent_model(cfm_model.config.latent, cfm_model.name)
            cfm_model.model.check_latent(raw, "LATENT")
            scaling = cfm_model.config.latent.scaling
            default_step = cfm_model.config.noise_step
        else:
            check_finite(raw, "LATENT", "check the sampler/VAE that produced it")
            scaling, default_step = LatentScaling(float(scale_factor), float(shift_factor)), DEFAULT_NOISE_STEP
        step = default_step if noise_step < 0 else int(noise_step)
        indices = batch_indices(samples, raw.shape[0])
        z = to_model_space(raw, scaling)
        if cfm_model is not None:  # the start the model was trained from (pure noise for an "fm" baseline)
            x0 = start_point(cfm_model.config.objective, z, cfm_model.config.noise_steps(z, step), seed=int(seed),
                             batch_indices=indices)
        else:
            x0 = noise_augment(z, step, seed=int(seed), batch_indices=indices)
        return (output_latent(samples, to_raw_space(x0, scaling), cfm_context=raw.clone(), cfm_noise_step=step,
                              cfm_scale_factor=scaling.scale, cfm_shift_factor=scaling.shift),)
