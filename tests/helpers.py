"""Tiny-model builders and a script loader shared by the test files (``from helpers import tiny_model``).

A fresh CFM model outputs exactly v = 0 (its last layers are zero-initialised, as in the official code), which
would make many checks vacuous; ``tiny_model(randomize=True)`` re-draws those layers so v ≠ 0.
"""
from __future__ import annotations

import importlib.util
import os
from types import ModuleType

import torch
from torch import nn

from cfm_core.autoencoders import LatentSpec, PixelSpace, SpaceToDepth
from cfm_core.model import CFMConfig, CFMModel
from cfm_core.unet import ResBlock, SelfAttention, preset


def default_latent(channels: int) -> LatentSpec:
    """A latent spec for ``channels``: pixels (3), space-to-depth ×2 (12), else an SD-like VAE space."""
    if channels == 3:
        return PixelSpace.spec
    if channels == 12:
        return SpaceToDepth(2).spec
    return LatentSpec(kind="vae", channels=channels, downscale=8, name="test-vae")


def tiny_config(latent_channels: int = 4, latent: LatentSpec | None = None, *, objective: str = "cfm",
                unet_preset: str = "tiny", default_steps: int = 4, default_solver: str = "euler",
                prediction: str = "velocity", **unet_overrides) -> CFMConfig:
    latent = latent or default_latent(latent_channels)
    unet = preset(unet_preset, latent.channels, **unet_overrides)
    return CFMConfig(unet=unet, latent=latent, objective=objective, default_steps=default_steps,
                     default_solver=default_solver, prediction=prediction,
                     upsample="latent-bilinear" if latent.kind == "vae" else "psu")


def zero_initialised_layers(module: nn.Module) -> list[nn.Module]:
    """The layers the UNet zero-initialises: each res block's last conv, attention proj_out, the output conv."""
    layers: list[nn.Module] = []
    for m in module.modules():
        if isinstance(m, ResBlock):
            layers.append(m.out_layers[-1])
        elif isinstance(m, SelfAttention):
            layers.append(m.proj_out)
    net = getattr(module, "net", module)
    layers.append(net.out[-1])
    return layers


@torch.no_grad()
def randomize_zero_layers(module: nn.Module, seed: int = 0, scale: float = 0.05) -> None:
    """Give the zero-initialised layers small random weights (deterministic in ``seed``)."""
    gen = torch.Generator().manual_seed(seed)
    for layer in zero_initialised_layers(module):
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)


def tiny_model(latent_channels: int = 4, latent: LatentSpec | None = None, seed: int = 0, randomize: bool = True,
               **config_kwargs) -> CFMModel:
    """A CPU ``tiny``-preset CFM model in eval mode; deterministic in ``seed``."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG as it was
        torch.manual_seed(seed)
        model = CFMModel(tiny_config(latent_channels, latent, **config_kwargs))
    if randomize:
        randomize_zero_layers(model, seed)
    return model.eval()


def load_script(name: str) -> ModuleType:
    """Import ``scripts/NAME.py`` (the scripts folder is not a package)."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
