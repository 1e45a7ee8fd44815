"""Stand-in for ComfyUI's ``latent_preview``: ``get_previewer`` (Latent2RGB; TAESD falls back to it here, as in
ComfyUI when no TAESD decoder is installed), ``preview_to_image`` and ``MAX_PREVIEW_RESOLUTION``, as in a125cd8."""
from __future__ import annotations

import torch
from comfy.cli_args import LatentPreviewMethod, args
from PIL import Image

MAX_PREVIEW_RESOLUTION = args.preview_size


def preview_to_image(latent_image):
    latents_ubyte = (((latent_image + 1.0) / 2.0).clamp(0, 1).mul(0xFF))
    latents_ubyte = latents_ubyte.to(device="cpu", dtype=torch.uint8)
    return Image.fromarray(latents_ubyte.numpy())


class LatentPreviewer:
    def decode_latent_to_preview(self, x0):
        pass

    def decode_latent_to_preview_image(self, preview_format, x0):
        preview_image = self.decode_latent_to_preview(x0)
        return ("JPEG", preview_image, MAX_PREVIEW_RESOLUTION)


class Latent2RGBPreviewer(LatentPreviewer):
    def __init__(self, latent_rgb_factors, latent_rgb_factors_bias=None):
        self.latent_rgb_factors = torch.tensor(latent_rgb_factors, device="cpu").transpose(0, 1)
        self.latent_rgb_factors_bias = None
        if latent_rgb_factors_bias is not None:
            self.latent_rgb_factors_bias = torch.tensor(latent_rgb_factors_bias, device="cpu")

    def decode_latent_to_preview(self, x0):
        self.latent_rgb_factors = self.latent_rgb_factors.to(dtype=x0.dtype, device=x0.device)
        if self.latent_rgb_factors_bias is not None:
            self.latent_rgb_factors_bias = self.latent_rgb_factors_bias.to(dtype=x0.dtype, device=x0.device)
        x0 = x0[0, :, 0] if x0.ndim == 5 else x0[0]
        latent_image = torch.nn.functional.linear(x0.movedim(0, -1), self.latent_rgb_factors,
                                                  bias=self.latent_rgb_factors_bias)
        return preview_to_image(latent_image)


def get_previewer(device, latent_format):
    previewer = None
    method = args.preview_method
    if method != LatentPreviewMethod.NoPreviews and latent_format.latent_rgb_factors is not None:
        previewer = Latent2RGBPreviewer(latent_format.latent_rgb_factors, latent_format.latent_rgb_factors_bias)
    return previewer
