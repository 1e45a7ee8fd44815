"""The coupling path (x_t, target, σ_min), the start point of each objective, and that every objective trains."""
from __future__ import annotations

import math
import time

import pytest
import torch
from helpers import tiny_model

from cfm_core.augment import alpha_bar
from cfm_core.errors import CFMError
from cfm_core.path import OBJECTIVES, CouplingPath, output_to_velocity, start_point, training_loss


def pair(seed: int = 0, shape=(3, 4, 5, 5)):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)


@pytest.mark.parametrize("sigma_min", [0.0, 0.1])
def test_path_formulas(sigma_min):
    x0, x1 = pair()
    t = torch.tensor([0.0, 0.3, 1.0])
    s = CouplingPath(sigma_min).sample(x0, x1, t)
    tb = t[:, None, None, None]
    torch.testing.assert_close(s.x_t, tb * x1 + (1 - (1 - sigma_min) * tb) * x0)
    torch.testing.assert_close(s.target, x1 - (1 - sigma_min) * x0)
    torch.testing.assert_close(s.x_t[0], x0[0])  # t = 0: the start
    torch.testing.assert_close(s.x_t[2], x1[2] + sigma_min * x0[2])  # t = 1: the data (+ σ_min·x0)
    assert torch.equal(s.t, t)


def test_the_target_is_the_time_derivative_of_the_path():
    x0, x1 = pair(1)
    path = CouplingPath(0.05)
    t, h = torch.full((3,), 0.4, dtype=torch.float64), 1e-4
    x0, x1 = x0.double(), x1.double()
    derivative = (path.sample(x0, x1, t + h).x_t - path.sample(x0, x1, t - h).x_t) / (2 * h)
    torch.testing.assert_close(derivative, path.sample(x0, x1, t).target, atol=1e-8, rtol=1e-6)


def test_the_official_default_is_the_straight_line():
    x0, x1 = pair(2)
    t = torch.rand(3)
    s = CouplingPath().sample(x0, x1, t)
    torch.testing.assert_close(s.x_t, t[:, None, None, None] * x1 + (1 - t[:, None, None, None]) * x0)
    torch.testing.assert_close(s.target, x1 - x0)


def test_start_points_of_the_objectives():
    z_up = torch.randn(2, 4, 6, 6)
    ab = alpha_bar(400)
    from cfm_core.augment import batch_stable_noise
    eps = batch_stable_noise((2, 4, 6, 6), seed=3)
    torch.testing.assert_close(start_point("cfm", z_up, 400, seed=3), math.sqrt(ab) * z_up + math.sqrt(1 - ab) * eps)
    torch.testing.assert_close(start_point("fm", z_up, 400, seed=3), eps)  # pure noise; z_up is context only
    for objective in ("l1", "l2"):
        assert start_point(objective, z_up, 400, seed=3) is z_up
    with pytest.raises(CFMError, match="objective"):
        start_point("ddpm", z_up)
    with pytest.raises(CFMError, match="objective"):
        training_loss(lambda x, t, z: x, z_up, z_up, "ddpm")


def test_regression_losses_see_z_up_at_t_zero_and_target_the_residual():
    z_up, x1 = pair(4)
    seen = {}

    def oracle(x, t, z):
        seen["x"], seen["t"] = x, t
        return x1 - z

    for objective in ("l1", "l2"):
        result = training_loss(oracle, x1, z_up, objective)
        assert result.loss.item() == pytest.approx(0.0, abs=1e-12)
        assert torch.equal(seen["x"], z_up) and torch.count_nonzero(seen["t"]) == 0
    off_by_one = training_loss(lambda x, t, z: x1 - z + 1, x1, z_up, "l1").loss
    assert off_by_one.item() == pytest.approx(1.0)
    off_by_two = training_loss(lambda x, t, z: x1 - z + 2, x1, z_up, "l2").loss
    assert off_by_two.item() == pytest.approx(4.0)


def test_cfm_loss_is_the_mse_to_x1_minus_x0():
    """A velocity that recovers u = x1 − x0 from (x_t, t) and knows x1 gives zero loss; v = 0 gives E|u|²."""
    z_up, x1 = pair(5)

    def oracle(x_t, t, z):  # x_t = t·x1 + (1−t)·x0  ⇒  x1 − x0 = (x1 − x_t)/(1 − t)
        return (x1 - x_t) / (1 - t[:, None, None, None])

    assert training_loss(oracle, x1, z_up, "cfm", generator=torch.Generator().manual_seed(0)).loss.item() < 1e-8
    gen = torch.Generator().manual_seed(0)
    zero = training_loss(lambda x, t, z: torch.zeros_like(x), x1, z_up, "cfm", generator=gen)
    ab = alpha_bar(400)  # E|x1 − √ab·z_up − √(1−ab)·ε|² over the batch
    expected = (x1 - math.sqrt(ab) * z_up).square().mean().item() + (1 - ab)
    assert zero.loss.item() == pytest.approx(expected, rel=0.15)
    assert zero.t.shape == (3,) and bool(((zero.t >= 0) & (zero.t < 1)).all())


def toy_batch(gen: torch.Generator, batch: int = 8, size: int = 8):
    """A fixed synthetic coupling: x1 = z_up + a fixed pattern + a little per-sample detail."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    pattern = torch.stack([torch.sin(xx * 0.8), torch.cos(yy * 0.8), torch.sin((xx + yy) * 0.5), -torch.cos(xx)])
    z_up = torch.randn(batch, 4, size, size, generator=gen) * 0.5
    return z_up, z_up + pattern + 0.05 * torch.randn(batch, 4, size, size, generator=gen)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_every_objective_trains_on_a_toy_coupling(objective):
    torch.manual_seed(0)
    model = tiny_model(seed=0, randomize=False).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    losses, start = [], time.perf_counter()
    for _ in range(40):
        z_up, x1 = toy_batch(gen)
        loss = training_loss(model, x1, z_up, objective, generator=gen).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(f"{objective}: loss {first:.4f} → {last:.4f} in {time.perf_counter() - start:.1f} s")
    assert all(math.isfinite(v) for v in losses)
    assert last < 0.6 * first


# ------------------------------------------------------------------ residual (x̂1 − z_up) prediction

@pytest.mark.parametrize("sigma_min", [0.0, 0.1])
def test_a_perfect_residual_gives_the_path_target(sigma_min):
    """If the network outputs exactly x1 − z_up, the implied velocity is u_t of the path at every t < 1."""
    x0, x1 = pair(6)
    z_up = pair(7)[0]
    t = torch.tensor([0.0, 0.4, 0.9])
    s = CouplingPath(sigma_min).sample(x0, x1, t)
    v = output_to_velocity(x1 - z_up, s.x_t, t, z_up, "residual", sigma_min)
    torch.testing.assert_close(v, s.target, rtol=1e-5, atol=1e-5)


def test_one_euler_step_of_a_residual_model_is_its_x1_estimate():
    """From any x0 at t = 0, x0 + v = z_up + output: the noise in x0 cancels analytically, not by learning."""
    x0, z_up = pair(8)
    out = torch.randn_like(z_up)
    v = output_to_velocity(out, x0, torch.zeros(3), z_up, "residual")
    torch.testing.assert_close(x0 + v, z_up + out)


def test_residual_prediction_is_bounded_near_t_one_and_unknown_names_are_refused():
    x_t, z_up = pair(9)
    v = output_to_velocity(torch.zeros_like(z_up), x_t, torch.ones(3), z_up, "residual")
    assert torch.isfinite(v).all()  # 1 − t is floored, no division by zero
    torch.testing.assert_close(output_to_velocity(x_t, x_t, 0.5, z_up, "velocity"), x_t)
    with pytest.raises(CFMError, match="prediction"):
        output_to_velocity(x_t, x_t, 0.5, z_up, "epsilon")


def test_residual_loss_is_zero_for_the_oracle_and_the_model_applies_its_parametrization():
    z_up, x1 = pair(10)
    loss = training_loss(lambda x, t, z: x1 - z, x1, z_up, "cfm", prediction="residual",
                         generator=torch.Generator().manual_seed(0)).loss
    assert loss.item() < 1e-10
    model = tiny_model(seed=1, prediction="residual")
    z = torch.randn(1, 4, 16, 16)
    with torch.no_grad():
        raw = model.net(z, torch.zeros(1), z)
        torch.testing.assert_close(model(z, torch.zeros(1), z), raw.float(), rtol=1e-5, atol=1e-5)  # x_t = z_up, t=0


def test_x1_weighting_of_a_residual_model_is_the_mse_of_its_x1_estimate():
    z_up, x1 = pair(11)
    noise = torch.randn_like(z_up)
    t = torch.tensor([0.0, 0.5, 0.9])
    out = torch.randn_like(z_up)  # any network output: x̂1 = z_up + out
    res = training_loss(lambda x, tt, z: out, x1, z_up, "cfm", t=t, noise=noise, prediction="residual",
                        weighting="x1")
    assert res.loss.item() == pytest.approx((z_up + out - x1).square().mean().item(), rel=1e-5)
    plain = training_loss(lambda x, tt, z: out, x1, z_up, "cfm", t=t, noise=noise, prediction="residual")
    assert plain.loss.item() > res.loss.item()  # the velocity loss divides by (1 − t)²
    with pytest.raises(CFMError, match="weighting"):
        training_loss(lambda x, tt, z: out, x1, z_up, "cfm", t=t, noise=noise, weighting="snr")
