"""CFMLoader: pick a CFM model from ``ComfyUI/models/cfm`` (or the bundled one) and load it once.

Models are self-describing safetensors files (config in the metadata), so the loader needs no architecture
options. Loaded models are cached by (path, mtime, size, dtype): re-running a graph, or two loaders pointing at
the same file, reuse one copy; editing the file on disk reloads it.
"""
from __future__ import annotations

import os
from collections import OrderedDict

import comfy.model_management as mm
import folder_paths
import torch

from cfm_core import CFMError
from cfm_core.bundled import BUNDLED_MODEL_PATH
from cfm_core.checkpoint import load_model, read_config, runs_channels_last
from cfm_core.devices import DTYPES

from .common import CATEGORY, LOG
from .model_handle import CFMModelHandle, wrap_model

FOLDER_KEY = "cfm"
BUNDLED_ENTRY = "(bundled) cfm-pixel-2x"
CACHE_SIZE = 4
_cache: OrderedDict[tuple, CFMModelHandle] = OrderedDict()


def register_model_folder() -> None:
    """``ComfyUI/models/cfm`` (plus any ``cfm:`` dirs from extra_model_paths.yaml), listing .safetensors only."""
    folder_paths.add_model_folder_path(FOLDER_KEY, os.path.join(folder_paths.models_dir, FOLDER_KEY))
    # A new key starts with an empty extension set, which means "list every file"; pickles are refused anyway.
    folder_paths.folder_names_and_paths[FOLDER_KEY][1].update({".safetensors"})


def model_choices() -> list[str]:
    return [BUNDLED_ENTRY] + folder_paths.get_filename_list(FOLDER_KEY)


def resolve_path(model_name: str) -> str:
    if model_name == BUNDLED_ENTRY:
        if not os.path.isfile(BUNDLED_MODEL_PATH):
            raise CFMError(f"the bundled model {BUNDLED_MODEL_PATH!r} is missing (a development checkout?); "
                           f"put a CFM .safetensors file into ComfyUI/models/{FOLDER_KEY} and pick it instead")
        return BUNDLED_MODEL_PATH
    path = folder_paths.get_full_path(FOLDER_KEY, model_name)
    if path is None:
        raise CFMError(f"CFM model {model_name!r} was not found in models/{FOLDER_KEY}; refresh the node list "
                       "(press R) or copy the file there")
    return path


def resolve_dtype(choice: str, parameters: int) -> torch.dtype:
    """``auto``: ComfyUI's choice for the device — bf16/fp16 on GPUs that run them well, fp32 on CPU.

    bf16 is preferred over fp16: CFM models are trained in bf16 mixed precision and bf16 has fp32's range.
    """
    if choice in DTYPES:
        return DTYPES[choice]
    if choice != "auto":
        raise CFMError(f"dtype={choice!r} is unknown; use auto, fp32, fp16 or bf16")
    dtype = mm.unet_dtype(device=mm.get_torch_device(), model_params=parameters,
                          supported_dtypes=[torch.bfloat16, torch.float16, torch.float32])
    return dtype if dtype in DTYPES.values() else torch.float32  # e.g. an fp8 --unet flag: not for this model


def load_handle(model_name: str, dtype_choice: str) -> CFMModelHandle:
    path = resolve_path(model_name)
    stat = os.stat(path)
    config = read_config(path)
    n_params = sum(p.numel() for p in _shapes(config))
    dtype = resolve_dtype(dtype_choice, n_params)
    key = (os.path.realpath(path), stat.st_mtime_ns, stat.st_size, str(dtype))
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    try:
        # the layout for the device it will run on, as the CLI loads it there
        model = load_model(path, device=mm.unet_offload_device(), dtype=dtype,
                           channels_last=runs_channels_last(read_config(path), mm.get_torch_device()))
    except CFMError:
        raise
    except Exception as exc:  # e.g. an I/O error half-way: still one line in ComfyUI's error panel
        raise CFMError(f"could not load CFM model {model_name!r}: {type(exc).__name__}: {exc}") from None
    handle = wrap_model(model, name=os.path.splitext(os.path.basename(model_name))[0], path=path)
    _cache[key] = handle
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    LOG.info("CFM Boost: loaded %s", handle.summary())
    return handle


def _shapes(config) -> list[torch.Tensor]:
    """Parameter tensors of the architecture on the meta device (a count without allocating memory)."""
    from cfm_core import CFMModel

    with torch.device("meta"):
        return list(CFMModel(config).parameters())


class CFMLoader:
    DESCRIPTION = ("Loads a Coupling Flow Matching upscaler (CompVis, 'Boosting Latent Diffusion with Flow "
                   "Matching') from ComfyUI/models/cfm, or the small pixel-space 2× model bundled with the pack. "
                   "Models are .safetensors files that describe themselves (architecture, latent space, factor), "
                   "so there is nothing else to set. The model moves to the GPU only while a CFM node runs.")
    DISPLAY_NAME = "CFM Loader"  # what the node menu and the node's title show
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("CFM_MODEL", "STRING")
    RETURN_NAMES = ("cfm_model", "info")
    OUTPUT_TOOLTIPS = ("The loaded CFM upscaler, for CFMUpscaleLatent, CFMBoost, CFMUpscaleImage and NoiseAugment.",
                       "One line describing the model: factor, latent space, size, dtype, default solver.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (model_choices(), {
                "tooltip": f"A CFM model file from ComfyUI/models/{FOLDER_KEY} (.safetensors), or the bundled "
                           "pixel-space 2× model. Latent models only work with the VAE they were trained for."}),
            "dtype": (["auto", "fp32", "fp16", "bf16"], {
                "default": "auto",
                "tooltip": "Weight precision. auto: bf16/fp16 on GPUs that support them, fp32 on CPU. Pick fp32 "
                           "if the output has NaNs or artefacts."}),
        }}

    @classmethod
    def IS_CHANGED(cls, model_name, dtype):
        try:
            stat = os.stat(resolve_path(model_name))
        except (CFMError, OSError):
            return "missing"
        return f"{stat.st_mtime_ns}-{stat.st_size}-{dtype}"

    def load(self, model_name: str, dtype: str = "auto"):
        handle = load_handle(model_name, dtype)
        return (handle, handle.summary())
