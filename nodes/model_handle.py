"""``CFM_MODEL``: what CFMLoader hands to the other nodes — the model, its config and a ComfyUI ModelPatcher.

The ModelPatcher lets ComfyUI's memory manager load the model onto the GPU when a node needs it and offload it
when something else needs the VRAM. It wraps a small holder module rather than the :class:`cfm_core.CFMModel`
itself, because ModelPatcher *assigns* ``model.device`` (and a few bookkeeping attributes) while CFMModel's
``device`` is a read-only property computed from its weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import comfy.model_management as mm
import comfy.model_patcher
import torch
from torch import nn

from cfm_core import CFMConfig, CFMModel, expected_nfe
from cfm_core.unet import count_parameters


class PatchableCFM(nn.Module):
    """The module ComfyUI manages: holds the CFM model; ``device`` is a plain attribute ModelPatcher may set."""

    def __init__(self, cfm: CFMModel):
        super().__init__()
        self.cfm = cfm
        self.device = cfm.device

    def get_dtype(self) -> torch.dtype:  # ModelPatcher.model_dtype() asks for this
        return self.cfm.dtype


@dataclass
class CFMModelHandle:
    """The value on a ``CFM_MODEL`` wire."""

    model: CFMModel
    patcher: comfy.model_patcher.ModelPatcher
    name: str
    path: str

    @property
    def config(self) -> CFMConfig:
        return self.model.config

    @property
    def load_device(self) -> torch.device:
        return self.patcher.load_device

    def summary(self) -> str:
        """One line for the loader's ``info`` output."""
        cfg, spec = self.config, self.config.latent
        nfe = expected_nfe(cfg.default_solver, cfg.default_steps)
        shift = f", shift {spec.shift_factor:g}" if spec.shift_factor else ""
        space = {"vae": f"VAE {spec.name!r} ({spec.channels} ch, /{spec.downscale}, ×{spec.scale_factor:g}{shift})",
                 "pixels": "pixel space", "space_to_depth": f"space-to-depth /{spec.downscale} (pixels)"}[spec.kind]
        nfe_text = "adaptive" if nfe is None else str(nfe)
        dtype = str(self.model.dtype).replace("torch.", "")
        return (f"{self.name}: ×{cfg.factor} upscaler in {space}; {count_parameters(self.model) / 1e6:.1f}M "
                f"parameters, {dtype}; defaults {cfg.default_solver} × {cfg.default_steps} steps ({nfe_text} NFE), "
                f"noise step {cfg.noise_step}" + (" (less where the image is flat)" if cfg.noise_detail else ""))


def wrap_model(model: CFMModel, name: str, path: str) -> CFMModelHandle:
    holder = PatchableCFM(model)
    patcher = comfy.model_patcher.ModelPatcher(holder, load_device=mm.get_torch_device(),
                                               offload_device=mm.unet_offload_device())
    return CFMModelHandle(model=model, patcher=patcher, name=name, path=path)
