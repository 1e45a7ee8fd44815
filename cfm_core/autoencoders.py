"""Latent spaces: what the CFM model's latents are, and how to go between them and pixels.

Every space maps pixels in [-1, 1] (B, 3, H, W) to *model-space* latents and back. The VAE scale factor
(0.18215 for SD1.x) is applied in exactly one place, :class:`LatentScaling`; ComfyUI LATENTs are unscaled and the
nodes convert with the same class.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import asdict, dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from .errors import CFMError, first_line
from .vae_families import FAMILIES

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

    ``family`` is the VAE family (``sd15``, ``sdxl``, ``sd3``, ``flux``: :mod:`cfm_core.vae_families`; "" for
    models trained before families were recorded, or a custom VAE); ``name`` is a free label (the family or the
    VAE's file name); ``fingerprint`` identifies the exact VAE weights (see :func:`vae_fingerprint`), so a model is
    never silently run in another VAE's space.
    """

    kind: str = "vae"
    channels: int = 4
    downscale: int = 8
    scale_factor: float = FAMILIES["sd15"].scale  # the official setup's SD1.x VAE
    shift_factor: float = 0.0
    name: str = "sd15"
    fingerprint: str = ""
    family: str = ""

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
    """A short id of a VAE's weights from its ``quant_conv`` (SD1.x/SDXL VAEs, every key layout), or from its
    ``encoder.conv_out`` in VAEs without one (SD3/Flux): :func:`fingerprint_weight` picks which.

    Built from the *signs* of the first 256 weights: rounding to fp16 or bf16 never flips a sign, so the fp32,
    fp16 and bf16 copies of one VAE agree exactly (rounded values do not: a value near a rounding boundary lands
    on either side), while independently trained VAEs differ in about half of the signs."""
    if quant_conv_weight is None:
        return ""
    values = quant_conv_weight.detach().float().flatten()[:256].cpu()
    signs = "".join("1" if v > 0 else "0" for v in values.tolist())
    return hashlib.sha256(signs.encode()).hexdigest()[:16]


def fingerprint_weight(autoencoder) -> torch.Tensor | None:
    """The weight :func:`vae_fingerprint` reads: ``quant_conv`` where the VAE has one (as every model trained before
    SD3/Flux support recorded), else ``encoder.conv_out``. Works for diffusers' and ComfyUI's AutoencoderKL alike."""
    for owner, name in (("quant_conv", "weight"), ("encoder", "conv_out")):
        module = getattr(autoencoder, owner, None)
        if module is None:
            continue
        weight = getattr(module, name, None)
        weight = getattr(weight, "weight", weight)
        if isinstance(weight, torch.Tensor):
            return weight
    return None


class DiffusersVAE:
    """A diffusers ``AutoencoderKL`` read from a local VAE file (LDM or diffusers keys, with or without quant_conv),
    a diffusers folder, or the VAE tensors of a full model checkpoint (:meth:`load`).

    Encoding returns the posterior **mean**, scaled: z = (mean − shift)·scale.
    """

    def __init__(self, vae, scale_factor: float | None = None, shift_factor: float | None = None,
                 name: str = "vae", family: str = ""):
        self.vae = vae.eval().requires_grad_(False)
        cfg = vae.config
        scale = float(scale_factor if scale_factor is not None else cfg.get("scaling_factor", FAMILIES["sd15"].scale))
        shift = float(shift_factor if shift_factor is not None else (cfg.get("shift_factor") or 0.0))
        self.spec = LatentSpec(kind="vae", channels=int(cfg["latent_channels"]),
                               downscale=2 ** (len(cfg["block_out_channels"]) - 1),
                               scale_factor=scale, shift_factor=shift, name=name,
                               fingerprint=vae_fingerprint(fingerprint_weight(vae)), family=family)

    @classmethod
    def load(cls, path: str, *, family: str | None = None, family_by: str = "--vae-family",
             scale_factor: float | None = None, shift_factor: float | None = None,
             name: str | None = None, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32) -> DiffusersVAE:
        """A VAE file, diffusers folder or full model checkpoint, in the latent space of its family.

        The family is ``family`` (said by ``family_by``: a flag, or the CFM model), checked against what the file
        says; else the family of an explicit ``scale_factor`` (or a custom space with that scale); else what the
        file says; else a one-line :class:`CFMError` asking for ``--vae-family``.
        """
        from .vae_families import resolve_family

        found = read_autoencoder(path)
        channels = int(found.vae.config["latent_channels"])
        if family is None and scale_factor is None and found.family is None and found.stated_scale is not None:
            scale_factor, shift_factor = found.stated_scale  # a diffusers config with a non-family scale
        fam = resolve_family(channels, told=family or None, told_by=family_by, evidence=found.family,
                             evidence_from=found.family_from, scale=scale_factor, shift=shift_factor, path=path)
        if fam is not None:
            scale_factor, shift_factor = fam.scale, fam.shift
        stem = name or (fam.key if fam else os.path.splitext(os.path.basename(os.path.normpath(path)))[0])
        vae = found.vae.to(device=device, dtype=dtype)
        return cls(vae, scale_factor, shift_factor or 0.0, stem, fam.key if fam else "")

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


# where the VAE sits in a full model checkpoint: SD1.x/SD2.x/SDXL/SD3 (ComfyUI, A1111) and Flux/diffusers-ish
VAE_PREFIXES = ("first_stage_model.", "vae.")


def _vae_prefix(keys: list[str]) -> str:
    for prefix in VAE_PREFIXES:
        if any(k.startswith(prefix) for k in keys):
            return prefix
    return ""


@dataclass
class FoundVAE:
    """An AutoencoderKL read from a path, with what the path said about its family (see ``vae_families``)."""

    vae: object
    family: str | None = None
    family_from: str = ""
    stated_scale: tuple[float, float] | None = None  # a diffusers config's (scaling_factor, shift_factor)


def read_vae_tensors(path: str) -> tuple[dict[str, torch.Tensor], str | None, str]:
    """The VAE tensors of a safetensors VAE file or full model checkpoint (prefix removed), read lazily so that a
    checkpoint's diffusion model and text encoders are never loaded; plus (family, where that was read)."""
    from safetensors import safe_open

    from .vae_families import family_from_checkpoint_keys, family_from_metadata

    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            keys = list(handle.keys())
            prefix = _vae_prefix(keys)
            sd = {k[len(prefix):]: handle.get_tensor(k) for k in keys if k.startswith(prefix)}
    except Exception as exc:  # safetensors raises several types for a corrupt header or a truncated file
        raise CFMError(f"--vae {path!r} could not be read as safetensors ({exc}); is the file complete?") from None
    family = family_from_metadata(metadata)
    if family:
        return sd, family, f"metadata modelspec.architecture {metadata['modelspec.architecture']!r}"
    neighbour = family_from_checkpoint_keys(k for k in keys if not (prefix and k.startswith(prefix)))
    if neighbour:
        return sd, neighbour, "the diffusion model beside the VAE in the checkpoint"
    return sd, None, ""


# (down blocks, res blocks, first conv of a res block) in the original LDM and in the diffusers key layout
_VAE_LAYOUTS = {"ldm": ("encoder.down.", "block", "conv1"), "diffusers": ("encoder.down_blocks.", "resnets", "conv1")}


def autoencoder_config_from_state_dict(sd: dict[str, torch.Tensor], layout: str = "ldm") -> dict:
    """AutoencoderKL constructor arguments read off the tensor shapes of a VAE state dict in ``layout``."""
    down, block, conv = _VAE_LAYOUTS[layout]
    levels = sorted({int(k.split(".")[2]) for k in sd if k.startswith(down)})
    blocks = sorted({int(k.split(".")[4]) for k in sd if k.startswith(f"{down}0.{block}.")})
    if not levels or not blocks or "encoder.conv_out.weight" not in sd:
        raise CFMError("the VAE file has no encoder down-block/conv_out tensors: it is not an SD-style "
                       "AutoencoderKL; pass a VAE .safetensors, a diffusers folder or a full model checkpoint")
    widths = [int(sd[f"{down}{i}.{block}.0.{conv}.weight"].shape[0]) for i in levels]
    return {
        "in_channels": int(sd["encoder.conv_in.weight"].shape[1]),
        "out_channels": int(sd["decoder.conv_out.weight"].shape[0]),
        "down_block_types": ["DownEncoderBlock2D"] * len(widths),
        "up_block_types": ["UpDecoderBlock2D"] * len(widths),
        "block_out_channels": widths,
        "layers_per_block": len(blocks),
        "latent_channels": int(sd["encoder.conv_out.weight"].shape[0]) // 2,
        # SD3/Flux VAEs have neither 1×1 conv (diffusers' use_quant_conv/use_post_quant_conv=False)
        "use_quant_conv": "quant_conv.weight" in sd,
        "use_post_quant_conv": "post_quant_conv.weight" in sd,
    }


def load_autoencoder_kl(path: str):
    """Load a diffusers AutoencoderKL from a local folder, VAE file or full checkpoint, offline, running no code
    from the files: single files must be safetensors; a diffusers folder's weights are read by diffusers, from
    ``.safetensors`` or, failing that, ``.bin`` through ``torch.load(weights_only=True)``, torch's restricted
    unpickler that rebuilds tensors only and refuses anything else (such a refusal is a one-line CFMError)."""
    return read_autoencoder(path).vae


def read_autoencoder(path: str) -> FoundVAE:
    """:func:`load_autoencoder_kl` plus what the path says about the VAE's family."""
    from diffusers import AutoencoderKL

    from .vae_families import family_from_checkpoint_keys, family_from_diffusers_folder

    if os.path.isdir(path):
        sub = os.path.join(path, "vae")
        folder = sub if os.path.isfile(os.path.join(sub, "config.json")) else path
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise CFMError(f"--vae folder {path!r} has no config.json (or vae/config.json); "
                           "pass a diffusers VAE folder or a .safetensors file")
        try:
            with warnings.catch_warnings():  # torch warns about the pickle protocol of a .bin it then refuses
                warnings.simplefilter("ignore", UserWarning)
                vae = AutoencoderKL.from_pretrained(folder, local_files_only=True)
        except Exception as exc:  # diffusers raises OSError, ValueError, JSONDecodeError, UnpicklingError, ...
            raise CFMError(f"--vae folder {folder!r} could not be loaded as a diffusers AutoencoderKL "
                           f"({type(exc).__name__}: {first_line(exc)}); check its config.json and weights") from None
        family, family_from = family_from_diffusers_folder(folder, vae.config)
        scale = vae.config.get("scaling_factor")
        stated = (float(scale), float(vae.config.get("shift_factor") or 0.0)) if scale is not None else None
        return FoundVAE(vae, family, family_from, stated)
    if not os.path.isfile(path):
        raise CFMError(f"--vae {path!r} does not exist; pass a VAE .safetensors file or a diffusers folder")
    if not path.endswith((".safetensors", ".sft")):
        raise CFMError(f"--vae {path!r} is not a .safetensors file; pickle checkpoints are refused "
                       "(convert it to safetensors first)")
    sd, family, family_from = read_vae_tensors(path)
    if "encoder.conv_out.weight" not in sd and family_from_checkpoint_keys(sd):
        raise CFMError(f"--vae {path!r} is a diffusion model without a VAE inside; pass the VAE file (e.g. "
                       "ae.safetensors for Flux) or a full checkpoint that contains one")
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
    try:
        missing, unexpected = vae.load_state_dict(sd, strict=False)
    except RuntimeError as exc:  # a tensor of the wrong shape
        raise CFMError(f"--vae {path!r} has tensors that do not fit an AutoencoderKL ({first_line(exc)}); is the "
                       "file complete and a VAE?") from None
    if missing:
        raise CFMError(f"--vae {path!r} lacks {len(missing)} tensors of an AutoencoderKL (e.g. {missing[0]}); "
                       "is it a VAE file?")
    return FoundVAE(vae.float(), family, family_from)


def space_from_spec(spec: LatentSpec, vae_path: str | None = None, **vae_kwargs) -> LatentSpace:
    """The weights-free space a spec describes, or the diffusers VAE at ``vae_path`` checked against it."""
    if spec.kind == "pixels":
        return PixelSpace()
    if spec.kind == "space_to_depth":
        return SpaceToDepth(spec.downscale)
    if vae_path is None:
        raise CFMError(f"this model works in the latent space of VAE {spec.name!r}; pass --vae PATH to that VAE")
    space = DiffusersVAE.load(vae_path, family=spec.family or None, family_by="the CFM model",
                              scale_factor=spec.scale_factor, shift_factor=spec.shift_factor,
                              name=spec.name, **vae_kwargs)
    check_space_matches(spec, space.spec)
    return space


def check_space_matches(model_spec: LatentSpec, space_spec: LatentSpec) -> None:
    """Refuse a VAE whose channels, family or weights differ from the one the model was trained for."""
    if model_spec.family and space_spec.family and model_spec.family != space_spec.family:
        raise CFMError(f"the CFM model was trained for {model_spec.family} latents but this VAE is a "
                       f"{space_spec.family} VAE; use a CFM model trained for {space_spec.family}")
    if model_spec.channels != space_spec.channels:
        raise CFMError(f"the CFM model expects {model_spec.channels}-channel latents but the VAE makes "
                       f"{space_spec.channels}-channel ones; use a CFM model trained for this VAE")
    if model_spec.fingerprint and space_spec.fingerprint and model_spec.fingerprint != space_spec.fingerprint:
        family = f" ({model_spec.family})" if model_spec.family not in ("", model_spec.name) else ""
        raise CFMError(f"the CFM model was trained for VAE {model_spec.name!r}{family} (fingerprint "
                       f"{model_spec.fingerprint}) but this VAE has fingerprint {space_spec.fingerprint}; use the "
                       "VAE the model was trained with or a CFM model trained for this VAE")
