"""CFMUpscaleImage: IMAGE → IMAGE with a pixel-space CFM model (like the bundled one), or a latent one plus its VAE.

The start point is made as in training: bilinear resize of the image itself, then encode (no decode), via
:func:`cfm_core.pipeline.upscale_image`. Sizes that are not a multiple of the model's space are edge-padded and the
result cropped back, so any image size works.
"""
from __future__ import annotations

import comfy.model_management as mm
import torch

from cfm_core import CFMError
from cfm_core.pipeline import pad_to_multiple, upscale_image

from .common import CATEGORY, check_finite, check_vae_matches
from .inputs import NOISE_STEP_INPUT, SOLVER_INPUTS, TILE_INPUTS
from .solve import SolveSettings, check_output, run_model
from .vae_space import ComfyVAESpace

MIN_IMAGE_SIDE = 16


def to_rgb_bchw(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE [B, H, W, C] 0..1 → [B, 3, H, W] (alpha dropped, grey repeated)."""
    if not isinstance(image, torch.Tensor) or not image.is_floating_point():
        raise CFMError(f"IMAGE is a {getattr(image, 'dtype', type(image).__name__)}, not a float tensor [B, H, W, 3] "
                       "in 0..1; connect an IMAGE output")
    if image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        raise CFMError(f"IMAGE has shape {tuple(image.shape)}; expected [B, H, W, 3] (a ComfyUI IMAGE)")
    if min(image.shape[1:3]) < MIN_IMAGE_SIDE:
        raise CFMError(f"IMAGE is {image.shape[2]}×{image.shape[1]} px; CFMUpscaleImage needs at least "
                       f"{MIN_IMAGE_SIDE}×{MIN_IMAGE_SIDE}")
    x = image[..., :3] if image.shape[-1] != 1 else image.expand(-1, -1, -1, 3)
    check_finite(x, "IMAGE", "check the node that produced it")
    return x.movedim(-1, 1).float().clamp(0, 1)  # IMAGEs are 0..1; filters may overshoot a little, as SaveImage clips


class CFMUpscaleImage:
    DESCRIPTION = ("Upscales an IMAGE with a CFM model by its factor (usually 2×). Made for pixel-space models such "
                   "as the bundled cfm-pixel-2x (no VAE needed); a latent model also works when its VAE is "
                   "connected. Any image size: edges are padded to the model's grid and cropped back.")
    DISPLAY_NAME = "CFM Upscale Image"  # what the node menu and the node's title show
    CATEGORY = CATEGORY
    FUNCTION = "upscale"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The upscaled image, factor × the input size, RGB 0..1.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The image to upscale (RGB; alpha is ignored)."}),
                "cfm_model": ("CFM_MODEL", {"tooltip": "A CFM model from CFMLoader, e.g. the bundled pixel model."}),
                **SOLVER_INPUTS,
                "noise_step": NOISE_STEP_INPUT,
                **TILE_INPUTS,
            },
            "optional": {
                "vae": ("VAE", {
                    "tooltip": "Only for latent CFM models: the VAE the model was trained for. Not needed for "
                               "pixel-space models."}),
            },
        }

    def upscale(self, image: torch.Tensor, cfm_model, solver: str = "default", steps: int = 0, seed: int = 0,
                noise_step: int = -1, tile: int = 0, overlap: int = 8, vae=None):
        spec = cfm_model.config.latent
        space = None
        if spec.kind == "vae":
            if vae is None:
                raise CFMError(f"CFM model {cfm_model.name!r} works in the latent space of VAE {spec.name!r}; connect "
                               "that VAE to CFMUpscaleImage, or use CFMBoost on the LATENT")
            check_vae_matches(spec, vae)
            space = ComfyVAESpace(vae, spec.scaling)
        settings = SolveSettings.from_inputs(solver, steps, seed, noise_step, tile, overlap)
        return (upscale_pixels(cfm_model, image, settings, space),)


def upscale_pixels(handle, image: torch.Tensor, settings: SolveSettings, space=None,
                   batch_indices: list[int] | None = None) -> torch.Tensor:
    """IMAGE [B, H, W, C] → IMAGE [B, f·H, f·W, 3] through :func:`cfm_core.pipeline.upscale_image` (the CLI's
    function): padded to the model's grid as the CLI pads (:func:`cfm_core.pipeline.pad_to_multiple`), cropped
    back, progress/cancel/OOM handling from :func:`run_model`."""
    spec, factor = handle.config.latent, handle.config.factor
    x = to_rgb_bchw(image)
    h, w = x.shape[-2:]
    x = pad_to_multiple(x, spec.downscale)
    latent_shape = (x.shape[0], spec.channels, factor * x.shape[-2] // spec.downscale,
                    factor * x.shape[-1] // spec.downscale)

    def attempt(tile_, overlap_, callback, interrupt):
        return upscale_image(handle.model, x, space, solver=settings.solver, steps=settings.steps,
                             seed=settings.seed, noise_step=settings.noise_step, tile=tile_, overlap=overlap_,
                             batch_indices=batch_indices, callback=callback, interrupt=interrupt)

    out, result = run_model(handle, latent_shape, settings, attempt)
    check_output(handle, result.latent)
    out = out[..., : factor * h, : factor * w].movedim(1, -1).contiguous()
    return out.to(mm.intermediate_device())
