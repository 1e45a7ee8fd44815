"""A pixel-space CFM model (like the bundled cfm-pixel-2x) in a latent graph: VAE decode → CFM in pixels → encode.

CFMBoost and CFMUpscaleLatent take this path when their CFM model works on pixels (``pixels``/``space_to_depth``)
and a VAE is connected, so a plain txt2img graph (KSampler → CFMBoost → VAE Decode / a second KSampler) runs with
the model that ships with the pack. Seed, steps, solver, noise step, tiles, progress, previews, Cancel and the
out-of-memory retry are those of CFMUpscaleImage (:func:`.upscale_image.upscale_pixels`, which calls the CLI's
:func:`cfm_core.pipeline.upscale_image`). The VAE is only a codec here, so any image VAE works; the cost is one
decode at the input size and one encode at the output size on top of the ODE.
"""
from __future__ import annotations

import comfy.model_management as mm
import torch

from cfm_core import CFMError, boost
from cfm_core.pipeline import weights_free_space

from .common import (
    batch_indices,
    check_finite,
    check_latent_size,
    is_augmented,
    latent_samples,
    output_latent,
    resize_noise_mask,
    vae_downscale,
)
from .solve import SolveSettings, check_output, run_model
from .vae_space import DEFAULT_TILE_PX, ComfyVAESpace

PIXEL_MODEL_NOTE = ("A pixel-space model such as the bundled cfm-pixel-2x works too, with any image VAE: the latent "
                    "is VAE-decoded, upscaled in pixels and VAE-encoded again, which adds one decode and one encode "
                    "at twice the size (seconds on a GPU, about a minute at 1024² on a CPU) to the ODE.")


def is_pixel_model(handle) -> bool:
    return handle.config.latent.kind != "vae"


def require_vae_for_pixel_model(handle, vae, node: str) -> None:
    if vae is None:
        raise CFMError(f"CFM model {handle.name!r} works on pixels, not on VAE latents; connect the VAE input of "
                       f"{node} (it decodes, upscales in pixels and encodes again), or use CFMUpscaleImage with an "
                       "IMAGE")


def reject_noised_for_pixel_model(samples: dict) -> None:
    if is_augmented(samples):
        raise CFMError("NoiseAugment noises VAE latents, but this CFM model works on pixels; connect "
                       "PixelSpaceUpsample's output (or use CFMBoost, which does everything in one node)")


def _decode(vae, samples: dict, vae_tiling: str, vae_tile_size: int) -> tuple[ComfyVAESpace, torch.Tensor]:
    raw = latent_samples(samples)
    if raw.shape[1] != vae.latent_channels:
        raise CFMError(f"LATENT has {raw.shape[1]} channels but the VAE makes {vae.latent_channels}-channel "
                       "latents; connect the VAE that produced this latent")
    check_latent_size(raw)
    check_finite(raw, "LATENT", "check the sampler/VAE that produced it")
    space = ComfyVAESpace(vae, tiling=vae_tiling, tile_size=vae_tile_size)  # identity scaling: raw in, raw out
    return space, space.decode_raw(raw)


def _encoded_latent(space: ComfyVAESpace, samples: dict, image: torch.Tensor) -> dict:
    up = space.encode_raw(image).float().to(mm.intermediate_device())
    d = vae_downscale(space.vae)
    return resize_noise_mask(output_latent(samples, up), up.shape[-2] * d, up.shape[-1] * d)


def boost_latent_in_pixels(handle, vae, samples: dict, settings: SolveSettings, vae_tiling: str = "auto",
                           vae_tile_size: int = DEFAULT_TILE_PX) -> dict:
    """CFMBoost with a pixel model: low-res LATENT → decode → ×factor in pixels → encode → high-res LATENT."""
    from .upscale_image import upscale_pixels  # here: upscale_image imports the latent nodes, which import us

    space, image = _decode(vae, samples, vae_tiling, vae_tile_size)
    indices = batch_indices(samples, image.shape[0])
    return _encoded_latent(space, samples, upscale_pixels(handle, image, settings, batch_indices=indices))


def solve_upsampled_in_pixels(handle, vae, samples: dict, settings: SolveSettings, vae_tiling: str = "auto",
                              vae_tile_size: int = DEFAULT_TILE_PX) -> dict:
    """CFMUpscaleLatent with a pixel model: the *already upsampled* LATENT (PixelSpaceUpsample's output) → decode
    → the ODE from that image (no further resize) → encode. Same size out as in."""
    from .upscale_image import pad_to_multiple, to_rgb_bchw

    space, image = _decode(vae, samples, vae_tiling, vae_tile_size)
    indices = batch_indices(samples, image.shape[0])
    spec = handle.config.latent
    x = to_rgb_bchw(image)
    h, w = x.shape[-2:]
    x = pad_to_multiple(x, spec.downscale)
    latent_shape = (x.shape[0], spec.channels, x.shape[-2] // spec.downscale, x.shape[-1] // spec.downscale)
    pixel_space = weights_free_space(handle.model)

    def attempt(tile, overlap, callback, interrupt):
        with torch.no_grad():
            z_up = pixel_space.encode((x * 2 - 1).to(handle.model.device))
            result = boost(handle.model, z_up, solver=settings.solver, steps=settings.steps, seed=settings.seed,
                           noise_step=settings.noise_step, tile=tile, overlap=overlap, batch_indices=indices,
                           callback=callback, interrupt=interrupt)
            return (pixel_space.decode(result.latent).float().clamp(-1, 1) + 1) / 2, result

    out, result = run_model(handle, latent_shape, settings, attempt)
    check_output(handle, result.latent)
    out = out[..., :h, :w].movedim(1, -1).contiguous().to(mm.intermediate_device())
    return _encoded_latent(space, samples, out)
