"""Stand-in for ``comfy.sd.VAE`` with the real method signatures and tensor layouts (comfy/sd.py:274-850).

* ``encode(pixels[B, H, W, C] in 0..1)`` centre-crops H, W to multiples of 8, maps to [-1, 1] and returns the raw
  (unscaled) posterior mean ``[B, C_lat, H/8, W/8]`` on ``output_device``; on ``OOM_EXCEPTION`` it falls back to tiles.
* ``decode(latent[B, C_lat, h, w])`` returns ``[B, 8h, 8w, 3]`` clamped to 0..1, channels last, same OOM fallback.
* ``encode_tiled`` / ``decode_tiled`` take tile sizes in pixels / latent units (defaults 512/64 and 64/16).

The autoencoder behind it is tiny and works on independent 8×8 pixel patches (pixel_unshuffle → 1×1 convs), so
tiled and untiled results agree exactly and tests can compute expected values by hand. Test-only extras:
``stub_vae_state_dict(seed, latent_channels, quant_conv)``, ``VAE.stub_calls`` (what was called, with which tiles) and
``VAE.stub_oom_untiled`` (how many untiled calls should raise ``OOM_EXCEPTION``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import comfy.model_management as model_management
import comfy.model_patcher


class StubAutoencoderKL(nn.Module):
    """8×8 patches ↔ latent pixels through 1×1 convs, with the real module names the pack reads:
    ``encoder.conv_out``, ``decoder.conv_in`` and, for SD1.x/SDXL-style VAEs, ``quant_conv``/``post_quant_conv``
    (ComfyUI's AutoencoderKL); SD3/Flux-style VAEs (16 channels) have neither (ComfyUI's AutoencodingEngine)."""

    def __init__(self, latent_channels: int = 4, quant_conv: bool = True):
        super().__init__()
        self.latent_channels = latent_channels
        self.encoder = nn.ModuleDict({"conv_out": nn.Conv2d(3 * 64, 2 * latent_channels, 1)})
        if quant_conv:
            self.quant_conv = nn.Conv2d(2 * latent_channels, 2 * latent_channels, 1)
            self.post_quant_conv = nn.Conv2d(latent_channels, latent_channels, 1)
        self.decoder = nn.ModuleDict({"conv_in": nn.Conv2d(latent_channels, 3 * 64, 1)})

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        moments = self.encoder.conv_out(F.pixel_unshuffle(x, 8))
        if hasattr(self, "quant_conv"):
            moments = self.quant_conv(moments)
        return moments[:, : self.latent_channels]  # the posterior mean (mode), as ComfyUI's encode returns

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "post_quant_conv"):
            z = self.post_quant_conv(z)
        return F.pixel_shuffle(self.decoder.conv_in(z), 8)


def stub_vae_state_dict(seed: int = 0, latent_channels: int = 4, quant_conv: bool = True) -> dict[str, torch.Tensor]:
    """Deterministic weights for :class:`StubAutoencoderKL`; a different seed is a different VAE."""
    gen = torch.Generator().manual_seed(seed)
    model = StubAutoencoderKL(latent_channels, quant_conv)
    return {k: torch.randn(v.shape, generator=gen) * (0.5 / max(1, v.shape[1] if v.ndim > 1 else 1)) ** 0.5
            for k, v in model.state_dict().items()}


class VAE:
    def __init__(self, sd=None, device=None, config=None, dtype=None, metadata=None):
        sd = stub_vae_state_dict() if sd is None else sd
        latent_channels = int(sd["decoder.conv_in.weight"].shape[1])  # as ComfyUI reads it
        size = model_management.dtype_size
        self.memory_used_encode = lambda shape, dtype: (1767 * shape[2] * shape[3]) * size(dtype)
        self.memory_used_decode = lambda shape, dtype: (2178 * shape[2] * shape[3] * 64) * size(dtype)
        self.downscale_ratio = 8
        self.upscale_ratio = 8
        self.latent_channels = latent_channels
        self.latent_dim = 2
        self.output_channels = 3
        self.process_input = lambda image: image * 2.0 - 1.0
        self.process_output = lambda image: torch.clamp((image + 1.0) / 2.0, min=0.0, max=1.0)
        self.working_dtypes = [torch.bfloat16, torch.float32]
        self.disable_offload = False
        self.crop_input = True
        self.first_stage_model = StubAutoencoderKL(latent_channels, "quant_conv.weight" in sd)
        self.first_stage_model.load_state_dict(sd)
        self.first_stage_model.eval().requires_grad_(False)
        self.device = device if device is not None else model_management.vae_device()
        offload_device = model_management.vae_offload_device()
        self.vae_dtype = dtype if dtype is not None else model_management.vae_dtype(self.device, self.working_dtypes)
        self.first_stage_model.to(self.vae_dtype)
        self.output_device = model_management.intermediate_device()
        self.patcher = comfy.model_patcher.ModelPatcher(self.first_stage_model, load_device=self.device,
                                                        offload_device=offload_device)
        self.stub_calls: list[tuple] = []
        self.stub_oom_untiled = 0

    def throw_exception_if_invalid(self):
        if self.first_stage_model is None:
            raise RuntimeError("ERROR: VAE is invalid: None")

    def spacial_compression_decode(self):
        try:
            return self.upscale_ratio[-1]
        except TypeError:
            return self.upscale_ratio

    def spacial_compression_encode(self):
        try:
            return self.downscale_ratio[-1]
        except TypeError:
            return self.downscale_ratio

    def temporal_compression_decode(self):
        return None

    def vae_encode_crop_pixels(self, pixels):
        if not self.crop_input:
            return pixels
        ratio = self.spacial_compression_encode()
        dims = pixels.shape[1:-1]
        for d in range(len(dims)):
            x = (dims[d] // ratio) * ratio
            x_offset = (dims[d] % ratio) // 2
            if x != dims[d]:
                pixels = pixels.narrow(d + 1, x_offset, x)
        return pixels

    def _maybe_oom(self):
        if self.stub_oom_untiled > 0:
            self.stub_oom_untiled -= 1
            raise model_management.OOM_EXCEPTION("CUDA out of memory (stub)")

    # ---------------------------------------------------------------- decode
    def _decode_fn(self, z):
        return self.first_stage_model.decode(z.to(self.vae_dtype).to(self.device)).float()

    def decode(self, samples_in, vae_options={}):  # noqa: B006 (ComfyUI's signature)
        self.throw_exception_if_invalid()
        self.stub_calls.append(("decode", tuple(samples_in.shape)))
        do_tile = False
        try:
            memory_used = self.memory_used_decode(samples_in.shape, self.vae_dtype)
            model_management.load_models_gpu([self.patcher], memory_required=memory_used,
                                             force_full_load=self.disable_offload)
            self._maybe_oom()
            pixel_samples = self.process_output(self._decode_fn(samples_in).to(self.output_device))
        except model_management.OOM_EXCEPTION:
            do_tile = True
        if do_tile:
            self.stub_calls.append(("decode_tiled", tuple(samples_in.shape), 64, 64))
            pixel_samples = self.decode_tiled_(samples_in)
        return pixel_samples.to(self.output_device).movedim(1, -1)

    def decode_tiled_(self, samples, tile_x=64, tile_y=64, overlap=16):
        out = torch.empty(samples.shape[0], 3, samples.shape[2] * 8, samples.shape[3] * 8, device=self.output_device)
        for y in range(0, samples.shape[2], tile_y):
            for x in range(0, samples.shape[3], tile_x):
                tile = samples[..., y:y + tile_y, x:x + tile_x]
                out[..., y * 8:(y + tile.shape[2]) * 8, x * 8:(x + tile.shape[3]) * 8] = self._decode_fn(tile)
        return self.process_output(out)

    def decode_tiled(self, samples, tile_x=None, tile_y=None, overlap=None, tile_t=None, overlap_t=None):
        self.throw_exception_if_invalid()
        self.stub_calls.append(("decode_tiled", tuple(samples.shape), tile_x, tile_y))
        model_management.load_models_gpu([self.patcher], memory_required=0, force_full_load=self.disable_offload)
        args = {k: v for k, v in (("tile_x", tile_x), ("tile_y", tile_y), ("overlap", overlap)) if v is not None}
        return self.decode_tiled_(samples, **args).movedim(1, -1)

    # ---------------------------------------------------------------- encode
    def _encode_fn(self, pixels_bchw):
        return self.first_stage_model.encode(self.process_input(pixels_bchw).to(self.vae_dtype).to(self.device)).float()

    def encode(self, pixel_samples):
        self.throw_exception_if_invalid()
        pixel_samples = self.vae_encode_crop_pixels(pixel_samples)
        pixel_samples = pixel_samples.movedim(-1, 1)
        self.stub_calls.append(("encode", tuple(pixel_samples.shape)))
        do_tile = False
        try:
            memory_used = self.memory_used_encode(pixel_samples.shape, self.vae_dtype)
            model_management.load_models_gpu([self.patcher], memory_required=memory_used,
                                             force_full_load=self.disable_offload)
            self._maybe_oom()
            samples = self._encode_fn(pixel_samples).to(self.output_device)
        except model_management.OOM_EXCEPTION:
            do_tile = True
        if do_tile:
            self.stub_calls.append(("encode_tiled", tuple(pixel_samples.shape), 512, 512))
            samples = self.encode_tiled_(pixel_samples)
        return samples

    def encode_tiled_(self, pixel_samples, tile_x=512, tile_y=512, overlap=64):
        b, _c, h, w = pixel_samples.shape
        out = torch.empty(b, self.latent_channels, h // 8, w // 8, device=self.output_device)
        tile_x, tile_y = max(8, tile_x - tile_x % 8), max(8, tile_y - tile_y % 8)
        for y in range(0, h, tile_y):
            for x in range(0, w, tile_x):
                tile = pixel_samples[..., y:y + tile_y, x:x + tile_x]
                out[..., y // 8:(y + tile.shape[2]) // 8, x // 8:(x + tile.shape[3]) // 8] = self._encode_fn(tile)
        return out

    def encode_tiled(self, pixel_samples, tile_x=None, tile_y=None, overlap=None, tile_t=None, overlap_t=None):
        self.throw_exception_if_invalid()
        pixel_samples = self.vae_encode_crop_pixels(pixel_samples)
        pixel_samples = pixel_samples.movedim(-1, 1)
        self.stub_calls.append(("encode_tiled", tuple(pixel_samples.shape), tile_x, tile_y))
        model_management.load_models_gpu([self.patcher], memory_required=0, force_full_load=self.disable_offload)
        args = {k: v for k, v in (("tile_x", tile_x), ("tile_y", tile_y), ("overlap", overlap)) if v is not None}
        return self.encode_tiled_(pixel_samples, **args)

    def get_sd(self):
        return self.first_stage_model.state_dict()
