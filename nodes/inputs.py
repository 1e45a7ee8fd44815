"""Widget specs that several nodes share, in one place (so a range or tooltip cannot drift between nodes).

Each spec is the ``(type, options)`` tuple ComfyUI's ``INPUT_TYPES`` takes; the ``*_INPUTS`` dicts are spread into
``INPUT_TYPES`` in the order users see (do not reorder: saved workflows store widget values by position). Ranges
are what the nodes accept: a widget never offers a value its node refuses.
"""
from __future__ import annotations

from cfm_core import DEFAULT_NOISE_STEP

from .common import MAX_SEED
from .solve import NFE_HELP, SOLVER_CHOICES
from .vae_space import DEFAULT_TILE_PX, TILING_MODES

NOISE_STEP_INPUT = ("INT", {
    "default": -1, "min": -1, "max": 999,
    "tooltip": "Noise-augmentation step of the start point (0 = none, 999 = pure noise). -1 = the model's own "
               f"({DEFAULT_NOISE_STEP} in the paper and without a model). More noise lets the model invent more "
               "detail. A detail-adaptive model (its info says so) uses this step where the image has detail and "
               "less where it is flat."})
SEED_INPUT = ("INT", {
    "default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
    "tooltip": "Seed of the augmentation noise. Batch-stable: an image gets the same noise alone or in a batch."})

SOLVER_INPUTS = {
    "solver": (SOLVER_CHOICES, {
        "default": "default",
        "tooltip": "ODE solver. default = the model's own (usually euler). " + NFE_HELP}),
    "steps": ("INT", {
        "default": 0, "min": 0, "max": 1000,
        "tooltip": "Integration steps; 0 = the model's default. " + NFE_HELP}),
    "seed": SEED_INPUT,
}
TILE_INPUTS = {
    "tile": ("INT", {
        "default": 0, "min": 0, "max": 1024, "step": 8,
        "tooltip": "Velocity tile size in latent pixels of the CFM model (8 px each for SD latents, 2 px for the "
                   "bundled pixel model). 0 = whole latent, and automatic tiles (halving) only if it runs out of "
                   "memory. Tiles are blended at every step, so no seams."}),
    "overlap": ("INT", {
        "default": 8, "min": 0, "max": 256, "step": 1,
        "tooltip": "Overlap of neighbouring tiles in latent pixels (at most half the tile)."}),
}
VAE_TILING_INPUTS = {
    "vae_tiling": (list(TILING_MODES), {
        "default": "auto",
        "tooltip": "Decode/encode the image in tiles. auto: only for images above 4 megapixels, or when the plain "
                   "VAE call runs out of memory. Tiles cost ~3× the time but bound the VRAM."}),
    "vae_tile_size": ("INT", {
        "default": DEFAULT_TILE_PX, "min": 64, "max": 4096, "step": 64,
        "tooltip": "Tile size in pixels for tiled VAE decode/encode (like VAE Encode (Tiled)); the overlap is 64 px "
                   "or a quarter of the tile."}),
}


def with_tooltip(spec: tuple, extra: str) -> tuple:
    """``spec`` with ``extra`` appended to its tooltip (a node-specific note on a shared widget)."""
    kind, options = spec
    return kind, {**options, "tooltip": f"{options['tooltip']} {extra}"}
