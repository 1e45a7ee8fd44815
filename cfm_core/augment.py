"""Noise augmentation of the coupling's start point x0 (official code: cosine log-SNR schedule, step 400).

    logsnr(τ) = −2·log(tan(π·τ/2) + 1e-5),   ᾱ(τ) = sigmoid(logsnr(τ)),   τ = step / (num_steps − 1)
    x0 = √ᾱ · z_up + √(1 − ᾱ) · ε

Only x0 is noised; the network's context stays the clean z_up. The same augmentation runs at inference.

Detail-adaptive noise (inference only, ``CFMConfig.noise_detail``): the step becomes a map that falls off where the
low-res image has little detail, so flat regions are not given texture that is not there,

    D = sqrt(box_w(mean_c (z − box_3(z))²)),   step(x) = noise_step · clip(D(x) / D_ref, 0, 1),

D the local RMS of z_up's high-pass over a w × w window (w = ``DETAIL_WINDOW``), measured on the caller's z_up
(before any contrast normalisation, so it is the image's own detail), and ᾱ(x) the same schedule at the
fractional step(x).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .errors import CFMError

NUM_NOISE_STEPS = 1000
DEFAULT_NOISE_STEP = 400
DETAIL_WINDOW = 9


def alpha_bars(num_steps: int = NUM_NOISE_STEPS) -> torch.Tensor:
    """ᾱ for every step of the cosine log-SNR schedule (float64, length ``num_steps``)."""
    tau = torch.linspace(0, 1, num_steps, dtype=torch.float64)
    logsnr = -2 * torch.log(torch.tan(math.pi * tau / 2) + 1e-5)
    return torch.sigmoid(logsnr)


def alpha_bar_map(steps: torch.Tensor, num_steps: int = NUM_NOISE_STEPS) -> torch.Tensor:
    """ᾱ at fractional steps (a tensor of any shape, float64): the schedule of :func:`alpha_bars` between its steps."""
    tau = steps.double().clamp(0, num_steps - 1) / (num_steps - 1)
    return torch.sigmoid(-2 * torch.log(torch.tan(math.pi * tau / 2) + 1e-5))


def local_detail(z: torch.Tensor, window: int = DETAIL_WINDOW) -> torch.Tensor:
    """D of (B, C, H, W) as (B, 1, H, W): sqrt of the w × w mean of the channel-mean squared high-pass z − box_3(z)."""
    z = z.float()
    high = z - F.avg_pool2d(F.pad(z, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    r = window // 2
    energy = F.pad(high.pow(2).mean(1, keepdim=True), (r, r, r, r), mode="replicate")
    return F.avg_pool2d(energy, window, stride=1).sqrt()


def detail_noise_steps(z_up: torch.Tensor, noise_step: int, reference: float) -> torch.Tensor:
    """The step map noise_step · clip(D / reference, 0, 1) of ``z_up`` (B, 1, H, W), float."""
    alpha_bar(noise_step)
    return noise_step * (local_detail(z_up) / reference).clamp(0, 1)


def alpha_bar(step: int, num_steps: int = NUM_NOISE_STEPS) -> float:
    """ᾱ at integer ``step``; step 400 of 1000 gives 0.6539040."""
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step < num_steps:
        raise CFMError(f"noise_step={step!r} must be an integer in [0, {num_steps - 1}] (the paper uses 400)")
    return float(alpha_bars(num_steps)[step])


def mix64(*values: int) -> int:
    """SplitMix64 over the values: a well-spread 63-bit seed from (seed, index) pairs."""
    state = 0x9E3779B97F4A7C15
    for v in values:
        state = (state ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        state = (state ^ (state >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 31
    return state & 0x7FFFFFFFFFFFFFFF


def batch_stable_noise(shape: tuple[int, ...], seed: int, batch_indices: list[int] | None = None,
                       device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                       stream: int = 0) -> torch.Tensor:
    """Standard normal noise whose element i depends only on (seed, batch_indices[i], stream).

    Generated on the CPU in float32 so the same seed gives the same noise on every device.
    """
    indices = list(range(shape[0])) if batch_indices is None else list(batch_indices)
    if len(indices) != shape[0]:
        raise CFMError(f"batch_indices has {len(indices)} entries for a batch of {shape[0]}")
    parts = []
    for index in indices:
        gen = torch.Generator().manual_seed(mix64(int(seed), int(index), int(stream)))
        parts.append(torch.randn(shape[1:], generator=gen, dtype=torch.float32))
    return torch.stack(parts).to(device=device, dtype=dtype)


def noise_augment(z_up: torch.Tensor, noise_step: int | torch.Tensor = DEFAULT_NOISE_STEP, *,
                  seed: int | None = None, noise: torch.Tensor | None = None,
                  generator: torch.Generator | None = None, batch_indices: list[int] | None = None) -> torch.Tensor:
    """x0 = √ᾱ·z_up + √(1−ᾱ)·ε. ε comes from ``noise``, else batch-stable from ``seed``, else ``generator``.
    ``noise_step`` is an integer or a map of fractional steps broadcastable to z_up (:func:`detail_noise_steps`)."""
    if noise is None:
        noise = gaussian_like(z_up, seed=seed, generator=generator, batch_indices=batch_indices)
    if isinstance(noise_step, torch.Tensor):
        ab = alpha_bar_map(noise_step)
        return (ab.sqrt().to(z_up) * z_up + (1 - ab).sqrt().to(z_up) * noise).to(z_up.dtype)
    ab = alpha_bar(noise_step)
    return math.sqrt(ab) * z_up + math.sqrt(1 - ab) * noise


def gaussian_like(like: torch.Tensor, *, seed: int | None = None, generator: torch.Generator | None = None,
                  batch_indices: list[int] | None = None) -> torch.Tensor:
    """ε ~ N(0, I) shaped like ``like``: batch-stable from ``seed`` if given, else drawn from ``generator``."""
    if seed is not None:
        return batch_stable_noise(tuple(like.shape), seed, batch_indices, like.device, like.dtype)
    device = generator.device if generator is not None else "cpu"
    noise = torch.randn(like.shape, generator=generator, dtype=torch.float32, device=device)
    return noise.to(like.device, like.dtype)
