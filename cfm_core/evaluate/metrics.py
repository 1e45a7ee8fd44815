"""Image-quality metrics in plain torch (any device, no downloaded weights): PSNR, SSIM and Karras' SWD.

PSNR  = 10·log10(R² / MSE), R the data range (1 for images in [0, 1]); +inf for identical images.

SSIM  (Wang et al. 2004) with an 11×11 Gaussian window, σ = 1.5, K1 = 0.01, K2 = 0.03, population (not sample)
      covariances, evaluated on the 'valid' region only (no padding), per RGB channel, then averaged:
          SSIM = (2·μa·μb + C1)(2·σab + C2) / ((μa² + μb² + C1)(σa² + σb² + C2)),  C1 = (K1·R)², C2 = (K2·R)².
      This equals ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
      use_sample_covariance=False, data_range=1, channel_axis=-1)``.

SWD   the sliced Wasserstein distance of Karras et al. 2018 ("Progressive Growing of GANs", their metric code):
      1. each image → Laplacian pyramid (5-tap binomial [1,4,6,4,1]/16 blur with mirror borders, ×2 decimation;
         band-pass levels, finest first, the last level is the low-pass residual), down to a side of
         ``min_resolution`` (16) or ``levels`` levels;
      2. at each level, ``patches_per_image`` (128) random 7×7×3 patches per image; their positions depend only on
         (seed, image index, level, level size), so a set compared with itself samples the same patches;
      3. each set's descriptors are normalised per colour channel by that set's own mean and std over all its
         patches (Karras' ``finalize_descriptors``), then flattened to 147-D vectors;
      4. sliced Wasserstein: ``repeats`` (4) × ``projections`` (128) random unit directions; project both sets,
         sort, mean |difference| (the 1-D W1 distance between the projected empirical distributions); the mean over
         directions and repeats is the level's distance.
      Reported ×1e3 like the paper's tables (``SWDResult.scale``); ``average`` is the mean over the levels.
      Identical inputs give exactly 0.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..augment import mix64
from ..errors import CFMError

SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03
SWD_SCALE = 1e3
_BINOMIAL5 = (1.0, 4.0, 6.0, 4.0, 1.0)


def _pair(a: torch.Tensor, b: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Both as (B, C, H, W) in a precise float type (float64 where the device has it)."""
    if a.shape != b.shape:
        raise CFMError(f"{name}: images differ in shape, {tuple(a.shape)} vs {tuple(b.shape)}; compare equal sizes")
    if a.ndim not in (3, 4):
        raise CFMError(f"{name}: images must be (C, H, W) or (B, C, H, W), got shape {tuple(a.shape)}")
    if a.ndim == 3:
        a, b = a[None], b[None]
    dtype = torch.float32 if a.device.type == "mps" else torch.float64
    return a.to(dtype), b.to(a.device, dtype)


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB; for a batch, the mean of the per-image values (inf if any is identical)."""
    a, b = _pair(a, b, "psnr")
    mse = (a - b).pow(2).flatten(1).mean(1)
    values = [math.inf if m == 0 else 10 * math.log10(data_range ** 2 / m) for m in mse.tolist()]
    return sum(values) / len(values)


def _gaussian_1d(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    x = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def _filter_valid(x: torch.Tensor, kernel_1d: torch.Tensor) -> torch.Tensor:
    """Separable filtering of (B, C, H, W) without padding (the 'valid' region), as sums of shifted views."""
    k = kernel_1d.numel()
    h, w = x.shape[-2] - k + 1, x.shape[-1] - k + 1
    taps = kernel_1d.tolist()
    x = sum(c * x[..., :, i:i + w] for i, c in enumerate(taps))
    return sum(c * x[..., i:i + h, :] for i, c in enumerate(taps))


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> float:
    """Mean SSIM over channels (and over images for a batch); 1.0 for identical images."""
    a, b = _pair(a, b, "ssim")
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise CFMError(f"ssim: images of {a.shape[-1]}×{a.shape[-2]} are smaller than the {SSIM_WINDOW}×"
                       f"{SSIM_WINDOW} window; compare larger crops")
    g = _gaussian_1d(SSIM_WINDOW, SSIM_SIGMA, a)
    # one filtering pass over the five local moments
    mu_a, mu_b, aa, bb, ab = _filter_valid(torch.stack([a, b, a * a, b * b, a * b]), g)
    var_a, var_b, cov = aa - mu_a ** 2, bb - mu_b ** 2, ab - mu_a * mu_b
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


# ------------------------------------------------------------------------------------------------ sliced Wasserstein

@dataclass(frozen=True)
class SWDResult:
    levels: list[float]  # per pyramid level, finest first, ×scale
    average: float  # mean over levels, ×scale
    resolutions: list[int] = field(default_factory=list)  # shorter side of the first image at each level
    scale: float = SWD_SCALE
    patches: int = 0  # descriptors per set and level


def _blur5(x: torch.Tensor) -> torch.Tensor:
    """Separable [1,4,6,4,1]/16 filter of (B, C, H, W) with mirror borders (scipy 'mirror' = torch 'reflect').

    Written as weighted sums of shifted views: much faster on the CPU than a depthwise conv2d.
    """
    if min(x.shape[-2:]) < 3:
        raise CFMError(f"swd: a pyramid level of {x.shape[-1]}×{x.shape[-2]} is too small to filter; use fewer levels")
    h, w = x.shape[-2:]
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    x = sum(c / 16 * x[..., :, i:i + w] for i, c in enumerate(_BINOMIAL5))
    return sum(c / 16 * x[..., i:i + h, :] for i, c in enumerate(_BINOMIAL5))


def pyramid_down(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, C, ⌈H/2⌉, ⌈W/2⌉): blur5 then keep every other pixel."""
    return _blur5(x)[..., ::2, ::2]


def pyramid_up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, h, w) → (B, C, *size): zero insertion, blur5 × 4 (the kernel's gain for 1 pixel in 4), crop."""
    up = torch.zeros(*x.shape[:2], x.shape[2] * 2, x.shape[3] * 2, dtype=x.dtype, device=x.device)
    up[..., ::2, ::2] = x
    return (_blur5(up) * 4)[..., :size[0], :size[1]]


def laplacian_pyramid(image: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """(C, H, W) → ``levels`` (C, h, w) tensors, finest first: band-pass G_i − up(G_{i+1}), then G_{levels−1}.

    Summing back (x = G_last; x = band + up(x), coarse to fine) reconstructs the image exactly.
    """
    gaussians = [image[None].float()]
    for _ in range(levels - 1):
        gaussians.append(pyramid_down(gaussians[-1]))
    bands = [fine - pyramid_up(coarse, fine.shape[-2:]) for fine, coarse in itertools.pairwise(gaussians)]
    return [level[0] for level in bands + gaussians[-1:]]


def pyramid_levels(images: list[torch.Tensor], min_resolution: int = 16) -> int:
    """How many levels keep every image's shorter side ≥ ``min_resolution`` (Karras: 16 px)."""
    side = min(min(img.shape[-2:]) for img in images)
    if side < min_resolution:
        raise CFMError(f"swd: images of shorter side {side} px are smaller than min_resolution={min_resolution}; "
                       "use larger images or a smaller min_resolution")
    levels = 1
    while math.ceil(side / 2 ** levels) >= min_resolution:
        levels += 1
    return levels


def image_descriptors(image: torch.Tensor, index: int, levels: int, *, seed: int = 0, patch_size: int = 7,
                      patches_per_image: int = 128) -> list[torch.Tensor]:
    """Raw 7×7 patches of one image per pyramid level, as (patches, C, 7, 7) float32 on the CPU.

    Positions come from a generator seeded by (seed, index, level, level height, level width), so the same index in
    two sets of equally sized images samples the same places.
    """
    if image.ndim != 3:
        raise CFMError(f"swd: each image must be (C, H, W), got shape {tuple(image.shape)}")
    out = []
    for level, band in enumerate(laplacian_pyramid(image, levels)):
        _, h, w = band.shape
        if min(h, w) < patch_size:
            raise CFMError(f"swd: pyramid level {level} is {w}×{h}, smaller than the {patch_size}-px patch; "
                           "use fewer levels")
        gen = torch.Generator().manual_seed(mix64(seed, index, level, h, w))
        ys = torch.randint(0, h - patch_size + 1, (patches_per_image,), generator=gen).to(band.device)
        xs = torch.randint(0, w - patch_size + 1, (patches_per_image,), generator=gen).to(band.device)
        offsets = torch.arange(patch_size, device=band.device)
        rows, cols = ys[:, None] + offsets, xs[:, None] + offsets  # (P, k)
        patches = band[:, rows[:, :, None], cols[:, None, :]]  # (C, P, k, k)
        out.append(patches.permute(1, 0, 2, 3).float().cpu())
    return out


def _normalised(descriptors: torch.Tensor) -> torch.Tensor:
    """Per-channel standardisation over the whole set (Karras' finalize_descriptors), flattened to (N, C·k·k)."""
    d = descriptors.double()
    d = d - d.mean(dim=(0, 2, 3), keepdim=True)
    d = d / d.std(dim=(0, 2, 3), unbiased=False, keepdim=True).clamp_min(1e-12)
    return d.flatten(1)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, *, projections: int = 128, repeats: int = 4,
                       seed: int = 0) -> float:
    """Mean over ``repeats``×``projections`` random unit directions of the 1-D W1 distance of (N, D) sets a and b."""
    if a.shape != b.shape:
        raise CFMError(f"swd: descriptor sets differ in shape {tuple(a.shape)} vs {tuple(b.shape)}; "
                       "compare the same number of images")
    gen = torch.Generator().manual_seed(mix64(seed, a.shape[1]))
    distances = []
    for _ in range(repeats):
        dirs = torch.randn(a.shape[1], projections, generator=gen, dtype=torch.float64)
        dirs = dirs / dirs.norm(dim=0, keepdim=True)
        # (projections, N): sorting along the contiguous last dim is much faster than along dim 0
        proj_a, _ = torch.sort(dirs.T @ a.T, dim=-1)
        proj_b, _ = torch.sort(dirs.T @ b.T, dim=-1)
        distances.append(float((proj_a - proj_b).abs().mean()))
    return sum(distances) / len(distances)


def swd_from_descriptors(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]], *, projections: int = 128,
                         repeats: int = 4, seed: int = 0, resolutions: list[int] | None = None) -> SWDResult:
    """SWD from per-image descriptor lists (``image_descriptors`` of each image), e.g. with real ones cached."""
    if not real or len(real) != len(fake):
        raise CFMError(f"swd: need equally many (≥ 1) real and fake images, got {len(real)} and {len(fake)}")
    levels = len(real[0])
    per_level = []
    for level in range(levels):
        a = _normalised(torch.cat([d[level] for d in real]))
        b = _normalised(torch.cat([d[level] for d in fake]))
        per_level.append(SWD_SCALE * sliced_wasserstein(a, b, projections=projections, repeats=repeats,
                                                        seed=mix64(seed, level)))
    return SWDResult(levels=per_level, average=sum(per_level) / levels, resolutions=list(resolutions or []),
                     patches=sum(d[0].shape[0] for d in real))


def swd(real_images: list[torch.Tensor], fake_images: list[torch.Tensor], *, levels: int | None = None,
        min_resolution: int = 16, patches_per_image: int = 128, projections: int = 128, repeats: int = 4,
        seed: int = 0) -> SWDResult:
    """Karras' Laplacian-pyramid sliced Wasserstein distance between two lists of (3, H, W) images (×1e3)."""
    if len(real_images) != len(fake_images) or not real_images:
        raise CFMError(f"swd: need equally many (≥ 1) real and fake images, got {len(real_images)} and "
                       f"{len(fake_images)}")
    levels = levels or pyramid_levels(list(real_images) + list(fake_images), min_resolution)
    kwargs = {"levels": levels, "seed": seed, "patches_per_image": patches_per_image}
    real = [image_descriptors(img, i, **kwargs) for i, img in enumerate(real_images)]
    fake = [image_descriptors(img, i, **kwargs) for i, img in enumerate(fake_images)]
    side = min(real_images[0].shape[-2:])
    return swd_from_descriptors(real, fake, projections=projections, repeats=repeats, seed=seed,
                                resolutions=[math.ceil(side / 2 ** i) for i in range(levels)])
