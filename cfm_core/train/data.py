"""Training pairs from a folder of images, made as in the paper.

A sample is a random square crop (and random horizontal flip) of a high-res image, with probability
``PairSpec.low_contrast`` faded towards its mean colour by a factor drawn log-uniformly from ``LOW_CONTRAST_RANGE``
(so the network sees flat, low-contrast content and learns to add less detail there), then with probability
``PairSpec.grain`` given Gaussian grain of a standard deviation drawn log-uniformly from ``GRAIN_RANGE`` (the sensor
noise of a photo, unpredictable from the low-res crop, so the network learns not to sharpen it), and with
probability ``PairSpec.soft`` blurred by a Gaussian of σ drawn log-uniformly from ``SOFT_RANGE`` pixels (an image with
no detail at its own resolution, optically soft or already upscaled, so the network learns to add none); its
low-res partner is the crop downsampled by the model's factor with a kernel drawn per crop from
``PairSpec.downsample``. The model's start point comes from the *bilinear upsample of that low-res crop* encoded into
the latent space (PSU without the decode, as the official training does), the target from the crop itself, both
through the posterior mean.

Every sample is a pure function of (seed, global sample index), so the data order does not depend on how many
processes share a batch, and a resumed run sees exactly the batches it would have seen.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from functools import lru_cache

import torch

from ..augment import mix64
from ..autoencoders import LatentSpace
from ..checkpoint import atomic_write
from ..errors import CFMError
from ..images import MAX_PIXELS, list_images, load_image
from ..upsample import make_low_res, resize_pixels
from .degrade import gaussian_blur


@dataclass(frozen=True)
class PairSpec:
    crop: int = 256
    factor: int = 2
    downsample: tuple[str, ...] = ("bilinear-aa",)  # kernels; each crop draws one (see upsample.DOWNSAMPLE_KERNELS)
    low_contrast: float = 0.0  # probability that a crop's contrast is scaled down (see LOW_CONTRAST_RANGE)
    grain: float = 0.0  # probability that a crop gets Gaussian grain (see GRAIN_RANGE)
    soft: float = 0.0  # probability that a crop is blurred (see SOFT_RANGE)

    def __post_init__(self) -> None:
        for flag, p in (("--low-contrast", self.low_contrast), ("--grain", self.grain), ("--soft", self.soft)):
            if not 0.0 <= p <= 1.0:
                raise CFMError(f"{flag} {p} is not a probability; use a value in [0, 1]")


LOW_CONTRAST_RANGE = (0.02, 1.0)  # contrast factor s of a faded crop, log-uniform: mean + s·(crop − mean)
GRAIN_RANGE = (0.5 / 255, 12 / 255)  # grain σ in [0, 1] pixel units (0.5–12 grey levels of 255), log-uniform
SOFT_RANGE = (0.4, 3.0)  # Gaussian blur σ of a soft crop, in high-res pixels, log-uniform


def scan_images(folder: str | list[str], min_side: int) -> list[str]:
    """Readable images with both sides ≥ ``min_side``; broken and small files are skipped with one warning."""
    paths = list_images(folder)
    if not paths:
        raise CFMError(f"--data {folder!r} contains no images (.png/.jpg/.webp); point it at a folder of photos")
    from PIL import Image

    good, broken, small = [], 0, 0
    for path in paths:
        try:
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS or getattr(im, "n_frames", 1) > 1:  # load_image would refuse it mid-run
                    raise ValueError("too large or animated")
                im.verify()
        except Exception:
            broken += 1
            continue
        if min(w, h) < min_side:
            small += 1
            continue
        good.append(path)
    if broken or small:
        print(f"warning: skipped {broken} unreadable and {small} smaller-than-{min_side}px images "
              f"of {len(paths)} in {folder}", file=sys.stderr)
    if not good:
        raise CFMError(f"--data {folder!r}: none of the {len(paths)} images is readable and at least {min_side}px "
                       "on its short side; lower --crop or add larger images")
    return good


@lru_cache(maxsize=128)
def _load_rgb(path: str) -> torch.Tensor:
    return load_image(path, keep_alpha=False).rgb


def _maybe_log_uniform(p: float, bounds: tuple[float, float], gen: torch.Generator) -> float | None:
    """With probability ``p`` a value drawn log-uniformly from ``bounds``, else None (``p`` 0 draws nothing, so the
    sample stream of a run without the option is unchanged)."""
    if not p or not torch.rand((), generator=gen) < p:
        return None
    lo, hi = torch.tensor(bounds).log().tolist()
    return float(torch.empty(()).uniform_(lo, hi, generator=gen).exp())


class PairSource:
    """Deterministic (high-res crop, upsampled low-res crop) pixel pairs in [-1, 1]."""

    def __init__(self, paths: list[str], spec: PairSpec, seed: int, degradation=None):
        self.paths, self.spec, self.seed, self.degradation = paths, spec, seed, degradation

    def pixels(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(mix64(self.seed, index, 0xDA7A))
        image = _load_rgb(self.paths[int(torch.randint(len(self.paths), (1,), generator=gen))])
        c = self.spec.crop
        top = int(torch.randint(image.shape[1] - c + 1, (1,), generator=gen))
        left = int(torch.randint(image.shape[2] - c + 1, (1,), generator=gen))
        crop = image[:, top:top + c, left:left + c]
        if torch.rand((), generator=gen) < 0.5:
            crop = crop.flip(-1)
        if (s := _maybe_log_uniform(self.spec.low_contrast, LOW_CONTRAST_RANGE, gen)) is not None:
            mean = crop.mean((1, 2), keepdim=True)
            crop = mean + s * (crop - mean)
        if (sigma := _maybe_log_uniform(self.spec.grain, GRAIN_RANGE, gen)) is not None:
            crop = crop + sigma * torch.randn(crop.shape, generator=gen)
        if (sigma := _maybe_log_uniform(self.spec.soft, SOFT_RANGE, gen)) is not None:
            crop = gaussian_blur(crop, sigma)
        high = crop[None]
        kernels = self.spec.downsample
        kernel = kernels[int(torch.randint(len(kernels), (1,), generator=gen))] if len(kernels) > 1 else kernels[0]
        low = make_low_res(high, self.spec.factor, kernel)
        if self.degradation is not None:
            low = self.degradation.apply(low[0], gen)[None]
        up = resize_pixels(low, self.spec.factor)
        return high[0] * 2 - 1, up[0] * 2 - 1

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.pixels(i) for i in indices]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


class LatentSource:
    """Encodes pixel pairs on the fly (cheap, weights-free spaces): fresh random crops for every sample."""

    def __init__(self, pairs: PairSource, space: LatentSpace, device: torch.device | str = "cpu"):
        self.pairs, self.space, self.device = pairs, space, device

    def __len__(self) -> int:
        return 1 << 62

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        high, up = self.pairs.batch(indices)
        with torch.no_grad():
            return (self.space.encode(high.to(self.device)).float(), self.space.encode(up.to(self.device)).float())


class LatentCache:
    """Precomputed latents on disk (for VAE spaces): ``size`` samples in shards, resumable after interruption.

    Sample k of the cache is pair k of the :class:`PairSource`; training draws cache entries in an order that
    depends only on (seed, epoch).
    """

    SHARD = 256

    def __init__(self, folder: str, pairs: PairSource, space: LatentSpace, size: int, seed: int,
                 device: torch.device | str = "cpu"):
        self.folder, self.pairs, self.space, self.size, self.seed = folder, pairs, space, size, seed
        self.device = device
        self._shards: dict[int, dict[str, torch.Tensor]] = {}
        self._perm: tuple[int, torch.Tensor] | None = None

    def _manifest_path(self) -> str:
        return os.path.join(self.folder, "manifest.json")

    def _identity(self) -> dict:
        return {"size": self.size, "seed": self.pairs.seed, "crop": self.pairs.spec.crop,
                "factor": self.pairs.spec.factor, "space": self.space.spec.to_dict(), "images": len(self.pairs.paths),
                "downsample": list(self.pairs.spec.downsample),
                "degrade": self.pairs.degradation.to_spec() if self.pairs.degradation else "none",
                **({"low_contrast": self.pairs.spec.low_contrast} if self.pairs.spec.low_contrast else {}),
                **({"grain": self.pairs.spec.grain} if self.pairs.spec.grain else {}),
                **({"soft": self.pairs.spec.soft} if self.pairs.spec.soft else {})}

    def build(self, progress: bool = True) -> None:
        """Encode every missing shard. Finished shards are kept, so an interrupted build resumes."""
        from safetensors.torch import save_file

        os.makedirs(self.folder, exist_ok=True)
        manifest = {"identity": self._identity(), "done": []}
        if os.path.isfile(self._manifest_path()):
            with open(self._manifest_path()) as fh:
                old = json.load(fh)
            if old.get("identity") != manifest["identity"]:
                raise CFMError(f"latent cache {self.folder!r} was built with other settings; delete it or pass "
                               "another --cache-dir")
            manifest = old
        n_shards = -(-self.size // self.SHARD)
        todo = [s for s in range(n_shards) if s not in manifest["done"]]
        from tqdm import tqdm
        for shard in tqdm(todo, desc="caching latents", disable=not progress or not todo):
            start = shard * self.SHARD
            indices = list(range(start, min(self.size, start + self.SHARD)))
            x1, z_up = [], []
            for chunk in range(0, len(indices), 8):
                high, up = self.pairs.batch(indices[chunk:chunk + 8])
                with torch.no_grad():
                    x1.append(self.space.encode(high.to(self.device)).float().cpu())
                    z_up.append(self.space.encode(up.to(self.device)).float().cpu())
            tensors = {"x1": torch.cat(x1).contiguous(), "z_up": torch.cat(z_up).contiguous()}
            atomic_write(self._shard_path(shard), lambda tmp: save_file(tensors, tmp))
            manifest["done"].append(shard)
            atomic_write(self._manifest_path(), lambda tmp: _write_json(tmp, manifest))

    def _shard_path(self, shard: int) -> str:
        return os.path.join(self.folder, f"shard-{shard:05d}.safetensors")

    def __len__(self) -> int:
        return self.size

    def _get(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        shard, pos = divmod(k, self.SHARD)
        if shard not in self._shards:
            from safetensors.torch import load_file
            self._shards[shard] = load_file(self._shard_path(shard))
        return self._shards[shard]["x1"][pos], self._shards[shard]["z_up"][pos]

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            gen = torch.Generator().manual_seed(mix64(self.seed, epoch))
            self._perm = (epoch, torch.randperm(self.size, generator=gen))
        return self._perm[1]

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        items = []
        for g in indices:
            epoch, pos = divmod(g, self.size)
            items.append(self._get(int(self._epoch_order(epoch)[pos])))
        return (torch.stack([i[0] for i in items]).to(self.device),
                torch.stack([i[1] for i in items]).to(self.device))


def _write_json(path: str, data: dict) -> None:
    with open(path, "w") as fh:
        json.dump(data, fh)
