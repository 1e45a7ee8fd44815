"""ODE solvers on fields with known solutions: exactness, convergence order, NFE, callbacks, bad arguments."""
from __future__ import annotations

import math

import pytest
import torch

from cfm_core.errors import CFMError
from cfm_core.solvers import SOLVERS, StepInfo, expected_nfe, integrate

FIXED = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
ORDER = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}


def decay(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """dx/dt = −x  ⇒  x(1) = x0·e⁻¹."""
    return -x


def x0_batch() -> torch.Tensor:
    return torch.tensor([[1.0, -2.0, 0.5]]).repeat(2, 1) * torch.tensor([[1.0], [3.0]])


def test_the_solver_table_is_what_the_docs_say():
    assert set(SOLVERS) == {"euler", "midpoint", "heun", "rk4", "dopri5"}
    assert {name: SOLVERS[name][1] for name in FIXED} == FIXED
    assert expected_nfe("rk4", 39) == 156  # the official validation setting: rk4 on linspace(0, 1, 40)


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_a_straight_line_field_is_integrated_exactly_in_one_step(solver):
    x0 = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    x1 = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(1))
    result = integrate(lambda x, t: x1 - x0, x0, solver=solver, steps=1)
    torch.testing.assert_close(result.x, x1, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("solver", ["midpoint", "heun", "rk4"])
def test_a_time_linear_field_is_exact_for_second_order_solvers(solver):
    """dx/dt = t ⇒ x(1) = x0 + ½ — exact for midpoint/trapezoid/rk4 with any step count."""
    x0 = x0_batch()
    for steps in (1, 3):
        result = integrate(lambda x, t: t[:, None].expand_as(x), x0, solver=solver, steps=steps)
        torch.testing.assert_close(result.x, x0 + 0.5, atol=1e-6, rtol=0)


def test_euler_on_a_time_linear_field_is_the_left_riemann_sum():
    x0 = x0_batch()
    for steps in (1, 4, 10):
        result = integrate(lambda x, t: t[:, None].expand_as(x), x0, solver="euler", steps=steps)
        torch.testing.assert_close(result.x, x0 + (steps - 1) / (2 * steps), atol=1e-6, rtol=0)


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_exponential_decay_is_solved_accurately(solver):
    x0 = x0_batch()
    result = integrate(decay, x0, solver=solver, steps=64)
    tol = {"euler": 1e-2, "midpoint": 1e-4, "heun": 1e-4, "rk4": 1e-6, "dopri5": 1e-3}[solver]
    torch.testing.assert_close(result.x, x0 * math.exp(-1), atol=tol * 3, rtol=0)


def test_time_dependent_growth_dx_dt_equals_t_x():
    """dx/dt = t·x ⇒ x(1) = x0·e^{1/2}."""
    x0 = x0_batch()
    result = integrate(lambda x, t: t[:, None] * x, x0, solver="rk4", steps=16)
    torch.testing.assert_close(result.x, x0 * math.exp(0.5), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("solver", sorted(FIXED))
def test_convergence_order(solver):
    """Halving the step divides the error by 2^order."""
    x0 = torch.tensor([[1.0]], dtype=torch.float32)
    exact = math.exp(-1)
    steps = {"euler": (16, 32), "midpoint": (8, 16), "heun": (8, 16), "rk4": (4, 8)}[solver]
    errors = [abs(integrate(decay, x0, solver=solver, steps=n).x.item() - exact) for n in steps]
    ratio = errors[0] / errors[1]
    print(f"{solver}: errors {errors[0]:.3e} → {errors[1]:.3e}, ratio {ratio:.2f} (2^order = {2 ** ORDER[solver]})")
    assert 2 ** ORDER[solver] * 0.75 < ratio < 2 ** ORDER[solver] * 1.35


@pytest.mark.parametrize("solver", sorted(FIXED))
@pytest.mark.parametrize("steps", [1, 3, 7])
def test_nfe_is_steps_times_evaluations_per_step(solver, steps):
    calls = []

    def field(x, t):
        calls.append(float(t[0]))
        return -x

    result = integrate(field, x0_batch(), solver=solver, steps=steps)
    assert result.nfe == len(calls) == steps * FIXED[solver] == expected_nfe(solver, steps)
    assert result.steps == steps and result.solver == solver
    assert min(calls) >= 0.0 and max(calls) <= 1.0


def test_dopri5_counts_its_evaluations_and_ignores_steps():
    calls = []

    def field(x, t):
        calls.append(1)
        return torch.sin(3 * x) + t[:, None]

    result = integrate(field, x0_batch(), solver="dopri5", steps=5)
    assert result.nfe == len(calls) > 0
    assert expected_nfe("dopri5", 5) is None
    assert result.steps >= 1


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_callback_once_per_step_with_increasing_t_and_the_state_at_that_t(solver):
    seen: list[StepInfo] = []
    x0 = x0_batch()
    result = integrate(decay, x0, solver=solver, steps=5, callback=seen.append)
    assert len(seen) == result.steps
    assert [info.step for info in seen] == list(range(1, result.steps + 1))
    times = [info.t for info in seen]
    assert all(a < b for a, b in zip(times, times[1:])) and times[-1] == 1.0
    assert [info.nfe for info in seen] == sorted(info.nfe for info in seen) and seen[-1].nfe == result.nfe
    if solver in FIXED:
        assert times == pytest.approx([i / 5 for i in range(1, 6)])
        assert all(info.total == 5 for info in seen)
    for info in seen:  # the state reported at t is the solution at t, not the one a step earlier
        expected = x0 * (0.8 ** info.step if solver == "euler" else math.exp(-info.t))
        torch.testing.assert_close(info.x, expected, atol=0.02, rtol=0.02)
    assert torch.equal(seen[-1].x, result.x)


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_x1_estimate_follows_the_latest_velocity_without_evaluating_the_field(solver):
    """x̂1 = x_t + (1 − t)·v at the latest evaluation (the preview): exact on a straight path, no extra evaluation."""
    target = torch.tensor([[2.0, -1.0, 0.5]])
    x0 = torch.zeros(1, 3)
    seen: list[tuple[int, torch.Tensor]] = []
    calls = []

    def straight(x, t):  # the straight path to ``target``: v = (target − x)/(1 − t), with v(·, 1) := target − x
        calls.append(1)
        return (target - x) / (1 - t[:, None]).clamp_min(1e-3)

    integrate(straight, x0, solver=solver, steps=4, callback=lambda info: seen.append((info.nfe, info.x1_estimate())))
    assert seen and len(calls) == seen[-1][0]  # estimates came from evaluations the solver made anyway
    for _, estimate in seen:
        torch.testing.assert_close(estimate, target, atol=2e-3, rtol=1e-3)
    euler: list[StepInfo] = []
    result = integrate(decay, x0_batch(), solver="euler", steps=3, callback=euler.append)
    torch.testing.assert_close(euler[-1].x1_estimate(), result.x)  # Euler's last step is its own estimate
    first = euler[0]
    torch.testing.assert_close(first.x1_estimate(), first.x + (1 - first.t) * decay(x0_batch(), None))  # v(x0)


class Stop(Exception):
    pass


@pytest.mark.parametrize("solver", ["euler", "rk4", "dopri5"])
def test_raising_in_the_callback_cancels_the_solve(solver):
    calls = []

    def field(x, t):
        calls.append(1)
        return -x

    def callback(info: StepInfo):
        if info.step == 2:
            raise Stop

    with pytest.raises(Stop):
        integrate(field, x0_batch(), solver=solver, steps=10, callback=callback)
    if solver != "dopri5":
        assert len(calls) == 2 * FIXED[solver]  # nothing after the second step was evaluated


@pytest.mark.parametrize("steps", [0, -3, 2.5, "4", True, None])
def test_bad_steps_are_refused(steps):
    with pytest.raises(CFMError, match="steps"):
        integrate(decay, x0_batch(), solver="euler", steps=steps)


def test_unknown_solver_is_refused():
    with pytest.raises(CFMError, match="solver"):
        integrate(decay, x0_batch(), solver="rk45")
    with pytest.raises(CFMError, match="solver"):
        expected_nfe("dpm++", 4)


def test_the_result_is_float32_and_the_input_is_not_modified():
    x0 = x0_batch().double()
    before = x0.clone()
    result = integrate(decay, x0, solver="heun", steps=2)
    assert result.x.dtype == torch.float32 and result.seconds >= 0
    assert torch.equal(x0, before)
