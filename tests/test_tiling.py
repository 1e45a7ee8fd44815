"""Tiled velocity: tile placement, the blend is a partition of unity, and tiled ≈ untiled on a real network."""
from __future__ import annotations

import pytest
import torch
from helpers import tiny_model

from cfm_core.errors import CFMError
from cfm_core.path import start_point
from cfm_core.pipeline import boost
from cfm_core.tiling import TiledVelocity, tile_starts


@pytest.mark.parametrize("size, tile, overlap", [(64, 32, 8), (100, 32, 8), (33, 32, 4), (48, 16, 0), (20, 32, 8)])
def test_tiles_cover_the_image_with_at_least_the_overlap(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    if size <= tile:
        assert starts == [0]
        return
    assert starts[0] == 0 and starts[-1] + tile == size
    for a, b in zip(starts, starts[1:]):
        assert b > a and a + tile - b >= overlap  # consecutive tiles overlap by ≥ overlap


def pointwise(x: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return torch.sin(3 * x) * t[:, None, None, None] + z ** 2


def test_blending_a_pointwise_field_is_exact():
    """Weights are normalised per pixel, so any field that does not look at neighbours is reproduced exactly."""
    gen = torch.Generator().manual_seed(0)
    x, z = torch.randn(2, 4, 45, 70, generator=gen), torch.randn(2, 4, 45, 70, generator=gen)
    t = torch.tensor([0.3, 0.6])
    calls = []

    def counted(x_t, t_, z_up):
        calls.append(tuple(x_t.shape[-2:]))
        return pointwise(x_t, t_, z_up)

    tiled = TiledVelocity(counted, tile=16, overlap=6, stride=4)(x, t, z)
    torch.testing.assert_close(tiled, pointwise(x, t, z), atol=1e-6, rtol=1e-6)
    assert len(calls) == len(tile_starts(45, 16, 6)) * len(tile_starts(70, 16, 6)) > 4
    assert set(calls) == {(16, 16)}


def test_tile_size_is_rounded_to_the_network_stride_and_small_inputs_pass_through():
    calls = []

    def counted(x_t, t_, z_up):
        calls.append(tuple(x_t.shape[-2:]))
        return pointwise(x_t, t_, z_up)

    tiled = TiledVelocity(counted, tile=18, overlap=4, stride=8)
    assert tiled.tile == 16
    x = torch.randn(1, 4, 16, 12)
    out = tiled(x, torch.tensor([0.5]), x)
    assert calls == [(16, 12)] and torch.equal(out, pointwise(x, torch.tensor([0.5]), x))


def test_interrupt_is_checked_for_every_tile():
    checks = []
    tiled = TiledVelocity(pointwise, tile=8, overlap=2, interrupt=lambda: checks.append(1))
    x = torch.randn(1, 4, 20, 20)
    tiled(x, torch.tensor([0.5]), x)
    assert len(checks) == len(tile_starts(20, 8, 2)) ** 2

    def stop():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        TiledVelocity(pointwise, tile=8, overlap=2, interrupt=stop)(x, torch.tensor([0.5]), x)


def test_an_overlap_left_larger_than_the_rounded_tile_is_reduced():
    tiled = TiledVelocity(pointwise, tile=18, overlap=17, stride=8)  # valid as given; the tile rounds to 16
    assert tiled.tile == 16 and tiled.overlap == 8
    x = torch.randn(1, 4, 40, 40)
    torch.testing.assert_close(tiled(x, torch.tensor([0.5]), x), pointwise(x, torch.tensor([0.5]), x))


@pytest.mark.parametrize("tile, overlap", [(0, 0), (8, 8), (8, -1), (8, 12)])
def test_bad_tile_settings_are_refused(tile, overlap):
    with pytest.raises(CFMError, match="tile"):
        TiledVelocity(pointwise, tile=tile, overlap=overlap)


def test_tiled_boost_is_close_to_untiled_on_a_randomised_model():
    """The UNet's GroupNorm statistics and attention see one tile instead of the whole latent, so tiling is an
    approximation on a real network; it must stay far closer to the untiled result than another seed is."""
    model = tiny_model(seed=1)
    z = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    calls = []
    network = model.forward

    def counting(x_t, t, z_up):
        calls.append(tuple(x_t.shape[-2:]))
        return network(x_t, t, z_up)

    model.forward = counting
    untiled = boost(model, z, steps=4, seed=1)
    assert calls == [(64, 64)] * 4
    calls.clear()
    tiled = boost(model, z, steps=4, seed=1, tile=48, overlap=16)
    assert len(calls) == 4 * 4 and set(calls) == {(48, 48)}  # 2×2 tiles at each of the 4 Euler steps
    other_seed = boost(model, z, steps=4, seed=2)
    x0 = start_point("cfm", z, 400, seed=1)
    moved = (untiled.latent - x0).abs().max().item()  # how far the network carried the state
    diff = (tiled.latent - untiled.latent).abs().max().item()
    rel = ((tiled.latent - untiled.latent).norm() / (untiled.latent - x0).norm()).item()
    seed_diff = (other_seed.latent - untiled.latent).abs().max().item()
    print(f"tiled vs untiled (64² latent, tile 48, overlap 16): max abs diff {diff:.4f}, relative L2 {rel:.4f}; "
          f"network moved the state by up to {moved:.3f}; another seed differs by up to {seed_diff:.3f}")
    assert tiled.nfe == untiled.nfe == 4
    assert diff > 0  # it really went through the tiles
    assert rel < 0.25 and diff < 0.25 * seed_diff


def test_a_tile_as_large_as_the_latent_is_bit_identical_to_untiled():
    model = tiny_model(seed=2)
    z = torch.randn(1, 4, 24, 24, generator=torch.Generator().manual_seed(0))
    untiled = boost(model, z, steps=2, seed=0)
    tiled = boost(model, z, steps=2, seed=0, tile=24, overlap=8)
    assert torch.equal(untiled.latent, tiled.latent)
