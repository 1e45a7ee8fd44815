"""The ComfyUI nodes of cfm-boost (V1 node API).

Why the V1 API (``NODE_CLASS_MAPPINGS`` + ``INPUT_TYPES``) and not V3 (``comfy_api.latest``): V1 is read by every
ComfyUI version, old and new; ``NODE_CLASS_MAPPINGS`` works everywhere (and wins over ``comfy_entrypoint`` when
both exist); and it does not depend on ``comfy_api.latest``, which its own docs call still changing.

This package is imported only inside ComfyUI (the pack's top-level ``__init__`` checks first). It makes the
engine, ``cfm_core/`` beside it in the pack folder, importable as the top-level ``cfm_core`` — whatever the pack
folder is called (``cfm-boost``, ``ComfyUI-CFM``…) — without leaving the pack folder on ``sys.path``.
"""
from __future__ import annotations

import os
import sys

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _import_engine() -> None:
    if "cfm_core" in sys.modules:
        return
    sys.path.insert(0, PACK_ROOT)
    try:
        import cfm_core  # noqa: F401  (its submodules resolve through the package from now on)
    finally:
        sys.path.remove(PACK_ROOT)


_import_engine()

from .boost import CFMBoost  # noqa: E402
from .loader import CFMLoader, register_model_folder  # noqa: E402
from .noise_augment import NoiseAugment  # noqa: E402
from .pixel_upsample import PixelSpaceUpsample  # noqa: E402
from .upscale_image import CFMUpscaleImage  # noqa: E402
from .upscale_latent import CFMUpscaleLatent  # noqa: E402

register_model_folder()

# The node id is the class name (saved workflows refer to it: never rename a class); the menu shows DISPLAY_NAME.
NODES = (CFMLoader, PixelSpaceUpsample, NoiseAugment, CFMUpscaleLatent, CFMBoost, CFMUpscaleImage)
NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in NODES}
NODE_DISPLAY_NAME_MAPPINGS = {cls.__name__: cls.DISPLAY_NAME for cls in NODES}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
