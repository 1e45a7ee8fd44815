"""Integrate dx/dt = v(x, t) from t = 0 to t = 1 with torchdiffeq.

``steps`` are integration steps on the uniform grid linspace(0, 1, steps + 1). Network evaluations per step:
euler 1, midpoint 2, heun 2, rk4 4 (torchdiffeq's 3/8 rule); dopri5 is adaptive (atol/rtol) and ignores
``steps``. The number of evaluations actually made (NFE) is counted and returned.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torchdiffeq import odeint

from .errors import CFMError

# our name -> (torchdiffeq method, evaluations per step; 0 = adaptive)
SOLVERS: dict[str, tuple[str, int]] = {
    "euler": ("euler", 1),
    "midpoint": ("midpoint", 2),
    "heun": ("heun2", 2),
    "rk4": ("rk4", 4),
    "dopri5": ("dopri5", 0),
}
# fixed-grid solvers whose last stage evaluates the velocity at the end of the step, i.e. at t = 1 on the last step
ENDPOINT_SOLVERS = frozenset({"heun", "rk4"})


@dataclass(frozen=True)
class StepInfo:
    """Passed to the per-step callback after each accepted step."""

    step: int
    total: int  # planned steps (fixed-grid) or 0 for adaptive solvers
    t: float
    nfe: int
    x: torch.Tensor
    # (x_t, t, v) of the latest network evaluation, which may be an intermediate stage of the step
    evaluation: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    def x1_estimate(self) -> torch.Tensor:
        """The model's current guess of the end point, x̂1 = x_t + (1 − t)·v, from its latest evaluation (x_t, t, v):
        where the straight path it points along lands. No extra network evaluation; for Euler the last step's
        estimate is x1 itself. Used for previews."""
        if self.evaluation is None:
            return self.x
        x_t, t, v = self.evaluation
        return x_t + (1.0 - t) * v


@dataclass(frozen=True)
class SolveResult:
    x: torch.Tensor
    nfe: int
    steps: int
    solver: str
    seconds: float


def expected_nfe(solver: str, steps: int) -> int | None:
    """Network evaluations a fixed-grid solver makes for ``steps`` steps (None for adaptive solvers)."""
    per_step = SOLVERS[check_solver(solver)][1]
    return per_step * steps if per_step else None


def check_solver(solver: str) -> str:
    if solver not in SOLVERS:
        raise CFMError(f"solver={solver!r} is unknown; use one of {sorted(SOLVERS)}")
    return solver


MAX_STEPS = 10000  # the paper's CFM needs ≤ 40; a typo like 1000000000 would allocate a 4 GB time grid


def check_steps(steps: int) -> int:
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_STEPS:
        raise CFMError(f"steps={steps!r} must be an integer in [1, {MAX_STEPS}] (number of integration steps)")
    return steps


class _Field:
    """The ODE right-hand side handed to torchdiffeq: counts evaluations and reports steps."""

    def __init__(self, velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], total: int,
                 callback: Callable[[StepInfo], None] | None):
        self.velocity, self.total, self.callback = velocity, total, callback
        self.nfe, self.step = 0, 0
        self.evaluation: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def __call__(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        v = self.velocity(x, t.reshape(1).expand(x.shape[0]))
        self.evaluation = (x, t, v)  # references only: kept for StepInfo.x1_estimate, computed on demand
        return v

    def _report(self, t: float, x: torch.Tensor) -> None:
        if self.callback is not None:
            self.callback(StepInfo(self.step, self.total, t, self.nfe, x, self.evaluation))

    def _begin_step(self, t0, y0, dt) -> None:
        """torchdiffeq hands us the state *before* a step (t0, y0): that is the result of the previous step."""
        if self.step:
            self._report(float(t0), y0)
        self.step += 1


class _FixedGridField(_Field):
    def callback_step(self, t0, y0, dt) -> None:  # called before each step
        self._begin_step(t0, y0, dt)


class _AdaptiveField(_Field):
    # Called once per accepted step, also with the pre-step state (t0, y0); y1 is never passed to callbacks.
    def callback_accept_step(self, t0, y0, dt) -> None:
        self._begin_step(t0, y0, dt)


def integrate(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor, *,
              solver: str = "euler", steps: int = 4, atol: float = 1e-6, rtol: float = 1e-3,
              callback: Callable[[StepInfo], None] | None = None) -> SolveResult:
    """Solve from x0 at t=0 to t=1. ``velocity(x, t)`` takes t as a [B] tensor. Raising in ``callback`` cancels."""
    method, per_step = SOLVERS[check_solver(solver)]
    check_steps(steps)
    field = (_FixedGridField if per_step else _AdaptiveField)(velocity, steps if per_step else 0, callback)
    start = time.perf_counter()
    t = torch.tensor([0.0, 1.0], dtype=torch.float32, device=x0.device)
    x0 = x0.float()
    with torch.no_grad():
        if per_step:
            grid = torch.linspace(0, 1, steps + 1, dtype=torch.float32, device=x0.device)
            out = odeint(field, x0, t, method=method, options={"grid_constructor": lambda f, y, tt: grid})
        else:
            out = odeint(field, x0, t, method=method, atol=atol, rtol=rtol)
    x1 = out[-1]
    if field.step:  # each step is reported when the next one begins; report the last one here
        field._report(1.0, x1)
    return SolveResult(x=x1, nfe=field.nfe, steps=field.step, solver=solver,
                       seconds=time.perf_counter() - start)
