"""Low-res → high-res starting point of the coupling.

Pixel-space upsampling (PSU, the paper's choice): decode → bilinear resize in pixels (align_corners=False,
no antialias, no clamp) → encode to the posterior mean. Latent-space bilinear/nearest are cheaper alternatives
that skip the autoencoder.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .autoencoders import LatentSpace
from .errors import CFMError

UPSAMPLE_MODES = ("psu", "latent-bilinear", "latent-nearest")


def resize_pixels(pixels: torch.Tensor, factor: float, mode: str = "bilinear") -> torch.Tensor:
    h, w = pixels.shape[-2:]
    size = (round(h * factor), round(w * factor))
    if mode in ("bilinear", "bicubic"):
        return F.interpolate(pixels, size=size, mode=mode, align_corners=False)
    return F.interpolate(pixels, size=size, mode=mode)


def make_low_res(high_res: torch.Tensor, factor: int = 2, method: str = "bilinear") -> torch.Tensor:
    """The training/evaluation degradation: downsample (B, C, H, W) by ``factor``.

    ``bilinear`` (the paper's choice) uses antialiasing so that factors above 2 do not alias; at exactly 2× a
    plain bilinear downsample would be a 2×2 average. ``area`` is the 2×2 (f×f) box average.
    """
    h, w = high_res.shape[-2:]
    if h % factor or w % factor:
        raise CFMError(f"image size {w}×{h} is not a multiple of the factor {factor}")
    size = (h // factor, w // factor)
    if method == "area":
        return F.interpolate(high_res, size=size, mode="area")
    if method in ("bilinear", "bicubic"):
        return F.interpolate(high_res, size=size, mode=method, align_corners=False, antialias=True)
    raise CFMError(f"downsample method {method!r} is unknown; use bilinear, bicubic or area")


def pixel_space_upsample(z: torch.Tensor, space: LatentSpace, factor: int = 2,
                         mode: str = "bilinear") -> torch.Tensor:
    """PSU: encode(resize(decode(z), ×factor)). ``z`` and the result are model-space latents."""
    return space.encode(resize_pixels(space.decode(z), factor, mode))


def latent_upsample(z: torch.Tensor, factor: int = 2, mode: str = "bilinear") -> torch.Tensor:
    """Cheap alternative to PSU: interpolate the latent itself."""
    if mode == "bilinear":
        return F.interpolate(z, scale_factor=factor, mode="bilinear", align_corners=False)
    return F.interpolate(z, scale_factor=factor, mode="nearest")


def upsample(z: torch.Tensor, space: LatentSpace | None, factor: int = 2, method: str = "psu") -> torch.Tensor:
    """Dispatch on ``method`` (one of UPSAMPLE_MODES)."""
    if method == "psu":
        if space is None:
            raise CFMError("upsample='psu' needs a latent space (VAE); pass one or use upsample='latent-bilinear'")
        return pixel_space_upsample(z, space, factor)
    if method in ("latent-bilinear", "latent-nearest"):
        return latent_upsample(z, factor, method.split("-")[1])
    raise CFMError(f"upsample={method!r} is unknown; use one of {UPSAMPLE_MODES}")
