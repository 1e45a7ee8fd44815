"""Pixel-space CFM models in latent graphs (CFMBoost / CFMUpscaleLatent with a VAE) and live previews during the
solve, against the stand-in ComfyUI (tests/comfy_stub). Tiny models are built in each test."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_nodes import install, make_model, node, one_line_error, raw_latent

from cfm_core import CFMError, LatentSpec, boost
from cfm_core.pipeline import weights_free_space


def pixel_handle(comfy, seed: int = 0):
    return install(comfy, make_model(kind="space_to_depth", seed=seed), "pixel.safetensors")[0]


def record_progress(comfy) -> list[tuple[int, int, object]]:
    calls: list[tuple[int, int, object]] = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None:
                                             calls.append((value, total, preview)))
    return calls


def previews_on(comfy, method: str = "auto") -> None:
    from comfy.cli_args import LatentPreviewMethod, args

    args.preview_method = LatentPreviewMethod(method)


def count_evaluations(handle) -> list[int]:
    calls: list[int] = []
    handle.model.net.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls


# ------------------------------------------------------------------------------------------ pixel models on LATENTs

def test_boost_with_a_pixel_model_is_decode_upscale_image_encode(comfy):
    handle = pixel_handle(comfy)
    vae = comfy.sd.VAE()
    latent = {"samples": raw_latent(2, size=8), "batch_index": [3, 5], "noise_mask": torch.ones(2, 1, 64, 64)}
    out, = node(comfy, "CFMBoost").boost(latent, vae, handle, "midpoint", 2, 7, 30, "bilinear", 0, 8, "never", 512)
    image = vae.decode(latent["samples"])
    from nodes.solve import SolveSettings
    from nodes.upscale_image import upscale_pixels

    up = upscale_pixels(handle, image, SolveSettings.from_inputs("midpoint", 2, 7, 30), batch_indices=[3, 5])
    expected = vae.encode(up)
    assert out["samples"].shape == (2, 4, 16, 16)
    assert torch.allclose(out["samples"], expected, atol=1e-5)
    assert out["batch_index"] == [3, 5] and out["noise_mask"].shape == (2, 1, 128, 128)
    calls = [c[0] for c in vae.stub_calls]
    assert calls.count("decode") >= 1 and calls.count("encode") >= 1


def test_boost_with_a_pixel_model_uses_the_clis_engine_function_and_any_vae(comfy):
    handle = pixel_handle(comfy)
    vae = comfy.sd.VAE(comfy.sd.stub_vae_state_dict(seed=9))  # any image VAE: no fingerprint check
    latent = {"samples": raw_latent(1, size=8)}
    out, = node(comfy, "CFMBoost").boost(latent, vae, handle, "euler", 2, 4)
    from cfm_core.pipeline import upscale_image

    image = vae.decode(latent["samples"]).movedim(-1, 1)
    engine, _ = upscale_image(handle.model, image, solver="euler", steps=2, seed=4)
    assert torch.allclose(out["samples"], vae.encode(engine.movedim(1, -1)), atol=1e-5)


def test_upscale_latent_with_a_pixel_model_solves_from_the_upsampled_latent(comfy):
    handle = pixel_handle(comfy)
    vae = comfy.sd.VAE()
    low = {"samples": raw_latent(1, size=8)}
    up, = node(comfy, "PixelSpaceUpsample").upsample(low, vae, 0.0, cfm_model=handle)  # lends its factor
    assert up["samples"].shape == (1, 4, 16, 16)
    upscale = node(comfy, "CFMUpscaleLatent").upscale
    out, = upscale(handle, up, "euler", 2, 11, -1, 0, 8, vae=vae)
    assert out["samples"].shape == up["samples"].shape
    space = weights_free_space(handle.model)
    image = vae.decode(up["samples"]).movedim(-1, 1)
    z1 = boost(handle.model, space.encode(image * 2 - 1), solver="euler", steps=2, seed=11).latent
    expected = vae.encode(((space.decode(z1).clamp(-1, 1) + 1) / 2).movedim(1, -1))
    assert torch.allclose(out["samples"], expected, atol=1e-5)
    with pytest.raises(CFMError) as no_vae:
        upscale(handle, up, "euler", 1)
    assert "VAE" in one_line_error(no_vae) and "CFMUpscaleImage" in one_line_error(no_vae)
    noised, = node(comfy, "NoiseAugment").augment(up, 100, 0)
    with pytest.raises(CFMError) as augmented:
        upscale(handle, noised, "euler", 1, vae=vae)
    assert "PixelSpaceUpsample" in one_line_error(augmented)


def test_pixel_model_path_ticks_progress_and_stops_on_cancel(comfy):
    handle = pixel_handle(comfy)
    vae = comfy.sd.VAE()
    calls = record_progress(comfy)
    node(comfy, "CFMBoost").boost({"samples": raw_latent(1, size=8)}, vae, handle, "euler", 3)
    assert [(v, t) for v, t, _ in calls] == [(1, 3), (2, 3), (3, 3)]
    evaluations = count_evaluations(handle)

    def cancel_on_second(module, args, output):
        if len(evaluations) == 2:
            comfy.mm.interrupt_current_processing(True)

    handle.model.net.register_forward_hook(cancel_on_second)
    with pytest.raises(comfy.mm.InterruptProcessingException):
        node(comfy, "CFMBoost").boost({"samples": raw_latent(1, size=8)}, vae, handle, "rk4", 3)
    assert len(evaluations) == 2


def test_pixel_model_errors_are_one_line(comfy):
    handle = pixel_handle(comfy)
    boost_node = node(comfy, "CFMBoost")
    with pytest.raises(CFMError) as channels:
        boost_node.boost({"samples": raw_latent(1, channels=16)}, comfy.sd.VAE(), handle)
    assert "16 channels" in one_line_error(channels)
    with pytest.raises(CFMError) as small:
        boost_node.boost({"samples": raw_latent(1, size=4)}, comfy.sd.VAE(), handle)
    assert "at least" in one_line_error(small)


# ------------------------------------------------------------------------------------------ previews

def test_no_preview_is_made_when_previews_are_off(comfy):
    handle, _ = install(comfy, make_model())
    calls = record_progress(comfy)
    node(comfy, "CFMUpscaleLatent").upscale(handle, {"samples": raw_latent(1, size=8)}, "euler", 3)
    assert len(calls) == 3 and all(preview is None for _, _, preview in calls)  # ComfyUI's default: none


@pytest.mark.parametrize("solver,steps", [("euler", 3), ("rk4", 2)])
def test_latent_model_previews_every_step_without_extra_evaluations(comfy, solver, steps):
    previews_on(comfy)
    handle, _ = install(comfy, make_model())
    evaluations = count_evaluations(handle)
    calls = record_progress(comfy)
    node(comfy, "CFMUpscaleLatent").upscale(handle, {"samples": raw_latent(1, size=8)}, solver, steps)
    assert len(calls) == steps and len(evaluations) == steps * {"euler": 1, "rk4": 4}[solver]
    for _, _, preview in calls:
        kind, image, max_size = preview
        assert kind == "JPEG" and image.size == (8, 8) and max_size == 512  # Latent2RGB: one pixel per latent


def test_latent_preview_shows_the_x1_estimate_through_the_vae_familys_latent_format(comfy):
    """Euler's last estimate is x1 itself: the last preview is Latent2RGB of the output, as KSampler would show it."""
    import comfy.latent_formats as formats
    import latent_preview

    previews_on(comfy, "latent2rgb")
    handle, _ = install(comfy, make_model())  # a 4-channel VAE family → ComfyUI's SD15 format
    calls = record_progress(comfy)
    out, = node(comfy, "CFMUpscaleLatent").upscale(handle, {"samples": raw_latent(1, size=8)}, "euler", 2)
    sd15 = formats.SD15()
    previewer = latent_preview.get_previewer(torch.device("cpu"), sd15)
    expected = previewer.decode_latent_to_preview(sd15.process_in(out["samples"]))
    got = np.asarray(calls[-1][2][1], dtype=np.int16)
    assert np.abs(got - np.asarray(expected, dtype=np.int16)).max() <= 1
    assert not np.array_equal(np.asarray(calls[0][2][1]), got)  # the estimate moves during the solve


def test_latent_formats_follow_the_vae_family(comfy):
    from nodes.preview import comfy_latent_format

    def spec(name: str, channels: int) -> LatentSpec:
        return LatentSpec(kind="vae", channels=channels, downscale=8, name=name)

    names = {(n, c): type(comfy_latent_format(spec(n, c))).__name__
             for n, c in [("sd15", 4), ("sdxl", 4), ("sd3", 16), ("flux", 16)]}
    assert names == {("sd15", 4): "SD15", ("sdxl", 4): "SDXL", ("sd3", 16): "SD3", ("flux", 16): "Flux"}
    assert comfy_latent_format(spec("odd", 8)) is None
    if "family" in LatentSpec.__dataclass_fields__:  # the recorded family wins over a free-form name
        flux = LatentSpec(kind="vae", channels=16, downscale=8, name="my-vae", family="flux")
        assert type(comfy_latent_format(flux)).__name__ == "Flux"


def test_pixel_model_previews_a_downscaled_image(comfy, monkeypatch):
    previews_on(comfy)
    import latent_preview

    monkeypatch.setattr(latent_preview, "MAX_PREVIEW_RESOLUTION", 32)
    handle = pixel_handle(comfy)
    calls = record_progress(comfy)
    out, = node(comfy, "CFMUpscaleImage").upscale(torch.rand(1, 24, 36, 3), handle, "euler", 2)
    assert out.shape == (1, 48, 72, 3)
    for _, _, (kind, image, max_size) in calls:
        assert kind == "JPEG" and image.size == (32, 21) and max_size == 32
    calls.clear()
    monkeypatch.setattr(latent_preview, "MAX_PREVIEW_RESOLUTION", 512)
    out, = node(comfy, "CFMUpscaleImage").upscale(torch.rand(1, 24, 36, 3), handle, "euler", 2)
    last = np.asarray(calls[-1][2][1], dtype=np.int16)  # Euler: the last estimate is the result
    assert last.shape == (48, 72, 3)
    assert np.abs(last - (out[0].numpy() * 255).astype(np.int16)).max() <= 1


def test_pixel_model_in_a_latent_graph_previews_the_image(comfy):
    previews_on(comfy)
    handle = pixel_handle(comfy)
    calls = record_progress(comfy)
    node(comfy, "CFMBoost").boost({"samples": raw_latent(1, size=8)}, comfy.sd.VAE(), handle, "euler", 2)
    assert [preview[1].size for _, _, preview in calls] == [(128, 128), (128, 128)]


def test_a_residual_model_asked_for_heun_is_warned_about_in_the_log(comfy, caplog):
    handle = install(comfy, make_model(kind="space_to_depth", prediction="residual"), "residual.safetensors")[0]
    image = torch.rand(1, 16, 16, 3)
    with caplog.at_level("WARNING", logger="cfm_boost"):
        node(comfy, "CFMUpscaleImage").upscale(image, handle, "euler", 1, 0)
        assert not caplog.records
        node(comfy, "CFMUpscaleImage").upscale(image, handle, "heun", 1, 0)
    assert len(caplog.records) == 1 and "solver heun evaluates the velocity at t = 1" in caplog.records[0].message
