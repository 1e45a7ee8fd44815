"""A ComfyUI ``VAE`` as a cfm_core latent space, so cfm_core's pipeline functions can run on it.

cfm_core spaces map pixels in [-1, 1] (B, 3, H, W) to *model-space* latents; a ComfyUI VAE maps pixels in [0, 1]
(B, H, W, 3) to *raw* latents. :class:`ComfyVAESpace` converts layouts and ranges and applies the model's
:class:`~cfm_core.LatentScaling`; with the identity scaling it is simply "raw VAE space" (what PSU needs).

Large images are encoded/decoded in tiles (``vae.encode_tiled``/``decode_tiled``): always, never, or ``auto`` =
above :data:`AUTO_TILE_PIXELS` per image, and as a fallback when the plain call runs out of memory.
"""
from __future__ import annotations

import comfy.model_management as mm
import torch

from cfm_core import CFMError, LatentScaling

from .common import LOG, vae_downscale, vae_spec
from .oom import is_oom

TILING_MODES = ("auto", "always", "never")
AUTO_TILE_PIXELS = 2048 * 2048
DEFAULT_TILE_PX = 512
DEFAULT_OVERLAP_PX = 64


class ComfyVAESpace:
    """cfm_core ``LatentSpace`` backed by a ComfyUI VAE: ``encode(pixels[-1,1] BCHW) -> model-space latent``."""

    def __init__(self, vae, scaling: LatentScaling = LatentScaling(), *, tiling: str = "auto",
                 tile_size: int = DEFAULT_TILE_PX, name: str = "comfy-vae"):
        if tiling not in TILING_MODES:
            raise CFMError(f"vae_tiling={tiling!r} is unknown; use one of {TILING_MODES}")
        self.vae, self.scaling, self.tiling = vae, scaling, tiling
        self.tile_size = max(64, int(tile_size))
        self.spec = vae_spec(vae, scaling, name)

    @property
    def device(self) -> torch.device:
        """Where to hand pixels to ``encode``: the VAE moves them to its own device itself."""
        return mm.intermediate_device()

    # ------------------------------------------------------------------ cfm_core LatentSpace protocol
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        image = ((pixels.float() + 1) / 2).movedim(1, -1)  # [-1,1] BCHW → [0,1] BHWC
        return self.scaling.to_model(self.encode_raw(image))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        image = self.decode_raw(self.scaling.to_raw(z.float()))
        return image.movedim(-1, 1) * 2 - 1

    def raw_pixels(self) -> RawPixels:
        """This VAE as a latent space of raw latents and ComfyUI's 0..1 pixels (what PSU resizes)."""
        return RawPixels(self)

    # ------------------------------------------------------------------ ComfyUI layouts, raw latents
    def decode_raw(self, raw: torch.Tensor) -> torch.Tensor:
        """raw latent [B, C, h, w] → image [B, H, W, 3] in 0..1 (ComfyUI's decode clamps)."""
        d = vae_downscale(self.vae)
        pixels = raw.shape[-2] * raw.shape[-1] * d * d
        if self._tiled(pixels):
            return self._decode_tiled(raw)
        try:
            return self.vae.decode(raw)
        except Exception as exc:  # ComfyUI's VAE already falls back itself; this covers VAEs that do not
            if not is_oom(exc):
                raise
        LOG.warning("CFM Boost: VAE decode ran out of memory, retrying in %d px tiles", self.tile_size)
        mm.soft_empty_cache()
        return self._decode_tiled(raw)

    def encode_raw(self, image: torch.Tensor) -> torch.Tensor:
        """image [B, H, W, C] in 0..1 → raw latent [B, C_lat, H/d, W/d] (H, W centre-cropped to multiples of d)."""
        image = image[..., :3]
        if self._tiled(image.shape[1] * image.shape[2]):
            return self._encode_tiled(image)
        try:
            return self.vae.encode(image)
        except Exception as exc:
            if not is_oom(exc):
                raise
        LOG.warning("CFM Boost: VAE encode ran out of memory, retrying in %d px tiles", self.tile_size)
        mm.soft_empty_cache()
        return self._encode_tiled(image)

    def _tiled(self, pixels_per_image: int) -> bool:
        return self.tiling == "always" or (self.tiling == "auto" and pixels_per_image > AUTO_TILE_PIXELS)

    def _overlap_px(self) -> int:
        return min(DEFAULT_OVERLAP_PX, self.tile_size // 4)  # VAEDecodeTiled keeps overlap ≤ tile/4 too

    def _decode_tiled(self, raw: torch.Tensor) -> torch.Tensor:
        d = vae_downscale(self.vae)
        tile, overlap = self.tile_size // d, self._overlap_px() // d
        return self.vae.decode_tiled(raw, tile_x=tile, tile_y=tile, overlap=overlap)

    def _encode_tiled(self, image: torch.Tensor) -> torch.Tensor:
        tile = self.tile_size
        return self.vae.encode_tiled(image, tile_x=tile, tile_y=tile, overlap=self._overlap_px())


class RawPixels:
    """A :class:`ComfyVAESpace` as a latent space of raw latents and pixels [B, 3, H, W] in ComfyUI's 0..1: no
    scaling and no conversion to [-1, 1] around the resize of PSU (a linear map, so the range does not matter;
    skipping it keeps the node's output bits as they were)."""

    def __init__(self, space: ComfyVAESpace):
        self.space, self.spec = space, space.spec

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        return self.space.decode_raw(raw).movedim(-1, 1)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.space.encode_raw(pixels.movedim(1, -1))
