"""VAE families: which latent space a VAE file encodes to, read from the file where it says so, else asked for.

A latent model is trained in one family's *model space*, z = (raw − shift)·scale (ComfyUI's latent formats):

=========  ========  ===========  ============  =================================
family     channels  scale        shift         published VAE
=========  ========  ===========  ============  =================================
``sd15``   4         0.18215      0             SD1.x / SD2.x kl-f8 (quant_conv)
``sdxl``   4         0.13025      0             SDXL (same architecture as sd15)
``sd3``    16        1.5305       0.0609        SD3 / SD3.5 (no quant_conv)
``flux``   16        0.3611       0.1159        Flux.1 (same architecture as sd3)
=========  ========  ===========  ============  =================================

SD1.x and SDXL VAEs, and SD3 and Flux VAEs, have identical key layouts and shapes, so the family is read from what
the file says beside its tensors — safetensors metadata (``modelspec.architecture``), the diffusion model stored
next to the VAE in a full checkpoint (``joint_blocks`` = SD3, ``double_blocks`` = Flux, ``conditioner.embedders`` /
``label_emb`` = SDXL, ``cond_stage_model`` = SD1.x/SD2.x), a diffusers folder's ``model_index.json`` or its VAE
config's scale — or named with ``--vae-family``. When neither tells, :func:`resolve_family` asks in one line; it
never guesses between two families that share an architecture.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .errors import CFMError


@dataclass(frozen=True)
class VAEFamily:
    key: str
    title: str
    channels: int
    scale: float
    shift: float = 0.0


FAMILIES: dict[str, VAEFamily] = {f.key: f for f in (
    VAEFamily("sd15", "SD1.x/SD2.x", 4, 0.18215),
    VAEFamily("sdxl", "SDXL", 4, 0.13025),
    VAEFamily("sd3", "SD3/SD3.5", 16, 1.5305, 0.0609),
    VAEFamily("flux", "Flux.1", 16, 0.3611, 0.1159),
)}
ALIASES = {"sd1": "sd15", "sd1.5": "sd15", "sd2": "sd15", "sd21": "sd15", "sd2.1": "sd15", "sd35": "sd3",
           "sd3.5": "sd3", "flux1": "flux", "flux.1": "flux"}
CUSTOM = ""  # a VAE outside the four families (e.g. a test VAE), described by its scale/shift alone


def family_named(name: str, flag: str = "--vae-family") -> VAEFamily:
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in FAMILIES:
        raise CFMError(f"{flag} {name!r} is unknown; use one of {', '.join(FAMILIES)}")
    return FAMILIES[key]


def families_with(channels: int) -> list[VAEFamily]:
    return [f for f in FAMILIES.values() if f.channels == channels]


def family_for_scale(channels: int, scale: float, shift: float | None = None) -> VAEFamily | None:
    """The family whose (channels, scale[, shift]) these are, if any (a diffusers config's ``scaling_factor``)."""
    for f in families_with(channels):
        if abs(f.scale - scale) <= 1e-4 * f.scale and (shift is None or abs(f.shift - shift) <= 1e-4):
            return f
    return None


# ------------------------------------------------------------------------------------------ what a file says

def family_from_metadata(metadata: Mapping[str, str] | None) -> str | None:
    """``modelspec.architecture`` (e.g. ``stable-diffusion-xl-v1-base``, ``flux-1-dev/vae``) → family key."""
    arch = str((metadata or {}).get("modelspec.architecture", "")).lower()
    if not arch:
        return None
    if "flux" in arch:
        return "flux"
    if "stable-diffusion-v3" in arch or arch.startswith("sd3"):
        return "sd3"
    if "stable-diffusion-xl" in arch or "sdxl" in arch:
        return "sdxl"
    if "stable-diffusion-v1" in arch or "stable-diffusion-v2" in arch:
        return "sd15"
    return None


# (key fragment, family), most specific first: the diffusion model and text encoders beside the VAE in a full
# checkpoint. ``label_emb`` comes last: SD2.x unCLIP UNets have one too, beside their cond_stage_model.
_NEIGHBOUR_KEYS = (("joint_blocks.", "sd3"), ("double_blocks.", "flux"), ("conditioner.embedders.", "sdxl"),
                   ("cond_stage_model.", "sd15"), ("diffusion_model.label_emb.", "sdxl"))


def family_from_checkpoint_keys(keys: Iterable[str]) -> str | None:
    """The family a full model checkpoint belongs to, from the UNet/transformer/text-encoder keys beside its VAE."""
    found = {fragment for key in keys for fragment, _ in _NEIGHBOUR_KEYS if fragment in key}
    return next((family for fragment, family in _NEIGHBOUR_KEYS if fragment in found), None)


_PIPELINES = {"StableDiffusion3": "sd3", "Flux": "flux", "StableDiffusionXL": "sdxl", "StableDiffusion": "sd15"}


def family_from_diffusers_folder(folder: str, vae_config: Mapping) -> tuple[str | None, str]:
    """(family, where it was read) for a diffusers VAE folder: the pipeline's ``model_index.json`` one level up, else
    the VAE config's ``scaling_factor``/``shift_factor`` when they are a family's."""
    index = os.path.join(os.path.dirname(os.path.normpath(folder)), "model_index.json")
    if os.path.isfile(index):
        try:
            with open(index) as fh:
                name = str(json.load(fh).get("_class_name", ""))
        except (OSError, ValueError):
            name = ""
        for prefix, family in _PIPELINES.items():  # more specific prefixes come first
            if name.startswith(prefix):
                return family, f"model_index.json says {name}"
    scale, shift = vae_config.get("scaling_factor"), vae_config.get("shift_factor")
    if scale is not None:
        f = family_for_scale(int(vae_config.get("latent_channels", 4)), float(scale), float(shift or 0.0))
        if f is not None:
            return f.key, f"config.json scaling_factor {scale:g}"
    return None, ""


# ------------------------------------------------------------------------------------------ deciding

def resolve_family(channels: int, *, told: str | None = None, told_by: str = "--vae-family",
                   evidence: str | None = None, evidence_from: str = "", scale: float | None = None,
                   shift: float | None = None, path: str = "the VAE") -> VAEFamily | None:
    """The VAE's family, or None for a custom VAE described by an explicit ``scale`` (and ``shift``).

    Order: what the user (or the model) says, checked against what the file says; else an explicit ``scale``
    (the family it is the scale of, or None: custom); else what the file says; else a one-line question naming
    the flag.
    """
    if told:
        family = family_named(told, told_by)
        if scale is not None and abs(scale - family.scale) > 1e-4 * family.scale:
            raise CFMError(f"--scale-factor {scale:g} is not {family.title}'s {family.scale:g}; drop --scale-factor "
                           f"or {told_by}")
        if evidence and evidence != family.key:
            raise CFMError(f"{path!r} is a {FAMILIES[evidence].title} VAE ({evidence_from}) but {told_by} says "
                           f"{family.key}; use a {family.title} VAE" + (" or drop the flag" if told_by.startswith("--")
                                                                       else ""))
    elif scale is not None:
        family = family_for_scale(channels, scale, shift)
        if family is None:
            return None
    elif evidence:
        family = FAMILIES[evidence]
    else:
        options = families_with(channels)
        if not options:
            raise CFMError(f"{path!r} makes {channels}-channel latents, not those of a known family "
                           f"({', '.join(f'{f.key} {f.channels} ch' for f in FAMILIES.values())}); pass "
                           "--scale-factor (and --shift-factor) to train in its space anyway")
        names = " or ".join(f.title for f in options)
        raise CFMError(f"{path!r} is a {channels}-channel VAE that can be {names} (same architecture, different "
                       f"latent scale) and the file does not say which; pass --vae-family "
                       f"{'|'.join(f.key for f in options)}")
    if family.channels != channels:
        raise CFMError(f"{told_by if told else 'the file'} says {family.title} ({family.channels}-channel latents) "
                       f"but {path!r} makes {channels}-channel latents; use a {family.title} VAE")
    return family
