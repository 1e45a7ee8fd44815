"""Running a CFM model inside ComfyUI: GPU loading, progress, interruption and the out-of-memory retry.

Every node that integrates the ODE goes through :func:`run_model`:

1. ``load_models_gpu([patcher], memory_required=estimate, force_full_load=True)``: ComfyUI evicts other models
   if needed. ``force_full_load`` because the UNet is built from plain ``torch.nn`` layers, which ComfyUI's partial
   ("lowvram") loading would leave on the CPU.
2. One ProgressBar tick per ODE step, with a preview of the current x̂1 when the user has previews on
   (:mod:`.preview`); ``throw_exception_if_processing_interrupted`` before every network evaluation (and every
   tile), so Cancel stops the run within a step.
3. On out-of-memory: retry with velocity tiles of half the size (untiled → half the latent's longest side →
   halves), like ComfyUI's ImageUpscaleWithModel, down to :data:`MIN_TILE` latent pixels.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import comfy.model_management as mm
import comfy.utils
import torch

from cfm_core import CFMConfig, CFMError, StepInfo, boost
from cfm_core.pipeline import estimate_memory
from cfm_core.solvers import SOLVERS

from .common import LOG, check_finite
from .model_handle import CFMModelHandle
from .oom import is_oom
from .preview import PreviewFn, make_previewer

T = TypeVar("T")
MIN_TILE = 16
SOLVER_CHOICES = ["default", *SOLVERS]
NFE_HELP = ("Cost = steps × network evaluations per step (NFE): euler 1, midpoint 2, heun 2, rk4 4; dopri5 is "
            "adaptive and ignores steps. The paper's CFM works well with few NFE (e.g. euler × 4-10).")


@dataclass(frozen=True)
class SolveSettings:
    """What the user chose on the node; ``None`` means the model's default."""

    solver: str | None = None
    steps: int | None = None
    seed: int = 0
    noise_step: int | None = None
    tile: int = 0  # latent pixels; 0 = untiled unless out of memory
    overlap: int = 8

    @classmethod
    def from_inputs(cls, solver: str = "default", steps: int = 0, seed: int = 0, noise_step: int = -1,
                    tile: int = 0, overlap: int = 8) -> SolveSettings:
        return cls(solver=None if solver == "default" else solver, steps=int(steps) or None, seed=int(seed),
                   noise_step=None if noise_step < 0 else int(noise_step), tile=int(tile), overlap=int(overlap))

    def planned_steps(self, config: CFMConfig) -> int:
        return config.solve_plan(self.solver, self.steps or None)[1]


def _progress(pbar: comfy.utils.ProgressBar, planned: int,
              preview: PreviewFn | None = None) -> Callable[[StepInfo], None]:
    """One progress tick per ODE step, with a preview of x̂1 when the user has previews on."""
    def callback(info: StepInfo) -> None:
        image = None
        if preview is not None:
            with torch.no_grad():
                image = preview(info.x1_estimate())
        pbar.update_absolute(info.step, info.total or max(planned, info.step), image)  # adaptive: total unknown
    return callback


def run_model(handle: CFMModelHandle, latent_shape: tuple[int, ...], settings: SolveSettings,
              attempt: Callable[[int | None, int, Callable[[StepInfo], None], Callable[[], None]], T]) -> T:
    """Call ``attempt(tile, overlap, callback, interrupt)`` with the model on its device; retry tiled on OOM."""
    config = handle.config
    tile = settings.tile or None
    mm.load_models_gpu([handle.patcher], memory_required=estimate_memory(config, latent_shape, handle.model.dtype,
                                                                          tile), force_full_load=True)
    planned = settings.planned_steps(config)
    caveat = config.solver_caveat(config.solve_plan(settings.solver, settings.steps)[0])
    if caveat:
        LOG.warning("CFM: %s", caveat)
    preview = make_previewer(handle.model, handle.load_device)
    while True:
        pbar = comfy.utils.ProgressBar(planned)
        overlap = min(settings.overlap, tile // 2) if tile else settings.overlap
        try:
            return attempt(tile, overlap, _progress(pbar, planned, preview),
                           mm.throw_exception_if_processing_interrupted)
        except Exception as exc:
            if not is_oom(exc):
                raise
        # Retry outside the except block so the failed attempt's tensors (held by the traceback) can be freed.
        mm.soft_empty_cache()
        tile = (max(latent_shape[-2:]) if tile is None else tile) // 2
        if tile < MIN_TILE:
            raise CFMError(f"the CFM model ran out of memory even in {MIN_TILE}×{MIN_TILE} latent tiles; free VRAM "
                           "(unload other models), lower the batch size or upscale a smaller image")
        LOG.warning("CFM Boost: out of memory, retrying with %d×%d latent tiles", tile, tile)


def solve_latent(handle: CFMModelHandle, z_up: torch.Tensor, settings: SolveSettings, *,
                 x0: torch.Tensor | None = None, batch_indices: list[int] | None = None) -> torch.Tensor:
    """Model-space z_up (and optional start x0) → model-space x1 on ComfyUI's intermediate device."""
    def attempt(tile, overlap, callback, interrupt):
        return boost(handle.model, z_up, solver=settings.solver, steps=settings.steps, seed=settings.seed,
                     noise_step=settings.noise_step, tile=tile, overlap=overlap, batch_indices=batch_indices,
                     x0=x0, callback=callback, interrupt=interrupt)

    result = run_model(handle, tuple(z_up.shape), settings, attempt)
    check_output(handle, result.latent)
    return result.latent.float().to(mm.intermediate_device())


def check_output(handle: CFMModelHandle, out: torch.Tensor) -> None:
    dtype = str(handle.model.dtype).replace("torch.", "")
    check_finite(out, "the CFM model's output", f"the model ran in {dtype}: set dtype to fp32 in CFMLoader, "
                 "and check that the input latent came from the VAE the model was trained for")
