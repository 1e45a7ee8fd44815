"""The coupling path and the training objectives (paper eq. 7–9) behind one interface.

Coupling flow matching (``cfm``): x0 = noise_augment(z_up), x1 = the high-res latent,
    x_t = t·x1 + (1 − (1 − σ_min)·t)·x0,   u_t = x1 − (1 − σ_min)·x0,   t ~ U[0, 1)
    loss = mean (v_θ(x_t, t, z_up) − u_t)²
With σ_min = 0 (the official default) this is the straight line x_t = t·x1 + (1−t)·x0 with target x1 − x0.

Baselines from the paper's ablation (Tab. 3), same network and data:
- ``fm``: naive flow matching, x0 ~ N(0, I); z_up is context only.
- ``l2`` / ``l1``: one-step regression. The network sees x_t = z_up at t = 0 and predicts the residual
  x1 − z_up, so one Euler step from z_up is the prediction; no noise augmentation.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .augment import DEFAULT_NOISE_STEP, gaussian_like, noise_augment
from .errors import CFMError

OBJECTIVES = ("cfm", "fm", "l2", "l1")
Velocity = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class PathSample:
    t: torch.Tensor
    x_t: torch.Tensor
    target: torch.Tensor


@dataclass(frozen=True)
class CouplingPath:
    """Straight conditional path between a coupled pair (x0, x1)."""

    sigma_min: float = 0.0

    def sample(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> PathSample:
        tb = t.reshape(-1, *([1] * (x1.ndim - 1))).to(x1.dtype)
        x_t = tb * x1 + (1 - (1 - self.sigma_min) * tb) * x0
        return PathSample(t=t, x_t=x_t, target=x1 - (1 - self.sigma_min) * x0)


@dataclass(frozen=True)
class LossResult:
    loss: torch.Tensor
    t: torch.Tensor


def start_point(objective: str, z_up: torch.Tensor, noise_step: int = DEFAULT_NOISE_STEP, *,
                seed: int | None = None, generator: torch.Generator | None = None,
                batch_indices: list[int] | None = None) -> torch.Tensor:
    """x0 of the ODE for ``objective``: augmented z_up (cfm), Gaussian noise (fm) or z_up itself (l1/l2)."""
    check_objective(objective)
    if objective == "cfm":
        return noise_augment(z_up, noise_step, seed=seed, generator=generator, batch_indices=batch_indices)
    if objective == "fm":
        return gaussian_like(z_up, seed=seed, generator=generator, batch_indices=batch_indices)
    return z_up


def check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise CFMError(f"objective={objective!r} is unknown; use one of {OBJECTIVES}")


def training_loss(velocity: Velocity, x1: torch.Tensor, z_up: torch.Tensor, objective: str = "cfm", *,
                  noise_step: int = DEFAULT_NOISE_STEP, sigma_min: float = 0.0,
                  generator: torch.Generator | None = None, t: torch.Tensor | None = None,
                  noise: torch.Tensor | None = None) -> LossResult:
    """The loss of one batch for ``objective`` (see the module docstring).

    ``t`` and ``noise`` may be given to make the batch independent of how it is split across processes;
    otherwise they are drawn from ``generator``.
    """
    check_objective(objective)
    b = x1.shape[0]
    if objective in ("l1", "l2"):
        t = torch.zeros(b, device=x1.device)
        v = velocity(z_up, t, z_up).float()
        err = v - (x1 - z_up).float()
        loss = err.abs().mean() if objective == "l1" else err.square().mean()
        return LossResult(loss=loss, t=t)
    if noise is None:
        noise = gaussian_like(z_up, generator=generator)
    x0 = noise_augment(z_up, noise_step, noise=noise) if objective == "cfm" else noise.to(z_up.dtype)
    if t is None:
        dev = generator.device if generator is not None else "cpu"
        t = torch.rand(b, generator=generator, device=dev)
    t = t.to(x1.device)
    s = CouplingPath(sigma_min).sample(x0, x1, t)
    v = velocity(s.x_t, t, z_up).float()
    return LossResult(loss=F.mse_loss(v, s.target.float()), t=t)
