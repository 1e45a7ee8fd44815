"""Contrast normalisation for pixel-space models: flat images get detail in proportion to their contrast.

A network trained with an MSE loss on natural crops learns the detail of *typical* contrast: a crop faded to 10 %
contributes 1 % of the loss, so the network never learns to scale what it adds down with the contrast (its group
norms make it nearly contrast-invariant besides), and on a flat image (scikit-image's moon or cell) it adds the
texture of a contrasty one and loses to bicubic. For a model whose latent is pixels (``pixels``, ``space_to_depth``)
the fix is exact algebra around the network: per sample b, with μ_bc the channel means of z_up and

    σ_b = sqrt(mean_{c,h,w} (z_up − μ)²),    g_b = clip(σ_ref / σ_b, 1, g_max),

the solve runs on z' = μ + g·(z − μ) (start point and context alike) and its result is mapped back,
x1 = μ + (x1' − μ) / g. An image at or above the reference contrast σ_ref (``CFMConfig.contrast_reference``: the
median contrast of the model's training crops, in model units) is untouched (g = 1, bit for bit); a flatter one is
seen at the reference contrast, and what the network adds is scaled down by the same factor. ``g_max`` bounds the
gain so that near-constant images (and their 8-bit steps) are not blown up.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .solvers import StepInfo

CONTRAST_GAIN_MAX = 8.0


def contrast(z: torch.Tensor) -> torch.Tensor:
    """σ per sample of (B, C, H, W): sqrt(mean_{c,h,w} (z − μ_c)²), μ_c the channel means (the σ_b above)."""
    z = z.float()
    return (z - z.mean((2, 3), keepdim=True)).pow(2).mean((1, 2, 3)).sqrt()


@dataclass(frozen=True)
class ContrastGain:
    """The per-sample affine map z ↦ μ + g·(z − μ) and its inverse."""

    mean: torch.Tensor  # (B, C, 1, 1)
    gain: torch.Tensor  # (B, 1, 1, 1), in [1, max_gain]

    @classmethod
    def measure(cls, z_up: torch.Tensor, reference: float, max_gain: float = CONTRAST_GAIN_MAX) -> ContrastGain:
        """The map that brings each sample of ``z_up`` (B, C, H, W) up to contrast ``reference`` (never down)."""
        mean = z_up.float().mean((2, 3), keepdim=True)
        gain = (reference / contrast(z_up).clamp_min(1e-12)).clamp(1.0, max_gain)
        return cls(mean, gain.reshape(-1, 1, 1, 1))

    @property
    def identity(self) -> bool:
        return bool((self.gain == 1).all())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z if self.identity else self.mean + self.gain * (z - self.mean)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z if self.identity else self.mean + (z - self.mean) / self.gain

    def step_info(self, info: StepInfo) -> StepInfo:
        """A solver step reported in the caller's units: x and the latest evaluation (x_t, t, v) mapped back, so
        that ``x1_estimate`` (previews) is the estimate of the returned image."""
        if self.identity:
            return info
        evaluation = info.evaluation
        if evaluation is not None:
            x_t, t, v = evaluation
            evaluation = (self.inverse(x_t), t, v / self.gain)
        return replace(info, x=self.inverse(info.x), evaluation=evaluation)
