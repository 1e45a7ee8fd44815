"""Shared helpers of the ComfyUI nodes: the category, LATENT dict handling, latent scaling and input checks.

ComfyUI LATENTs are **raw** (unscaled) VAE latents: the 0.18215 (SD1.x) factor lives in ComfyUI's latent formats
and is applied only inside its samplers. CFM models work in *model space*, ``z = (raw − shift)·scale``. The nodes
convert with :class:`cfm_core.LatentScaling` right before a model call and right after it, so every LATENT a node
returns is raw again (VAE Decode and KSampler read it correctly).

Keys this pack adds to a LATENT dict (all start with ``cfm_``, and every node that consumes them drops them):

* ``cfm_context``: the clean upsampled latent z_up (raw), the network's conditioning, written by NoiseAugment.
  ``samples`` then holds the noised start x0 (raw too, so previews and VAE Decode still show something sensible).
* ``cfm_noise_step``: the noise-augmentation step used (int).
* ``cfm_scale_factor`` / ``cfm_shift_factor``: the scaling NoiseAugment noised in, checked against the model.
"""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from cfm_core import CFMError, LatentScaling
from cfm_core.autoencoders import LatentSpec, check_space_matches, fingerprint_weight, vae_fingerprint

CATEGORY = "CFM Boost"
LOG = logging.getLogger("cfm_boost")

MIN_LATENT_SIDE = 8  # 64 px for an /8 VAE: below this the upscaler has no context to work with
MAX_SEED = 0xFFFFFFFFFFFFFFFF
CFM_KEYS = ("cfm_context", "cfm_noise_step", "cfm_scale_factor", "cfm_shift_factor")


# ------------------------------------------------------------------------------------------ LATENT dicts

def latent_samples(latent: dict, name: str = "LATENT") -> torch.Tensor:
    """``latent["samples"]`` as a 4-D float tensor, with one-line errors for what is not an image latent."""
    if not isinstance(latent, dict) or "samples" not in latent:
        raise CFMError(f"{name} is not a ComfyUI LATENT (a dict with 'samples'); connect a LATENT output")
    samples = latent["samples"]
    if not isinstance(samples, torch.Tensor):
        raise CFMError(f"{name}['samples'] is a {type(samples).__name__}, not a tensor; connect a LATENT output")
    if samples.ndim != 4:
        raise CFMError(f"{name} has shape {tuple(samples.shape)}; CFM Boost needs an image latent [B, C, H, W] "
                       "(video latents are not supported)")
    return samples.float()


def output_latent(latent: dict, samples: torch.Tensor, **extra) -> dict:
    """A copy of ``latent`` with new ``samples`` (and ``extra`` keys), other keys kept, ``cfm_*`` keys dropped."""
    out = {k: v for k, v in latent.items() if k not in CFM_KEYS}
    out["samples"] = samples
    out.update(extra)
    return out


def batch_indices(latent: dict, batch: int) -> list[int] | None:
    """``latent["batch_index"]`` (ComfyUI's sub-batch ids, so element i gets the same noise in any batch)."""
    indices = latent.get("batch_index")
    if indices is None:
        return None
    indices = [int(i) for i in indices]
    if len(indices) != batch:
        raise CFMError(f"LATENT batch_index has {len(indices)} entries for a batch of {batch}; "
                       "rebuild the batch with ComfyUI's latent batch nodes")
    return indices


def resize_noise_mask(latent: dict, height: int, width: int) -> dict:
    """Resize a pixel-resolution ``noise_mask`` to ``height``×``width`` pixels (bilinear, like ComfyUI's samplers)."""
    mask = latent.get("noise_mask")
    if mask is None:
        return latent
    mask = mask.float().reshape(-1, 1, mask.shape[-2], mask.shape[-1])
    out = dict(latent)
    out["noise_mask"] = F.interpolate(mask, size=(height, width), mode="bilinear", align_corners=False)
    return out


def is_augmented(latent: dict) -> bool:
    return isinstance(latent, dict) and "cfm_context" in latent


def reject_augmented(latent: dict, node: str) -> None:
    if is_augmented(latent):
        raise CFMError(f"{node} got a NoiseAugment output (its samples are noised); connect the clean LATENT "
                       "instead, or feed the NoiseAugment output straight into CFMUpscaleLatent")


# ------------------------------------------------------------------------------------------ scaling

def to_model_space(raw: torch.Tensor, scaling: LatentScaling) -> torch.Tensor:
    return scaling.to_model(raw.float())


def to_raw_space(z: torch.Tensor, scaling: LatentScaling) -> torch.Tensor:
    return scaling.to_raw(z.float())


# ------------------------------------------------------------------------------------------ checks

def check_latent_size(z: torch.Tensor, name: str = "LATENT") -> None:
    from cfm_core.pipeline import MAX_LATENT_SIDE

    h, w = z.shape[-2:]
    if min(h, w) < MIN_LATENT_SIDE:
        raise CFMError(f"{name} is {w}×{h}; CFM Boost needs at least {MIN_LATENT_SIDE}×{MIN_LATENT_SIDE} "
                       "(64×64 px for an SD VAE); start from a larger image")
    if max(h, w) > MAX_LATENT_SIDE:
        raise CFMError(f"{name} is {w}×{h}; at most {MAX_LATENT_SIDE} per side; upscale a smaller image")


def check_finite(z: torch.Tensor, what: str, fix: str) -> None:
    if not torch.isfinite(z).all():
        raise CFMError(f"{what} contains NaN or inf values; {fix}")


def vae_downscale(vae) -> int:
    """The VAE's spatial compression (8 for SD), on old and new ComfyUI alike."""
    if hasattr(vae, "spacial_compression_encode"):
        return int(vae.spacial_compression_encode())
    ratio = getattr(vae, "downscale_ratio", 8)
    return int(ratio[-1] if isinstance(ratio, (tuple, list)) else ratio)


def comfy_vae_fingerprint(vae) -> str:
    """Fingerprint of a ComfyUI VAE's weights: its ``quant_conv`` (SD1.x/SDXL), else its ``encoder.conv_out``
    (SD3/Flux, which ComfyUI loads as an AutoencodingEngine without quant_conv); "" for neither (e.g. TAESD).

    ComfyUI often holds the VAE in fp16/bf16 on GPUs; cfm_core's fingerprint is built from weight signs, which that
    rounding never flips, so it matches the fp32 file the model was trained with.
    """
    return vae_fingerprint(fingerprint_weight(getattr(vae, "first_stage_model", None)))


def vae_spec(vae, scaling: LatentScaling = LatentScaling(), name: str = "comfy-vae") -> LatentSpec:
    return LatentSpec(kind="vae", channels=int(getattr(vae, "latent_channels", 4)), downscale=vae_downscale(vae),
                      scale_factor=scaling.scale, shift_factor=scaling.shift, name=name,
                      fingerprint=comfy_vae_fingerprint(vae))


def check_vae_matches(model_spec: LatentSpec, vae) -> None:
    """The graph's VAE must be the latent space the CFM model was trained in (channels, /8, weights)."""
    space = vae_spec(vae)
    check_space_matches(model_spec, space)
    if model_spec.downscale != space.downscale:
        raise CFMError(f"the CFM model was trained for a /{model_spec.downscale} VAE but this VAE downsamples "
                       f"/{space.downscale}; use the VAE the model was trained with")


def require_latent_model(spec: LatentSpec, model_name: str) -> None:
    """A pixel/space-to-depth model cannot read VAE latents: point the user at CFMUpscaleImage."""
    if spec.kind != "vae":
        raise CFMError(f"CFM model {model_name!r} works on pixels ({spec.kind}), not on VAE latents; use the "
                       "CFMUpscaleImage node with an IMAGE (VAE Decode first)")


def check_latent_for_model(model, z: torch.Tensor, name: str = "LATENT") -> None:
    """Channels, NaNs and size of a raw latent against a CFM model (scale-invariant checks)."""
    model.check_latent(z, name)
    check_latent_size(z, name)
