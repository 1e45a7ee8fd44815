"""cfm_core: Coupling Flow Matching (CompVis, "Boosting Latent Diffusion with Flow Matching", ECCV 2024).

A standalone PyTorch engine: the velocity UNet, the coupling path and objectives, noise augmentation,
pixel-space upsampling, ODE solvers, tiling, self-describing checkpoints, training, evaluation and a CLI.
It never imports ComfyUI.
"""
from .augment import DEFAULT_NOISE_STEP, alpha_bar, alpha_bars, batch_stable_noise, noise_augment
from .autoencoders import DiffusersVAE, LatentScaling, LatentSpec, PixelSpace, SpaceToDepth
from .checkpoint import convert_official, load_model, read_config, save_model
from .errors import CFMError
from .model import CFMConfig, CFMModel
from .path import OBJECTIVES, CouplingPath, training_loss
from .pipeline import UpscaleResult, boost, cascade, upscale_image, upscale_latent
from .solvers import SOLVERS, SolveResult, StepInfo, expected_nfe, integrate
from .tiling import TiledVelocity
from .unet import PRESETS, UNetConfig, VelocityUNet, preset
from .upsample import latent_upsample, pixel_space_upsample

__version__ = "0.1.0"

__all__ = [
    "CFMConfig", "CFMError", "CFMModel", "CouplingPath", "DEFAULT_NOISE_STEP", "DiffusersVAE", "LatentScaling",
    "LatentSpec", "OBJECTIVES", "PRESETS", "PixelSpace", "SOLVERS", "SolveResult", "SpaceToDepth", "StepInfo",
    "TiledVelocity", "UNetConfig", "UpscaleResult", "VelocityUNet", "alpha_bar", "alpha_bars",
    "batch_stable_noise", "boost", "cascade", "convert_official", "expected_nfe", "integrate", "latent_upsample",
    "load_model", "noise_augment", "pixel_space_upsample", "preset", "read_config", "save_model",
    "training_loss", "upscale_image", "upscale_latent",
]
