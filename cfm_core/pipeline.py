"""The calls the CLI and the ComfyUI nodes make: low-res latent/image → high-res, in one function each."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .autoencoders import LatentSpace, PixelSpace, SpaceToDepth
from .contrast import ContrastGain
from .errors import CFMError
from .model import CFMConfig, CFMModel, check_finite_output
from .path import start_point
from .solvers import StepInfo, check_solver, check_steps, integrate
from .tiling import TiledVelocity
from .upsample import resize_pixels
from .upsample import upsample as upsample_latent

MAX_LATENT_SIDE = 8192


@dataclass(frozen=True)
class UpscaleResult:
    latent: torch.Tensor  # model-space latent at the high resolution, float32
    nfe: int
    steps: int
    seconds: float


def boost(model: CFMModel, z_up: torch.Tensor, *, solver: str | None = None, steps: int | None = None,
          seed: int = 0, noise_step: int | None = None, tile: int | None = None, overlap: int = 8,
          batch_indices: list[int] | None = None, x0: torch.Tensor | None = None,
          callback: Callable[[StepInfo], None] | None = None,
          interrupt: Callable[[], None] | None = None, contrast_norm: bool = True) -> UpscaleResult:
    """Integrate the coupling ODE from x0 = noise_augment(z_up) to x1, with the clean z_up as context.

    ``x0`` overrides the start (e.g. an already augmented latent from the NoiseAugment node). Regression
    models (objective l1/l2) take one Euler step from z_up whatever ``solver``/``steps`` say. A pixel-space model
    with a ``contrast_reference`` solves flat images at that contrast and maps the result back (``contrast.py``;
    start point and context alike, so an ``x0`` override is mapped too); ``contrast_norm=False`` switches it off.
    A model with a ``noise_detail`` reference noises each pixel at a step that falls off with the local detail of
    z_up (``augment.py``), measured before contrast normalisation.
    """
    cfg = model.config
    model.check_latent(z_up, "z_up")
    if max(z_up.shape[-2:]) > MAX_LATENT_SIDE:
        raise CFMError(f"latent of {z_up.shape[-1]}×{z_up.shape[-2]} exceeds {MAX_LATENT_SIDE} per side; "
                       "upscale a smaller image")
    check_solver(solver or cfg.default_solver)  # a bad request is an error even where the plan overrides it
    check_steps(cfg.default_steps if steps is None else steps)
    solver, steps = cfg.solve_plan(solver, steps)
    z_up = z_up.to(model.device, torch.float32)
    if x0 is not None:
        if x0.shape != z_up.shape:
            raise CFMError(f"start latent {tuple(x0.shape)} and context {tuple(z_up.shape)} differ in shape")
        model.check_latent(x0, "start latent x0")  # NaN/inf from an upstream node
    if x0 is None:
        noise_step = cfg.noise_steps(z_up, noise_step)  # before contrast normalisation: the image's own detail
    contrast = None
    if cfg.contrast_reference is not None and contrast_norm:
        contrast = ContrastGain.measure(z_up, cfg.contrast_reference)
        z_up, x0 = contrast.forward(z_up), None if x0 is None else contrast.forward(x0.to(model.device).float())
        if callback is not None:
            callback = (lambda info, report=callback: report(contrast.step_info(info)))
    if x0 is None:
        x0 = start_point(cfg.objective, z_up, noise_step, seed=seed, batch_indices=batch_indices)
    context = z_up  # float32: CFMModel casts to its dtype for the network only

    def network(x: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        if interrupt is not None:
            interrupt()
        return model(x, t, ctx).float()

    velocity = network
    if tile:
        velocity = TiledVelocity(network, tile, overlap, stride=cfg.unet.stride, interrupt=interrupt)
    result = integrate(lambda x, t: velocity(x, t, context), x0.to(model.device), solver=solver, steps=steps,
                       callback=callback)
    check_finite_output(result.x, model.dtype)  # e.g. an adaptive solver's step blowing up
    latent = result.x if contrast is None else contrast.inverse(result.x)
    return UpscaleResult(latent=latent, nfe=result.nfe, steps=result.steps, seconds=result.seconds)


def upscale_latent(model: CFMModel, z_low: torch.Tensor, space: LatentSpace | None, *,
                   upsample: str | None = None, **kwargs) -> UpscaleResult:
    """Model-space low-res latent → PSU (or latent resize) → :func:`boost`."""
    model.check_latent(z_low, "low-res latent")
    _check_space(model, space)
    start = time.perf_counter()
    with torch.no_grad():
        z_up = upsample_latent(z_low.float(), space, model.config.factor, upsample or model.config.upsample)
    result = boost(model, z_up, **kwargs)
    return UpscaleResult(result.latent, result.nfe, result.steps, time.perf_counter() - start)


def cascade(models: Sequence[CFMModel], z_low: torch.Tensor, space: LatentSpace | None,
            **kwargs) -> list[UpscaleResult]:
    """Chain 2× stages (e.g. 64² → 128² → 256² latents), one model per stage (the same one may repeat)."""
    if not models:
        raise CFMError("cascade needs at least one model")
    results, z = [], z_low
    for model in models:
        results.append(upscale_latent(model, z, space, **kwargs))
        z = results[-1].latent
    return results


def weights_free_space(model: CFMModel) -> LatentSpace:
    spec = model.config.latent
    if spec.kind == "pixels":
        return PixelSpace()
    if spec.kind == "space_to_depth":
        return SpaceToDepth(spec.downscale)
    raise CFMError(f"this model needs the VAE {spec.name!r}; pass it (--vae PATH)")


def upscale_image(model: CFMModel, image: torch.Tensor, space: LatentSpace | None = None,
                  **kwargs) -> tuple[torch.Tensor, UpscaleResult]:
    """(B, 3, H, W) image in [0, 1] → (B, 3, f·H, f·W) in [0, 1].

    The start point is made as in training: bilinear resize of the image itself, then encode (no decode).
    """
    space = space or weights_free_space(model)
    _check_space(model, space)
    if image.ndim != 4 or image.shape[1] != 3:
        raise CFMError(f"image must be [B, 3, H, W] RGB, got shape {tuple(image.shape)}")
    check_image_range(image)
    f, d = model.config.factor, model.config.latent.downscale
    h, w = image.shape[-2:]
    if h % d or w % d:
        raise CFMError(f"image size {w}×{h} must be a multiple of {d} for this model's latent space; crop or pad it")
    start = time.perf_counter()
    with torch.no_grad():
        # contiguous: the same pixels give the same bits whatever the caller's memory layout (a ComfyUI IMAGE
        # arrives channels-last, a decoded file contiguous)
        up = resize_pixels(image.float().contiguous() * 2 - 1, f)
        z_up = space.encode(up.to(_space_device(space, model)))
        result = boost(model, z_up, **kwargs)
        decoded = space.decode(result.latent).float()
        if not torch.isfinite(decoded).all():
            raise CFMError("the VAE decoded the upscaled latent to NaN or inf values; run the VAE in fp32 or bf16 "
                           "(fp16 VAEs overflow)")
        out = (decoded.clamp(-1, 1) + 1) / 2
    return out.cpu(), UpscaleResult(result.latent, result.nfe, result.steps, time.perf_counter() - start)


def estimate_memory(config: CFMConfig, shape: tuple[int, ...], dtype: torch.dtype, tile: int | None) -> int:
    """Rough bytes for one velocity evaluation of a (B, C, H, W) latent, tiled or not, plus the solver state (the
    weights not included): what a caller frees before a solve (the nodes ask ComfyUI for it)."""
    b, c, h, w = shape
    th, tw = (min(h, tile), min(w, tile)) if tile else (h, w)
    network = config.unet.activation_bytes(b, th, tw, torch.empty((), dtype=dtype).element_size())
    solver_state = 8 * b * c * h * w * 4  # x, context and up to 6 Runge-Kutta stages, float32
    return int(1.5 * network + solver_state)


def pad_to_multiple(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad (B, C, H, W) at the bottom/right up to multiples of ``multiple`` (a model's latent downscale), by
    reflection (replicate for tiny images, where reflection is undefined). The CLI and the nodes both pad with this,
    and crop the output back to ``factor`` × the input size."""
    h, w = image.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if not (ph or pw):
        return image
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(image, (0, pw, 0, ph), mode=mode)


def _check_space(model: CFMModel, space: LatentSpace | None) -> None:
    """The space must make the latents the model was trained on (channels and downscale)."""
    spec, have = model.config.latent, getattr(space, "spec", None)
    if have is not None and (have.channels, have.downscale) != (spec.channels, spec.downscale):
        raise CFMError(f"the latent space {have.name!r} makes {have.channels}-channel /{have.downscale} latents but "
                       f"this CFM model works in {spec.name!r} ({spec.channels} channels, /{spec.downscale}); pass "
                       "the space the model was trained in")


def check_image_range(image: torch.Tensor) -> None:
    """A float image in [0, 1]: 8-bit tensors (0–255) and [-1, 1] images would come back white or washed out."""
    if not image.is_floating_point():
        raise CFMError(f"image is a {str(image.dtype).replace('torch.', '')} tensor; pass floats in [0, 1] "
                       "(e.g. image.float() / 255 for 8-bit values)")
    if image.numel() == 0:
        raise CFMError(f"image of shape {tuple(image.shape)} is empty")
    if not torch.isfinite(image).all():
        raise CFMError("image contains NaN or inf values; check what produced it")
    low, high = float(image.min()), float(image.max())
    if low < -1e-3 or high > 1 + 1e-3:
        raise CFMError(f"image values span [{low:.3g}, {high:.3g}] but must lie in [0, 1] (divide 8-bit values by "
                       "255; map [-1, 1] images with (x + 1) / 2)")


def _space_device(space: LatentSpace, model: CFMModel) -> torch.device:
    return getattr(space, "device", model.device)
