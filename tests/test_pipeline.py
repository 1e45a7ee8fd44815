"""The user-facing calls: boost, upscale_latent (latent resize and PSU), cascade, upscale_image; determinism,
regression models, and one-line refusals of bad inputs."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_model

from cfm_core.autoencoders import PixelSpace, SpaceToDepth
from cfm_core.errors import CFMError
from cfm_core.path import start_point
from cfm_core.pipeline import boost, cascade, upscale_image, upscale_latent
from cfm_core.solvers import integrate
from cfm_core.upsample import pixel_space_upsample


def latent(seed: int = 0, shape=(2, 4, 8, 8)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_a_fresh_model_returns_its_start_point():
    """v ≡ 0 for a zero-initialised model, so the ODE does not move x0 = noise_augment(z_up)."""
    model = tiny_model(randomize=False)
    z_up = latent()
    result = boost(model, z_up, steps=3, seed=5)
    torch.testing.assert_close(result.latent, start_point("cfm", z_up, 400, seed=5))
    assert result.nfe == 3 and result.steps == 3


def test_boost_integrates_the_model_from_the_augmented_start_with_clean_context():
    model = tiny_model()
    z_up = latent(1)
    x0 = start_point("cfm", z_up, 400, seed=2)
    expected = integrate(lambda x, t: model(x, t, z_up), x0, solver="heun", steps=2).x
    result = boost(model, z_up, solver="heun", steps=2, seed=2)
    torch.testing.assert_close(result.latent, expected)
    assert result.nfe == 4 and result.latent.dtype == torch.float32


def test_latent_bilinear_upscale_doubles_the_size():
    model = tiny_model()
    z_low = latent(2)
    result = upscale_latent(model, z_low, None, upsample="latent-bilinear", steps=2, seed=0)
    assert result.latent.shape == (2, 4, 16, 16) and result.nfe == 2 and result.seconds > 0
    z_up = F.interpolate(z_low, scale_factor=2, mode="bilinear", align_corners=False)
    assert torch.equal(result.latent, boost(model, z_up, steps=2, seed=0).latent)


@pytest.mark.parametrize("space", [PixelSpace(), SpaceToDepth(2)], ids=["pixels", "space_to_depth"])
def test_psu_upscale_goes_through_pixels(space):
    model = tiny_model(space.spec.channels, space.spec)
    z_low = space.encode(torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1)
    result = upscale_latent(model, z_low, space, upsample="psu", steps=2, seed=1)
    z_up = pixel_space_upsample(z_low, space, 2)
    assert torch.equal(result.latent, boost(model, z_up, steps=2, seed=1).latent)
    assert result.latent.shape == (1, space.spec.channels, 2 * z_low.shape[-2], 2 * z_low.shape[-1])


def test_cascade_of_two_stages_gives_four_times_the_size():
    models = [tiny_model(seed=0), tiny_model(seed=1)]
    results = cascade(models, latent(4, (1, 4, 6, 6)), None, upsample="latent-bilinear", steps=1, seed=0)
    assert [r.latent.shape[-1] for r in results] == [12, 24]
    assert results[-1].latent.shape == (1, 4, 24, 24)
    with pytest.raises(CFMError, match="at least one model"):
        cascade([], latent(), None)


@pytest.mark.parametrize("objective", ["l1", "l2"])
def test_regression_models_take_one_euler_step_from_z_up(objective):
    model = tiny_model(objective=objective)
    z_up = latent(5)
    result = boost(model, z_up, solver="rk4", steps=10, seed=0)
    assert result.nfe == 1 and result.steps == 1
    with torch.no_grad():
        expected = z_up + model(z_up, torch.zeros(2), z_up)
    torch.testing.assert_close(result.latent, expected)


def test_fm_models_start_from_pure_noise():
    model = tiny_model(objective="fm", randomize=False)
    result = boost(model, latent(6), steps=1, seed=3)
    torch.testing.assert_close(result.latent, start_point("fm", latent(6), seed=3))


def test_same_seed_is_bit_identical_and_another_seed_differs():
    model = tiny_model(3, PixelSpace.spec)
    image = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(7))
    a, ra = upscale_image(model, image, steps=2, seed=11)
    b, _ = upscale_image(model, image, steps=2, seed=11)
    c, _ = upscale_image(model, image, steps=2, seed=12)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (1, 3, 24, 24) and 0 <= a.min() and a.max() <= 1 and ra.nfe == 2
    z = latent(8)
    assert torch.equal(boost(tiny_model(), z, seed=1).latent, boost(tiny_model(), z, seed=1).latent)
    assert not torch.equal(boost(tiny_model(), z, seed=1).latent, boost(tiny_model(), z, seed=2).latent)


def test_batch_element_results_do_not_depend_on_the_batch():
    model = tiny_model()
    z = latent(9, (3, 4, 8, 8))
    whole = boost(model, z, steps=2, seed=4).latent
    for i in range(3):
        alone = boost(model, z[i:i + 1], steps=2, seed=4, batch_indices=[i]).latent
        torch.testing.assert_close(alone[0], whole[i], atol=1e-5, rtol=1e-5)


def test_upscale_image_with_space_to_depth():
    model = tiny_model(12, SpaceToDepth(2).spec)
    image = torch.rand(2, 3, 8, 12, generator=torch.Generator().manual_seed(1))
    out, result = upscale_image(model, image, steps=1, seed=0)
    assert out.shape == (2, 3, 16, 24) and result.latent.shape == (2, 12, 8, 12)
    with pytest.raises(CFMError, match="multiple of 2"):
        upscale_image(model, torch.rand(1, 3, 9, 12))
    with pytest.raises(CFMError, match="image"):
        upscale_image(model, torch.rand(1, 4, 8, 8))
    with pytest.raises(CFMError, match="VAE"):
        upscale_image(tiny_model(), torch.rand(1, 3, 8, 8))  # a VAE-space model needs its VAE


def test_noise_step_override_and_x0_override():
    model = tiny_model()
    z_up = latent(10)
    default = boost(model, z_up, steps=1, seed=0).latent
    assert not torch.equal(default, boost(model, z_up, steps=1, seed=0, noise_step=200).latent)
    with pytest.raises(CFMError, match="noise_step"):
        boost(model, z_up, noise_step=1000)
    x0 = start_point("cfm", z_up, 400, seed=0)
    assert torch.equal(default, boost(model, z_up, steps=1, seed=99, x0=x0).latent)
    with pytest.raises(CFMError, match="start latent"):
        boost(model, z_up, x0=x0[:, :, :4])
    with pytest.raises(CFMError, match="start latent x0 contains NaN"):
        boost(model, z_up, x0=torch.full_like(x0, math.nan))


def test_callbacks_and_interrupts_reach_the_caller():
    model = tiny_model()
    seen = []
    boost(model, latent(11), steps=3, seed=0, callback=seen.append)
    assert [s.step for s in seen] == [1, 2, 3] and seen[-1].t == 1.0

    class Cancelled(Exception):
        pass

    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) > 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        boost(model, latent(11), steps=5, seed=0, interrupt=interrupt)
    assert len(calls) == 3


def test_half_precision_models_return_float32_latents():
    model = tiny_model().to(torch.bfloat16)
    result = boost(model, latent(12), steps=2, seed=0)
    assert result.latent.dtype == torch.float32 and torch.isfinite(result.latent).all()
    reference = boost(tiny_model(), latent(12), steps=2, seed=0).latent
    assert (result.latent - reference).abs().max() < 0.1


@pytest.mark.parametrize("bad, message", [
    (torch.randn(1, 3, 8, 8), "3 channels"),
    (torch.full((1, 4, 8, 8), math.nan), "NaN"),
    (torch.full((1, 4, 8, 8), math.inf), "inf"),
    (torch.randn(0, 4, 8, 8), "empty batch"),
    (torch.randn(4, 8, 8), "4-D"),
])
def test_bad_latents_are_refused_naming_the_input(bad, message):
    model = tiny_model()
    with pytest.raises(CFMError, match=message) as caught:
        upscale_latent(model, bad, None, upsample="latent-bilinear")
    assert "low-res latent" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(CFMError, match="z_up"):
        boost(model, bad)


def test_bad_solver_steps_and_upsample_are_refused():
    model = tiny_model()
    with pytest.raises(CFMError, match="solver"):
        boost(model, latent(), solver="ddim")
    with pytest.raises(CFMError, match="steps"):
        boost(model, latent(), steps=0)
    with pytest.raises(CFMError, match="upsample"):
        upscale_latent(model, latent(), None, upsample="bicubic-latent")
    with pytest.raises(CFMError, match="psu"):
        upscale_latent(model, latent(), None, upsample="psu")


def test_out_of_memory_is_recognised_on_every_backend_and_never_for_a_bad_input():
    from cfm_core.devices import is_out_of_memory

    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(CFMError("image too large: it would run out of memory; use --tile"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_memory_estimate_grows_with_the_latent_and_shrinks_with_tiles_and_half_precision():
    from cfm_core import CFMConfig, LatentSpec, preset
    from cfm_core.pipeline import estimate_memory

    config = CFMConfig(unet=preset("tiny", latent_channels=4), latent=LatentSpec())
    small, big = (estimate_memory(config, (1, 4, n, n), torch.float32, None) for n in (32, 64))
    assert 3.5 * small < big < 4.5 * small  # activations scale with the pixels
    assert estimate_memory(config, (1, 4, 64, 64), torch.float32, 16) < big / 4
    assert estimate_memory(config, (1, 4, 64, 64), torch.bfloat16, None) < 0.6 * big



def test_auto_dtype_is_bf16_only_on_cpus_that_compute_it(monkeypatch):
    from cfm_core import devices

    cpu = torch.device("cpu")
    for avx512_bf16, amx, native in ((True, False, True), (False, True, True), (False, False, False)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v, raising=False)
        assert devices.cpu_has_native_bf16() is native
        assert devices.resolve_dtype("auto", cpu) == (torch.bfloat16 if native else torch.float32)
        assert devices.resolve_dtype("fp32", cpu) == torch.float32
        assert devices.resolve_dtype("auto", torch.device("mps")) == torch.float32


def test_cpu_models_without_attention_load_channels_last_and_agree_with_the_default_layout(tmp_path):
    from cfm_core.checkpoint import load_model, runs_channels_last, save_model

    path, with_attention = str(tmp_path / "m.safetensors"), str(tmp_path / "a.safetensors")
    save_model(tiny_model(attention_resolutions=()), path)
    save_model(tiny_model(attention_resolutions=(2,)), with_attention)
    fast, plain = load_model(path), load_model(path, channels_last=False)
    convs = [m.weight for m in fast.net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
                         for w in convs)
    assert all(m.weight.is_contiguous() for m in plain.net.modules() if isinstance(m, torch.nn.Conv2d))
    z = latent(shape=(1, 4, 16, 16))
    a, b = boost(fast, z, steps=2, seed=0).latent, boost(plain, z, steps=2, seed=0).latent
    assert torch.allclose(a, b, atol=1e-4)
    # where channels-last was measured slower (fp32 UNets with attention) and off the CPU, the default layout stays
    attention = load_model(with_attention)
    assert all(m.weight.is_contiguous() for m in attention.net.modules() if isinstance(m, torch.nn.Conv2d))
    assert not runs_channels_last(fast.config, "cuda") and runs_channels_last(fast.config, "cpu")


def test_half_precision_models_do_not_round_the_latents_they_add_to():
    # a fresh residual model predicts x̂1 = z_up: from any start, Euler lands on z_up. Run in bf16 it must still land
    # there to float32 rounding: only the network runs in bf16, not the latents the velocity is formed from
    model = tiny_model(prediction="residual", randomize=False).to(torch.bfloat16)
    z, noise = latent(3, (1, 4, 8, 8)), latent(4, (1, 4, 8, 8))
    out = boost(model, z, x0=z + 0.3 * noise, steps=3).latent
    assert (out - z).abs().max() < 1e-5 < (z.to(torch.bfloat16).float() - z).abs().max()
