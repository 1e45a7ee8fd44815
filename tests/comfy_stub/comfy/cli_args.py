"""Stand-in for ``comfy.cli_args``: the parsed command-line ``args`` the pack reads (the preview settings), with
ComfyUI's defaults. Tests change ``args.preview_method`` as a user would with ``--preview-method``."""
from __future__ import annotations

import enum
from types import SimpleNamespace


class LatentPreviewMethod(enum.Enum):
    NoPreviews = "none"
    Auto = "auto"
    Latent2RGB = "latent2rgb"
    TAESD = "taesd"


args = SimpleNamespace(preview_method=LatentPreviewMethod.NoPreviews, preview_size=512, cpu=True)
