"""cfm_core: Coupling Flow Matching (CompVis, "Boosting Latent Diffusion with Flow Matching", ECCV 2024).

A standalone PyTorch engine: the velocity UNet, the coupling path and objectives, noise augmentation,
pixel-space upsampling, ODE solvers, tiling, self-describing checkpoints, training, evaluation and a CLI.
It never imports ComfyUI.
"""
# Names are imported on first use (PEP 562), so ``python -m cfm_core`` reaches its Ctrl-C handling before torch
# loads (seconds) and ``--help`` stays fast; ``from cfm_core import boost`` works as with eager imports.
_EXPORTS = {
    "augment": ("DEFAULT_NOISE_STEP", "alpha_bar", "alpha_bars", "batch_stable_noise", "noise_augment"),
    "autoencoders": ("DiffusersVAE", "LatentScaling", "LatentSpec", "PixelSpace", "SpaceToDepth"),
    "checkpoint": ("convert_official", "load_model", "read_config", "save_model"),
    "errors": ("CFMError",),
    "model": ("CFMConfig", "CFMModel"),
    "path": ("OBJECTIVES", "CouplingPath", "training_loss"),
    "pipeline": ("UpscaleResult", "boost", "cascade", "upscale_image", "upscale_latent"),
    "solvers": ("SOLVERS", "SolveResult", "StepInfo", "expected_nfe", "integrate"),
    "tiling": ("TiledVelocity",),
    "unet": ("PRESETS", "UNetConfig", "VelocityUNet", "preset"),
    "upsample": ("latent_upsample", "pixel_space_upsample"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__version__ = "0.1.0"

__all__ = [
    "CFMConfig", "CFMError", "CFMModel", "CouplingPath", "DEFAULT_NOISE_STEP", "DiffusersVAE", "LatentScaling",
    "LatentSpec", "OBJECTIVES", "PRESETS", "PixelSpace", "SOLVERS", "SolveResult", "SpaceToDepth", "StepInfo",
    "TiledVelocity", "UNetConfig", "UpscaleResult", "VelocityUNet", "alpha_bar", "alpha_bars",
    "batch_stable_noise", "boost", "cascade", "convert_official", "expected_nfe", "integrate", "latent_upsample",
    "load_model", "noise_augment", "pixel_space_upsample", "preset", "read_config", "save_model",
    "training_loss", "upscale_image", "upscale_latent",
]


def __getattr__(name: str):
    import importlib

    if name in _MODULE_OF:
        value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    else:  # a submodule, e.g. ``cfm_core.pipeline`` after a bare ``import cfm_core``
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
