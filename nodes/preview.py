"""Live previews while a CFM model solves its ODE, through ComfyUI's own preview machinery.

Every ODE step the solver reports x_t and the velocity it evaluated last; the node turns the estimate of the end
point, x̂1 = x_t + (1 − t)·v (:meth:`cfm_core.StepInfo.x1_estimate`, no extra network evaluation), into the
``("JPEG", PIL image, max size)`` tuple that ``comfy.utils.ProgressBar.update_absolute(step, total, preview)``
sends to the browser, exactly like KSampler's previews:

* latent models: ``latent_preview.get_previewer`` with the ComfyUI latent format of the model's VAE family
  (Latent2RGB, or TAESD when the user chose it and has the decoder), fed the latent the way samplers feed it
  (raw → ``latent_format.process_in``);
* pixel / space-to-depth models (e.g. the bundled one): the image itself, downscaled to the preview size.

The user's preview setting (``--preview-method``; ``none`` is ComfyUI's default) decides: with ``none`` nothing is
computed at all. Anything missing (an older ComfyUI without ``latent_preview``, a latent family without RGB
factors) means no preview, never an error.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from cfm_core import LatentScaling
from cfm_core.autoencoders import LatentSpec
from cfm_core.pipeline import weights_free_space

from .common import LOG

Preview = tuple  # ("JPEG", PIL.Image.Image, max_size): what ProgressBar.update_absolute takes as ``preview``
PreviewFn = Callable[[torch.Tensor], "Preview | None"]


def previews_enabled() -> bool:
    try:
        from comfy.cli_args import LatentPreviewMethod, args
    except ImportError:
        return False
    return args.preview_method != LatentPreviewMethod.NoPreviews


def comfy_latent_format(spec: LatentSpec):
    """ComfyUI's latent format for a CFM model's VAE family (its ``family``, else its name, else the channel
    count), or None."""
    try:
        import comfy.latent_formats as formats
    except ImportError:
        return None
    name = (getattr(spec, "family", "") or spec.name).lower()
    if spec.channels == 4:
        return formats.SDXL() if "xl" in name else formats.SD15()
    if spec.channels == 16:
        return formats.Flux() if "flux" in name else formats.SD3()
    return None


def latent_previewer(spec: LatentSpec, device: torch.device) -> PreviewFn | None:
    """model-space x̂1 → preview through ``latent_preview`` (Latent2RGB/TAESD), or None when previews are off."""
    if not previews_enabled():
        return None
    latent_format = comfy_latent_format(spec)
    if latent_format is None:
        return None
    try:
        import latent_preview

        previewer = latent_preview.get_previewer(device, latent_format)
    except Exception as exc:  # a preview must never break a run
        LOG.warning("CFM Boost: no latent preview (%s: %s)", type(exc).__name__, exc)
        return None
    if previewer is None:
        return None
    scaling = LatentScaling(float(spec.scale_factor), float(spec.shift_factor))

    def preview(z: torch.Tensor) -> Preview:
        sampler_space = latent_format.process_in(scaling.to_raw(z[:1].float()))
        return previewer.decode_latent_to_preview_image("JPEG", sampler_space)
    return preview


def pixel_previewer(model) -> PreviewFn | None:
    """model-space x̂1 of a pixel / space-to-depth model → the image, downscaled to the preview size."""
    if not previews_enabled():
        return None
    try:
        import latent_preview
    except ImportError:
        return None
    space = weights_free_space(model)
    max_size = int(getattr(latent_preview, "MAX_PREVIEW_RESOLUTION", 512) or 512)

    def preview(z: torch.Tensor) -> Preview:
        image = space.decode(z[:1].float())  # [1, 3, H, W] in [-1, 1]
        h, w = image.shape[-2:]
        if max(h, w) > max_size:  # area: a fair thumbnail; done here so the server has little to resize
            ratio = max_size / max(h, w)
            image = F.interpolate(image, size=(max(1, round(h * ratio)), max(1, round(w * ratio))), mode="area")
        return "JPEG", latent_preview.preview_to_image(image[0].movedim(0, -1)), max_size
    return preview


def make_previewer(model, device: torch.device) -> PreviewFn | None:
    """The preview function for a CFM model's own space (its model-space latents), or None."""
    spec = model.config.latent
    if spec.kind == "vae":
        return latent_previewer(spec, device)
    return pixel_previewer(model)
