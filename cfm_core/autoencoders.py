"""Latent spaces: what the CFM model's latents are, and how to go between them and pixels.

Every space maps pixels in [-1, 1] (B, 3, H, W) to *model-space* latents and back. The VAE scale factor
(0.18215 for SD1.x) is applied in exactly one place, :class:`LatentScaling`; ComfyUI LATENTs are unscaled and the
nodes convert with the same class.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from .errors import CFMError

SPACE_KINDS = ("pixels", "space_to_depth", "vae")


@dataclass(frozen=True)
class LatentScaling:
    """model-space z = (raw − shift) · scale; raw = z / scale + shift. The single home of the scale factor."""

    scale: float = 1.0
    shift: float = 0.0

    def to_model(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.shift) * self.scale

    def to_raw(self, z: torch.Tensor) -> torch.Tensor:
        return z / self.scale + self.shift


@dataclass(frozen=True)
class LatentSpec:
    """Self-description of a latent space, stored in every checkpoint.

    ``name`` identifies the VAE family (e.g. ``sd15``); ``fingerprint`` identifies the exact VAE weights
    (see :func:`vae_fingerprint`), so a model is never silently run in another VAE's space.
    """

    kind: str = "vae"
    channels: int = 4
    downscale: int = 8
    scale_factor: float = 0.18215
    shift_factor: float = 0.0
    name: str = "sd15"
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if self.kind not in SPACE_KINDS:
            raise CFMError(f"latent space kind {self.kind!r} is unknown; use one of {SPACE_KINDS}")

    @property
    def scaling(self) -> LatentScaling:
        return LatentScaling(self.scale_factor, self.shift_factor)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LatentSpec:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class LatentSpace(Protocol):
    spec: LatentSpec

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] → model-space latent (B, C, H/d, W/d)."""

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """model-space latent → (B, 3, H, W) pixels in about [-1, 1] (not clamped)."""


class PixelSpace:
    """The identity: the "latent" is the image itself in [-1, 1]."""

    spec = LatentSpec(kind="pixels", channels=3, downscale=1, scale_factor=1.0, name="pixels")

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z


class SpaceToDepth:
    """Invertible packing of f×f pixel blocks into channels: (3, H, W) ↔ (3·f², H/f, W/f). No weights, no loss."""

    def __init__(self, factor: int = 2):
        if factor < 1:
            raise CFMError(f"space-to-depth factor={factor} must be ≥ 1")
        self.factor = factor
        self.spec = LatentSpec(kind="space_to_depth", channels=3 * factor * factor, downscale=factor,
                               scale_factor=1.0, name=f"space_to_depth{factor}")

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        h, w = pixels.shape[-2:]
        if h % self.factor or w % self.factor:
            raise CFMError(f"image size {w}×{h} is not a multiple of the space-to-depth factor {self.factor}")
        return F.pixel_unshuffle(pixels, self.factor)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(z, self.factor)


def vae_fingerprint(quant_conv_weight: torch.Tensor | None) -> str:
    """A short id of a VAE's weights from its ``quant_conv`` (present in SD1.x/SDXL VAEs in every key layout).

    Built from the *signs* of the first 256 weights: rounding to fp16 or bf16 never flips a sign, so the fp32,
    fp16 and bf16 copies of one VAE agree exactly (rounded values do not: a value near a rounding boundary lands
    on either side), while independently trained VAEs differ in about half of the signs."""
    if quant_conv_weight is None:
        return ""
    values = quant_conv_weight.detach().float().flatten()[:256].cpu()
    signs = "".join("1" if v > 0 else "0" for v in values.tolist())
    return hashlib.sha256(signs.encode()).hexdigest()[:16]


class DiffusersVAE:
    """A diffusers ``AutoencoderKL`` read from a local file (LDM or diffusers keys) or a local folder.

    Encoding returns the posterior **mean**, scaled: z = (mean − shift)·scale.
    """

    def __init__(self, vae, scale_factor: float | None = None, shift_factor: float | None = None,
                 name: str = "vae"):
        self.vae = vae.eval().requires_grad_(False)
        cfg = vae.config
        scale = float(scale_factor if scale_factor is not None else cfg.get("scaling_factor", 0.18215))
        shift = float(shift_factor if shift_factor is not None else (cfg.get("shift_factor") or 0.0))
        qc = getattr(vae, "quant_conv", None)
        self.spec = LatentSpec(kind="vae", channels=int(cfg["latent_channels"]),
                               downscale=2 ** (len(cfg["block_out_channels"]) - 1),
                               scale_factor=scale, shift_factor=shift, name=name,
                               fingerprint=vae_fingerprint(qc.weight if qc is not None else None))

    @classmethod
    def load(cls, path: str, *, scale_factor: float | None = None, shift_factor: float | None = None,
             name: str | None = None, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32) -> DiffusersVAE:
        vae = load_autoencoder_kl(path).to(device=device, dtype=dtype)
        stem = name or os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
        return cls(vae, scale_factor, shift_factor, stem)

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        p = next(self.vae.parameters())
        mean = self.vae.encode(pixels.to(p.device, p.dtype)).latent_dist.mean
        return self.spec.scaling.to_model(mean.float())

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        p = next(self.vae.parameters())
        raw = self.spec.scaling.to_raw(z.float()).to(p.device, p.dtype)
        return self.vae.decode(raw).sample.float()


def _strip_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in ("first_stage_model.", "vae."):
        if any(k.startswith(prefix) for k in sd):
            return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return sd


# (down blocks, res blocks, first conv of a res block) in the original LDM and in the diffusers key layout
_VAE_LAYOUTS = {"ldm": ("encoder.down.", "block", "conv1"), "diffusers": ("encoder.down_blocks.", "resnets", "conv1")}


def autoencoder_config_from_state_dict(sd: dict[str, torch.Tensor], layout: str = "ldm") -> dict:
    """AutoencoderKL constructor arguments read off the tensor shapes of a VAE state dict in ``layout``."""
    down, block, conv = _VAE_LAYOUTS[layout]
    levels = sorted({int(k.split(".")[2]) for k in sd if k.startswith(down)})
    blocks = sorted({int(k.split(".")[4]) for k in sd if k.startswith(f"{down}0.{block}.")})
    if not levels or not blocks or "quant_conv.weight" not in sd:
        raise CFMError("the VAE file has no encoder down-block/quant_conv tensors: it is not an SD-style "
                       "AutoencoderKL; pass a VAE .safetensors or a diffusers folder")
    widths = [int(sd[f"{down}{i}.{block}.0.{conv}.weight"].shape[0]) for i in levels]
    return {
        "in_channels": int(sd["encoder.conv_in.weight"].shape[1]),
        "out_channels": int(sd["decoder.conv_out.weight"].shape[0]),
        "down_block_types": ["DownEncoderBlock2D"] * len(widths),
        "up_block_types": ["UpDecoderBlock2D"] * len(widths),
        "block_out_channels": widths,
        "layers_per_block": len(blocks),
        "latent_channels": int(sd["quant_conv.weight"].shape[0]) // 2,
    }


def load_autoencoder_kl(path: str):
    """Load a diffusers AutoencoderKL from a local folder or single file, offline and without pickle."""
    from diffusers import AutoencoderKL

    if os.path.isdir(path):
        sub = os.path.join(path, "vae")
        folder = sub if os.path.isfile(os.path.join(sub, "config.json")) else path
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise CFMError(f"--vae folder {path!r} has no config.json (or vae/config.json); "
                           "pass a diffusers VAE folder or a .safetensors file")
        return AutoencoderKL.from_pretrained(folder, local_files_only=True)
    if not os.path.isfile(path):
        raise CFMError(f"--vae {path!r} does not exist; pass a VAE .safetensors file or a diffusers folder")
    if not path.endswith((".safetensors", ".sft")):
        raise CFMError(f"--vae {path!r} is not a .safetensors file; pickle checkpoints are refused "
                       "(convert it to safetensors first)")
    from safetensors.torch import load_file
    try:
        sd = _strip_prefix(load_file(path))
    except Exception as exc:  # safetensors raises several types for a corrupt header
        raise CFMError(f"--vae {path!r} could not be read as safetensors ({exc}); is the file complete?") from None
    try:
        if any(k.startswith("encoder.down_blocks.") for k in sd):  # already diffusers layout
            cfg = autoencoder_config_from_state_dict(sd, "diffusers")
        else:
            from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
            cfg = autoencoder_config_from_state_dict(sd)
            sd = convert_ldm_vae_checkpoint(sd, cfg)
    except (KeyError, IndexError) as exc:  # e.g. an encoder-only file
        raise CFMError(f"--vae {path!r} lacks the AutoencoderKL tensor {exc}; pass a complete VAE file") from None
    vae = AutoencoderKL(**cfg)
    missing, unexpected = vae.load_state_dict(sd, strict=False)
    if missing:
        raise CFMError(f"--vae {path!r} lacks {len(missing)} tensors of an AutoencoderKL (e.g. {missing[0]}); "
                       "is it a VAE file?")
    return vae


def space_from_spec(spec: LatentSpec, vae_path: str | None = None, **vae_kwargs) -> LatentSpace:
    """The weights-free space a spec describes, or the diffusers VAE at ``vae_path`` checked against it."""
    if spec.kind == "pixels":
        return PixelSpace()
    if spec.kind == "space_to_depth":
        return SpaceToDepth(spec.downscale)
    if vae_path is None:
        raise CFMError(f"this model works in the latent space of VAE {spec.name!r}; pass --vae PATH to that VAE")
    space = DiffusersVAE.load(vae_path, scale_factor=spec.scale_factor, shift_factor=spec.shift_factor,
                              name=spec.name, **vae_kwargs)
    check_space_matches(spec, space.spec)
    return space


def check_space_matches(model_spec: LatentSpec, space_spec: LatentSpec) -> None:
    """Refuse a VAE whose channels or weights differ from the one the model was trained for."""
    if model_spec.channels != space_spec.channels:
        raise CFMError(f"the CFM model expects {model_spec.channels}-channel latents but the VAE makes "
                       f"{space_spec.channels}-channel ones; use a CFM model trained for this VAE")
    if model_spec.fingerprint and space_spec.fingerprint and model_spec.fingerprint != space_spec.fingerprint:
        raise CFMError(f"the CFM model was trained for VAE {model_spec.name!r} (fingerprint {model_spec.fingerprint}) "
                       f"but this VAE has fingerprint {space_spec.fingerprint}; use the VAE the model was trained "
                       "with or a CFM model trained for this VAE")
