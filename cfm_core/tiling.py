"""Tiled velocity: evaluate the network on overlapping tiles and blend them at *every* ODE step.

Blending the velocity (not whole per-tile solves) keeps the trajectories of neighbouring tiles coupled, so no
seams appear, while memory is bounded by one tile. Weights ramp linearly across each overlap (a partition of
unity after normalisation).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from .errors import CFMError

Velocity3 = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering [0, size) with tiles of ``tile`` overlapping by at least ``overlap``."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    n = -(-(size - overlap) // stride)
    last = size - tile
    return sorted({round(i * last / (n - 1)) for i in range(n)})


def _ramp(length: int, overlap: int, at_start: bool, at_end: bool, device) -> torch.Tensor:
    w = torch.ones(length, device=device)
    if overlap > 0:
        ramp = (torch.arange(overlap, device=device, dtype=torch.float32) + 0.5) / overlap
        if not at_start:
            w[:overlap] = ramp
        if not at_end:
            w[-overlap:] = ramp.flip(0)
    return w


class TiledVelocity:
    """Wrap ``velocity(x_t, t, z_up)`` so latents larger than ``tile`` are evaluated tile by tile."""

    def __init__(self, velocity: Velocity3, tile: int, overlap: int = 8, stride: int = 1,
                 interrupt: Callable[[], None] | None = None):
        if tile < 1 or overlap < 0 or overlap >= tile:
            raise CFMError(f"tile={tile}, overlap={overlap}: need tile ≥ 1 and 0 ≤ overlap < tile")
        self.velocity, self.interrupt = velocity, interrupt
        self.tile = max(stride, tile - tile % stride)  # whole network strides avoid padding inside tiles
        # rounding the tile down may leave it no larger than the overlap: then overlap half a tile
        self.overlap = overlap if overlap < self.tile else self.tile // 2

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, z_up: torch.Tensor) -> torch.Tensor:
        h, w = x_t.shape[-2:]
        if h <= self.tile and w <= self.tile:
            return self.velocity(x_t, t, z_up)
        out = torch.zeros_like(x_t, dtype=torch.float32)
        weight = torch.zeros((1, 1, h, w), device=x_t.device)
        th, tw = min(self.tile, h), min(self.tile, w)
        ys, xs = tile_starts(h, th, self.overlap), tile_starts(w, tw, self.overlap)
        for y in ys:
            wy = _ramp(th, self.overlap, y == 0, y + th == h, x_t.device)
            for x in xs:
                if self.interrupt is not None:
                    self.interrupt()
                wx = _ramp(tw, self.overlap, x == 0, x + tw == w, x_t.device)
                win = (wy[:, None] * wx[None, :])[None, None]
                sl = (..., slice(y, y + th), slice(x, x + tw))
                out[sl] += self.velocity(x_t[sl], t, z_up[sl]).float() * win
                weight[sl] += win
        return out / weight
