"""The coupling path and the training objectives (paper eq. 7–9) behind one interface.

Coupling flow matching (``cfm``): x0 = noise_augment(z_up), x1 = the high-res latent,
    x_t = t·x1 + (1 − (1 − σ_min)·t)·x0,   u_t = x1 − (1 − σ_min)·x0,   t ~ U[0, 1)
    loss = mean (v_θ(x_t, t, z_up) − u_t)²
With σ_min = 0 (the official default) this is the straight line x_t = t·x1 + (1−t)·x0 with target x1 − x0.

Baselines from the paper's ablation (Tab. 3), same network and data:
- ``fm``: naive flow matching, x0 ~ N(0, I); z_up is context only.
- ``l2`` / ``l1``: one-step regression. The network sees x_t = z_up at t = 0 and predicts the residual
  x1 − z_up, so one Euler step from z_up is the prediction; no noise augmentation.

What the network outputs (``prediction``), the loss being the same velocity MSE either way:
- ``velocity`` (official): the output is v.
- ``residual``: the output is r = x̂1 − z_up, an estimate of the clean target relative to the clean context, and
      v = x̂1 − (1 − σ_min)·x̂0,   x̂0 = (x_t − t·x̂1) / max(1 − (1 − σ_min)·t, 0.05)
  (from inverting x_t = t·x1 + (1 − (1 − σ_min)t)·x0). A small network no longer has to reproduce the
  augmentation noise pixel by pixel to cancel it: one Euler step from t = 0 lands on x̂1 directly, i.e. on the
  regression estimate, and a regression (l2) network of the same architecture is a ready initialisation.

How the times are weighted (``weighting``, cfm/fm only):
- ``velocity`` (official): mean (v − u_t)².
- ``x1``: mean (1 − (1 − σ_min)·t)² (v − u_t)², which for residual prediction is exactly the MSE of x̂1. The velocity
  loss weights t → 1 up to 400× more than t = 0, but a few-step Euler solve only ever evaluates the network at
  t = 0, 1/N, …, 1 − 1/N; the x1 weighting gives those times their share.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .augment import DEFAULT_NOISE_STEP, gaussian_like, noise_augment
from .errors import CFMError

OBJECTIVES = ("cfm", "fm", "l2", "l1")
PREDICTIONS = ("velocity", "residual")
WEIGHTINGS = ("velocity", "x1")
MIN_REMAINING = 0.05  # floor of 1 − (1 − σ_min)·t in the residual → velocity conversion
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


def start_point(objective: str, z_up: torch.Tensor, noise_step: int | torch.Tensor = DEFAULT_NOISE_STEP, *,
                seed: int | None = None, generator: torch.Generator | None = None,
                batch_indices: list[int] | None = None) -> torch.Tensor:
    """x0 of the ODE for ``objective``: augmented z_up (cfm), Gaussian noise (fm) or z_up itself (l1/l2)."""
    check_objective(objective)
    if objective == "cfm":
        return noise_augment(z_up, noise_step, seed=seed, generator=generator, batch_indices=batch_indices)
    if objective == "fm":
        return gaussian_like(z_up, seed=seed, generator=generator, batch_indices=batch_indices)
    return z_up


def check_prediction(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise CFMError(f"prediction={prediction!r} is unknown; use one of {PREDICTIONS}")


def _remaining(t: torch.Tensor, sigma_min: float, ndim: int) -> torch.Tensor:
    """1 − (1 − σ_min)·t, floored at MIN_REMAINING, shaped to broadcast over a batch of ``ndim``-D tensors."""
    return (1 - (1 - sigma_min) * t.float()).clamp_min(MIN_REMAINING).reshape(-1, *([1] * (ndim - 1)))


def output_to_velocity(out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | float, z_up: torch.Tensor,
                       prediction: str = "velocity", sigma_min: float = 0.0) -> torch.Tensor:
    """The velocity implied by the network output ``out`` (see the module docstring), in float32."""
    if prediction == "velocity":
        return out.float()
    check_prediction(prediction)
    t = torch.as_tensor(t, dtype=torch.float32, device=x_t.device).reshape(-1, *([1] * (x_t.ndim - 1)))
    x1_hat = z_up.float() + out.float()
    x0_hat = (x_t.float() - t * x1_hat) / _remaining(t, sigma_min, x_t.ndim)
    return x1_hat - (1 - sigma_min) * x0_hat


def parametrized(net: Velocity, prediction: str = "velocity", sigma_min: float = 0.0) -> Velocity:
    """Wrap a raw network so that it returns velocities whatever it was trained to output."""
    if prediction == "velocity":
        return net
    check_prediction(prediction)
    return lambda x_t, t, z_up: output_to_velocity(net(x_t, t, z_up), x_t, t, z_up, prediction, sigma_min)


def check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise CFMError(f"objective={objective!r} is unknown; use one of {OBJECTIVES}")


def training_loss(velocity: Velocity, x1: torch.Tensor, z_up: torch.Tensor, objective: str = "cfm", *,
                  noise_step: int = DEFAULT_NOISE_STEP, sigma_min: float = 0.0,
                  generator: torch.Generator | None = None, t: torch.Tensor | None = None,
                  noise: torch.Tensor | None = None, prediction: str = "velocity",
                  weighting: str = "velocity") -> LossResult:
    """The loss of one batch for ``objective`` (see the module docstring).

    ``t`` and ``noise`` may be given to make the batch independent of how it is split across processes;
    otherwise they are drawn from ``generator``.
    """
    check_objective(objective)
    if weighting not in WEIGHTINGS:
        raise CFMError(f"weighting={weighting!r} is unknown; use one of {WEIGHTINGS}")
    velocity = parametrized(velocity, prediction, sigma_min)
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
    if weighting == "velocity":
        return LossResult(loss=F.mse_loss(v, s.target.float()), t=t)
    return LossResult(loss=((v - s.target.float()) * _remaining(t, sigma_min, v.ndim)).square().mean(), t=t)
