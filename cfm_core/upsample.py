"""Low-res → high-res starting point of the coupling.

Pixel-space upsampling (PSU, the paper's choice): decode → bilinear resize in pixels (align_corners=False,
no antialias, no clamp) → encode to the posterior mean. Latent-space bilinear/nearest are cheaper alternatives
that skip the autoencoder. The CLI, the pipeline, training and the ComfyUI nodes all resize through
:func:`resize_pixels` and upsample through :func:`pixel_space_upsample`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .autoencoders import LatentSpace
from .errors import CFMError

UPSAMPLE_MODES = ("psu", "latent-bilinear", "latent-nearest")
RESIZE_MODES = ("bilinear", "bicubic", "nearest-exact")  # the pixel resize of PSU; bilinear is what models learn


def check_resize_mode(mode: str) -> None:
    if mode not in RESIZE_MODES:
        raise CFMError(f"resize mode {mode!r} is unknown; use one of {', '.join(RESIZE_MODES)}")


def resize_pixels(pixels: torch.Tensor, factor: float = 2.0, mode: str = "bilinear", *,
                  size: tuple[int, int] | None = None) -> torch.Tensor:
    """Resize (B, C, H, W) pixels by ``factor`` (to round(H·factor) × round(W·factor)) or to ``size`` = (h, w).

    The default is the resize every model is trained with: bilinear, align_corners=False, no antialias, no clamp
    (PSU, the training pairs and ``upscale_image`` all call this). Shrinking is antialiased in bilinear/bicubic, so
    it does not alias; the other RESIZE_MODES are for experiments."""
    check_resize_mode(mode)
    h, w = pixels.shape[-2:]
    size = size or (round(h * factor), round(w * factor))
    if mode in ("bilinear", "bicubic"):
        shrinking = size[0] < h or size[1] < w
        return F.interpolate(pixels, size=size, mode=mode, align_corners=False, antialias=shrinking)
    return F.interpolate(pixels, size=size, mode=mode)


# How a low-res image can have been made from its high-res original. ``box`` is what the official code does
# (``F.interpolate(mode="bilinear")`` without antialiasing: at 2× exactly the 2×2 box average); ``area`` is the
# f×f box at every factor; ``bilinear-aa``/``bicubic-aa`` are torch's antialiased resizes; ``lanczos`` is PIL's.
DOWNSAMPLE_KERNELS = ("box", "bilinear-aa", "bicubic-aa", "lanczos", "area")
KERNEL_ALIASES = {"bilinear": "bilinear-aa", "bicubic": "bicubic-aa"}  # the names of releases before kernel lists


def parse_kernels(value: str | Sequence[str], what: str = "--downsample") -> tuple[str, ...]:
    """``"box,lanczos"`` or ``["box", "lanczos"]`` → canonical kernel names; CFMError names an unknown one."""
    parts = value.split(",") if isinstance(value, str) else [p for v in value for p in v.split(",")]
    kernels = []
    for part in (p.strip() for p in parts):
        kernel = KERNEL_ALIASES.get(part, part)
        if kernel not in DOWNSAMPLE_KERNELS:
            raise CFMError(f"{what} {part!r} is unknown; use one or more of {', '.join(DOWNSAMPLE_KERNELS)}")
        if kernel not in kernels:
            kernels.append(kernel)
    if not kernels:
        raise CFMError(f"{what} is empty; use one or more of {', '.join(DOWNSAMPLE_KERNELS)}")
    return tuple(kernels)


def _lanczos(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """PIL's Lanczos (a = 3, antialiased) on each float channel: no 8-bit rounding on the way."""
    from PIL import Image

    flat = images.detach().float().cpu().reshape(-1, *images.shape[-2:])
    out = [torch.from_numpy(np.array(Image.fromarray(c.numpy()).resize(size[::-1], Image.LANCZOS)))
           for c in flat]
    return torch.stack(out).reshape(*images.shape[:-2], *size).to(images.device, images.dtype)


def make_low_res(high_res: torch.Tensor, factor: int = 2, kernel: str = "box") -> torch.Tensor:
    """The training/evaluation degradation: downsample (B, C, H, W) by ``factor`` with one of DOWNSAMPLE_KERNELS."""
    h, w = high_res.shape[-2:]
    if h % factor or w % factor:
        raise CFMError(f"image size {w}×{h} is not a multiple of the factor {factor}")
    (kernel,) = parse_kernels([kernel], "downsample kernel")
    size = (h // factor, w // factor)
    if kernel == "box":
        return F.interpolate(high_res, size=size, mode="bilinear", align_corners=False)
    if kernel == "area":
        return F.interpolate(high_res, size=size, mode="area")
    if kernel == "lanczos":
        return _lanczos(high_res, size)
    return F.interpolate(high_res, size=size, mode=kernel[:-3], align_corners=False, antialias=True)


def upsampled_size(z: torch.Tensor, factor: float) -> tuple[int, int]:
    """The latent size after upsampling (B, C, h, w) by ``factor``: round(h·factor) × round(w·factor), at least 1."""
    h, w = z.shape[-2:]
    return max(1, round(h * factor)), max(1, round(w * factor))


def pixel_space_upsample(z: torch.Tensor, space: LatentSpace, factor: float = 2,
                         mode: str = "bilinear") -> torch.Tensor:
    """PSU: encode(resize(decode(z))). ``z`` and the result are latents of ``space`` [B, C, round(f·h), round(f·w)]:
    the decoded pixels are resized (:func:`resize_pixels`, ``mode`` one of RESIZE_MODES) to exactly the space's
    downscale × that size, so any factor above 0 works (below 1 shrinks)."""
    _check_latent(z, space.spec.channels)
    check_resize_mode(mode)  # before the decode
    if not factor > 0:
        raise CFMError(f"upsample factor {factor:g} must be above 0")
    h, w = upsampled_size(z, factor)
    d = space.spec.downscale
    return space.encode(resize_pixels(space.decode(z), mode=mode, size=(h * d, w * d)))


def _check_latent(z: torch.Tensor, channels: int | None = None) -> None:
    if z.ndim != 4 or min(z.shape) < 1 or (channels is not None and z.shape[1] != channels):
        want = f"[B, {channels}, H, W]" if channels is not None else "[B, C, H, W]"
        raise CFMError(f"latent of shape {tuple(z.shape)} cannot be upsampled here; it must be {want} (non-empty)")


def latent_upsample(z: torch.Tensor, factor: int = 2, mode: str = "bilinear") -> torch.Tensor:
    """Cheap alternative to PSU: interpolate the latent itself."""
    _check_latent(z)
    if mode not in ("bilinear", "nearest"):
        raise CFMError(f"latent upsample mode {mode!r} is unknown; use bilinear or nearest")
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
