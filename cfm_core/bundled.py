"""The model that ships with cfm-boost, so the CLI and the ComfyUI nodes work out of the box.

It is a small pixel-space (space-to-depth) 2× model: no VAE needed, fast on a CPU. The file is trained by the
project (``python -m cfm_core train``) and lives at :data:`BUNDLED_MODEL_PATH`.
"""
from __future__ import annotations

import os

from .errors import CFMError

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
BUNDLED_MODEL_NAME = "cfm-pixel-2x.safetensors"
BUNDLED_MODEL_PATH = os.path.join(WEIGHTS_DIR, BUNDLED_MODEL_NAME)


def bundled_model_path() -> str:
    """Where the bundled model is (it may be absent in a development checkout; see :func:`require_bundled_model`)."""
    return BUNDLED_MODEL_PATH


def require_bundled_model() -> str:
    """The bundled model's path, or a CFMError saying how to get a model when the file is missing."""
    path = bundled_model_path()
    if not os.path.isfile(path):
        raise CFMError(f"the bundled model {path!r} is missing (a development checkout?); train one with "
                       "`python -m cfm_core train --help` and pass it with --model PATH")
    return path
