"""The models the sections measure: random-weight stand-ins with real architectures, for timing (the SD1.5 VAE and
UNet, and our velocity UNet), and the trained model of the solver and memory sections (:func:`resolve_model`).

The stand-ins load no weights: the shapes (and so the cost) are those of the real models, the outputs are noise.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from ..unet import UNetConfig, VelocityUNet, preset
from .common import BenchContext

# diffusers AutoencoderKL, SD1.5 kl-f8 (vae/config.json of runwayml/stable-diffusion-v1-5)
SD15_VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, sample_size=512, layers_per_block=2, act_fn="silu",
    norm_num_groups=32, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    scaling_factor=0.18215,
)

# diffusers UNet2DConditionModel, SD1.5 (unet/config.json of runwayml/stable-diffusion-v1-5)
SD15_UNET_CONFIG = dict(
    sample_size=64, in_channels=4, out_channels=4, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1,
    act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=768, attention_head_dim=8,
    use_linear_projection=False,
)
SD15_TEXT_TOKENS = 77  # CLIP context length; classifier-free guidance doubles the batch


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def randomise_zero_layers(module: nn.Module, seed: int = 0, std: float = 0.02) -> nn.Module:
    """Re-initialise parameters that are exactly zero-initialised weights (output convs, ``proj_out``).

    A fresh velocity UNet outputs v = 0 by design; then bf16-vs-fp32 differences would be zero too, and a
    trained model's weights are not zero. Biases stay as they are.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("weight") and p.ndim > 1 and not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return module


def build_cfm_unet(config: UNetConfig | str, device: torch.device, seed: int = 0) -> VelocityUNet:
    """Our velocity UNet with random (non-zero everywhere) weights, eval mode, fp32."""
    torch.manual_seed(seed)
    cfg = preset(config) if isinstance(config, str) else config
    return randomise_zero_layers(VelocityUNet(cfg), seed).to(device).eval()


def build_sd_vae(device: torch.device, config: dict | None = None, seed: int = 0):
    """A diffusers AutoencoderKL with the SD1.5 architecture (or ``config``) and random weights."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(**(config or SD15_VAE_CONFIG)).to(device).eval().requires_grad_(False)


def build_sd_unet(device: torch.device, config: dict | None = None, seed: int = 0):
    """A diffusers UNet2DConditionModel with the SD1.5 architecture (or ``config``) and random weights."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**(config or SD15_UNET_CONFIG)).to(device).eval().requires_grad_(False)


def sd_unet_call(unet, latent_side: int, batch: int, device: torch.device, tokens: int = SD15_TEXT_TOKENS,
                 seed: int = 0):
    """A closure running one guided SD-UNet evaluation: ``batch`` = 2 × images (cond + uncond for CFG)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    channels = unet.config.in_channels
    sample = torch.randn(batch, channels, latent_side, latent_side, generator=gen).to(device)
    context = torch.randn(batch, tokens, unet.config.cross_attention_dim, generator=gen).to(device)
    timestep = torch.full((batch,), 500, device=device, dtype=torch.long)

    def run() -> torch.Tensor:
        with torch.no_grad():
            return unet(sample, timestep, encoder_hidden_states=context).sample

    return run


def cfm_unet_call(net: VelocityUNet, latent_side: int, batch: int, device: torch.device, seed: int = 0,
                  channels_last: bool = False, input_dtype: torch.dtype = torch.float32):
    """A closure running one velocity-UNet evaluation v(x_t, t, z_up) on fixed random inputs."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    c = net.config.latent_channels
    x = torch.randn(batch, c, latent_side, latent_side, generator=gen).to(device, input_dtype)
    z = torch.randn(batch, c, latent_side, latent_side, generator=gen).to(device, input_dtype)
    if channels_last:
        x, z = x.contiguous(memory_format=torch.channels_last), z.contiguous(memory_format=torch.channels_last)
    t = torch.full((batch,), 0.5, device=device)

    def run() -> torch.Tensor:
        with torch.no_grad():
            return net(x, t, z)

    return run


def resolve_model(ctx: BenchContext) -> str | None:
    """``--model`` or the bundled model; None when neither exists."""
    if ctx.model_path:
        return ctx.model_path
    from ..bundled import bundled_model_path

    path = bundled_model_path()
    return path if os.path.isfile(path) else None
