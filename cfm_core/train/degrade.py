"""Seeded degradations of the low-res input, for fine-tuning on real-world inputs (paper App. A.1).

The paper fine-tunes on low-res images degraded in the spirit of Real-ESRGAN's first-order model. The ops run in
that order, each only when configured, each drawing its parameters from the caller's ``torch.Generator``:

    blur    Gaussian blur, σ ~ U(blur) pixels (mirror borders)
    resize  down/up-scale by s ~ U(rescale) with a random kernel from ``resize``, then back to the input size with
            another random kernel (torch's ``F.interpolate``; bilinear/bicubic without antialiasing, like
            Real-ESRGAN, so the artefacts of naive resizers are part of the training distribution)
    noise   additive Gaussian noise, σ ~ U(noise) in [0, 1] units, then clipped to [0, 1]
    jpeg    JPEG round trip through PIL in memory, quality ~ U{jpeg} (integers, inclusive)

A spec string configures it, e.g. ``"blur=0.2-1.5,noise=0-0.03,jpeg=60-95,resize=random"``: ranges are ``lo-hi``
or one number; ``resize`` is ``random`` or kernels joined by ``|`` (``bicubic|area``); ``rescale`` (default
0.5-1 when resize is on) is the intermediate scale. ``""`` or ``"none"`` is the identity.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import CFMError

RESIZE_KERNELS = ("bilinear", "bicubic", "area", "nearest")
DEFAULT_RESCALE = (0.5, 1.0)
_KEYS = ("blur", "resize", "rescale", "noise", "jpeg")
Range = tuple[float, float]


@dataclass(frozen=True)
class Degradation:
    blur: Range | None = None  # Gaussian σ in low-res pixels
    resize: tuple[str, ...] | None = None  # kernels to choose from
    rescale: Range = DEFAULT_RESCALE  # intermediate scale factor of the resize op
    noise: Range | None = None  # additive Gaussian σ, image units
    jpeg: tuple[int, int] | None = None  # quality, inclusive

    def __post_init__(self) -> None:
        for name, lo, hi in (("blur", 0, 20), ("noise", 0, 1), ("rescale", 0.05, 4), ("jpeg", 1, 100)):
            value = getattr(self, name)
            if value is not None and not (lo <= value[0] <= value[1] <= hi):
                raise CFMError(f"degradation {name}={_fmt(value)} is out of range; use lo-hi with "
                               f"{lo} ≤ lo ≤ hi ≤ {hi}")
        if self.resize is not None:
            bad = [k for k in self.resize if k not in RESIZE_KERNELS]
            if bad or not self.resize:
                raise CFMError(f"degradation resize={'|'.join(self.resize)!r} is unknown; use 'random' or kernels "
                               f"from {'|'.join(RESIZE_KERNELS)}")

    @classmethod
    def parse(cls, spec: str | None) -> Degradation:
        """``"blur=0.2-1.5,noise=0-0.03,jpeg=60-95,resize=random"`` → Degradation; CFMError names a bad part."""
        fields: dict = {}
        spec = (spec or "").strip()
        if spec.lower() in ("", "none"):
            return cls()
        for part in spec.split(","):
            key, sep, value = (s.strip() for s in part.partition("="))
            if not sep or key not in _KEYS:
                raise CFMError(f"degradation spec part {part.strip()!r} is not KEY=VALUE with KEY one of "
                               f"{', '.join(_KEYS)} (e.g. 'blur=0.2-1.5,noise=0-0.03,jpeg=60-95,resize=random')")
            if key in fields:
                raise CFMError(f"degradation spec part {part.strip()!r} repeats {key!r}; give each op once")
            if key == "resize":
                fields[key] = RESIZE_KERNELS if value == "random" else tuple(value.split("|"))
            else:
                lo, hi = _parse_range(part.strip(), value)
                fields[key] = (int(lo), int(hi)) if key == "jpeg" else (lo, hi)
                if key == "jpeg" and (lo != int(lo) or hi != int(hi)):
                    raise CFMError(f"degradation spec part {part.strip()!r}: JPEG qualities are integers (e.g. 60-95)")
        if "rescale" in fields and "resize" not in fields:
            raise CFMError(f"degradation spec {spec!r} sets rescale without resize; add resize=random (or kernels)")
        return cls(**fields)

    def to_spec(self) -> str:
        """The spec string :meth:`parse` reads back (stored in checkpoints' training metadata)."""
        parts = []
        for key in _KEYS:
            value = getattr(self, key)
            if key == "rescale" and (self.resize is None or value == DEFAULT_RESCALE):
                continue
            if value is not None:
                parts.append(f"{key}={'|'.join(value) if key == 'resize' else _fmt(value)}")
        return ",".join(parts) or "none"

    @property
    def is_identity(self) -> bool:
        return self.blur is None and self.resize is None and self.noise is None and self.jpeg is None

    def apply(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Degrade a (3, H, W) or (B, 3, H, W) image in [0, 1]; same shape, device and dtype back.

        Each image of a batch draws its own parameters; the same generator state gives the same result.
        """
        if image.ndim == 4:
            return torch.stack([self.apply(img, generator) for img in image])
        if image.ndim != 3:
            raise CFMError(f"degradation input must be (C, H, W) or (B, C, H, W), got shape {tuple(image.shape)}")
        x = image.detach().float().cpu()
        if self.blur is not None:
            x = gaussian_blur(x, _uniform(self.blur, generator))
        if self.resize is not None:
            x = random_resize(x, _uniform(self.rescale, generator), self.resize, generator)
        if self.noise is not None:
            sigma = _uniform(self.noise, generator)
            x = (x + sigma * torch.randn(x.shape, generator=generator)).clamp(0, 1)
        if self.jpeg is not None:
            quality = int(torch.randint(self.jpeg[0], self.jpeg[1] + 1, (1,), generator=generator))
            x = jpeg_roundtrip(x, quality)
        return x.to(image.device, image.dtype)


def _fmt(value) -> str:
    lo, hi = value
    return f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"


def _parse_range(part: str, value: str) -> Range:
    pieces = value.split("-")
    try:
        numbers = [float(p) for p in pieces]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2) or not all(math.isfinite(n) for n in numbers):
        raise CFMError(f"degradation spec part {part!r} needs a number or a range lo-hi (e.g. blur=0.2-1.5)")
    lo, hi = numbers[0], numbers[-1]
    if lo > hi:
        raise CFMError(f"degradation spec part {part!r} has lo > hi; write the smaller number first")
    return lo, hi


def _uniform(bounds: Range, generator: torch.Generator) -> float:
    lo, hi = bounds
    return lo + (hi - lo) * float(torch.rand((), generator=generator))


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (C, H, W), radius ⌈3σ⌉ (capped by the image size), mirror borders."""
    if sigma <= 0:
        return image
    radius = min(math.ceil(3 * sigma), min(image.shape[-2:]) - 1)
    if radius < 1:
        return image
    t = torch.arange(-radius, radius + 1, dtype=image.dtype)
    kernel = torch.exp(-t ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    c, k = image.shape[0], kernel.numel()
    x = F.pad(image[None], (radius,) * 4, mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, kernel.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)[0]


def _resize(x: torch.Tensor, size: tuple[int, int], kernel: str) -> torch.Tensor:
    kwargs = {"align_corners": False} if kernel in ("bilinear", "bicubic") else {}
    return F.interpolate(x[None], size=size, mode=kernel, **kwargs)[0].clamp(0, 1)


def random_resize(image: torch.Tensor, scale: float, kernels: tuple[str, ...],
                  generator: torch.Generator) -> torch.Tensor:
    """Resize (C, H, W) by ``scale`` and back, each way with a kernel drawn from ``kernels``."""
    h, w = image.shape[-2:]
    picks = torch.randint(0, len(kernels), (2,), generator=generator).tolist()
    mid = (max(1, round(h * scale)), max(1, round(w * scale)))
    return _resize(_resize(image, mid, kernels[picks[0]]), (h, w), kernels[picks[1]])


def jpeg_roundtrip(image: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode (3, H, W) in [0, 1] as JPEG at ``quality`` in memory and decode it again (8-bit, 4:2:0)."""
    import numpy as np
    from PIL import Image

    from ..images import to_uint8

    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image), "RGB").save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as im:
        decoded = np.asarray(im.convert("RGB")).copy()
    return torch.from_numpy(decoded).permute(2, 0, 1).float() / 255
