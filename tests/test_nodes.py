"""ComfyUI nodes against the stand-in ComfyUI (tests/comfy_stub): shapes, scaling, keys, progress, interrupt, OOM,
errors. Tiny CFM models are built and saved in each test; the stub VAE works on 8×8 patches."""
from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F

from cfm_core import CFMConfig, CFMError, CFMModel, LatentScaling, LatentSpec, alpha_bar, boost, preset, save_model
from cfm_core.augment import batch_stable_noise
from cfm_core.autoencoders import vae_fingerprint
from cfm_core.pipeline import upscale_image
from cfm_core.upsample import pixel_space_upsample

SCALE, SHIFT = 0.5, 0.1  # not SD's 0.18215 and non-zero shift: a missing or doubled scaling shows up


def make_model(channels: int = 4, kind: str = "vae", *, seed: int = 0, fingerprint: str = "", **config) -> CFMModel:
    """A tiny CFM model whose output conv is randomised (a fresh one outputs v = 0)."""
    if kind == "vae":
        spec = LatentSpec(kind="vae", channels=channels, downscale=8, scale_factor=SCALE, shift_factor=SHIFT,
                          name="stub-vae", fingerprint=fingerprint)
    elif kind == "space_to_depth":
        spec = LatentSpec(kind="space_to_depth", channels=12, downscale=2, scale_factor=1.0, name="space_to_depth2")
    else:
        spec = LatentSpec(kind="pixels", channels=3, downscale=1, scale_factor=1.0, name="pixels")
    config.setdefault("default_steps", 2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CFMModel(CFMConfig(unet=preset("tiny", latent_channels=spec.channels), latent=spec, **config))
        torch.nn.init.normal_(model.net.out[2].weight, std=0.05)
    return model.eval()


def install(comfy, model: CFMModel, name: str = "m.safetensors", dtype: str = "fp32"):
    """Save ``model`` into models/cfm and load it through the CFMLoader node → (CFM_MODEL handle, info)."""
    path = os.path.join(comfy.folder_paths.models_dir, "cfm", name)
    save_model(model, path)
    return node(comfy, "CFMLoader").load(name, dtype)


def node(comfy, node_id: str):
    return comfy.nodes.NODE_CLASS_MAPPINGS[node_id]()


def raw_latent(batch: int = 2, channels: int = 4, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 + 0.3


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


# ------------------------------------------------------------------------------------------ CFMLoader

def test_loader_lists_bundled_entry_and_safetensors_from_models_cfm(comfy):
    folder = os.path.join(comfy.folder_paths.models_dir, "cfm")
    save_model(make_model(), os.path.join(folder, "a.safetensors"))
    save_model(make_model(), os.path.join(folder, "sub", "b.safetensors"))
    with open(os.path.join(folder, "readme.txt"), "w") as fh:
        fh.write("not a model")
    choices = comfy.nodes.NODE_CLASS_MAPPINGS["CFMLoader"].INPUT_TYPES()["required"]["model_name"][0]
    assert choices == ["(bundled) cfm-pixel-2x", "a.safetensors", "sub/b.safetensors"]
    assert comfy.folder_paths.folder_names_and_paths["cfm"] == ([folder], {".safetensors"})


def test_loader_caches_by_file_and_dtype_and_reloads_a_changed_file(comfy):
    handle, info = install(comfy, make_model(seed=1), "m.safetensors")
    again, _ = node(comfy, "CFMLoader").load("m.safetensors", "fp32")
    assert again is handle
    assert "×2" in info and "stub-vae" in info and "float32" in info
    assert isinstance(handle.patcher, comfy.model_patcher.ModelPatcher)
    assert handle.patcher.load_device == comfy.mm.get_torch_device()
    assert handle.patcher.offload_device == comfy.mm.unet_offload_device()
    fp16, _ = node(comfy, "CFMLoader").load("m.safetensors", "fp16")
    assert fp16 is not handle and fp16.model.dtype == torch.float16
    path = handle.path
    save_model(make_model(seed=2), path)
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    changed, _ = node(comfy, "CFMLoader").load("m.safetensors", "fp32")
    assert changed is not handle
    assert not torch.equal(changed.model.net.out[2].weight, handle.model.net.out[2].weight)


def test_model_patcher_needs_the_holder_module(comfy):
    """ModelPatcher assigns ``model.device`` (as the real one does); CFMModel.device is a read-only property."""
    model = make_model()
    cpu = torch.device("cpu")
    direct = comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)
    with pytest.raises(AttributeError, match="device"):
        comfy.mm.load_models_gpu([direct], force_full_load=True)
    handle = comfy.nodes.model_handle.wrap_model(model, "m", "m.safetensors")
    comfy.mm.load_models_gpu([handle.patcher], force_full_load=True)
    assert handle.patcher.model.device == torch.device("cpu") and handle.patcher.model_dtype() == torch.float32


def test_loader_auto_dtype_follows_comfyui(comfy, monkeypatch):
    handle, _ = install(comfy, make_model(), "m.safetensors", dtype="auto")
    assert handle.model.dtype == torch.float32  # CPU
    monkeypatch.setattr(comfy.mm, "should_use_bf16", lambda *a, **k: True)  # a GPU that runs bf16 well
    bf16, _ = node(comfy, "CFMLoader").load("m.safetensors", "auto")
    assert bf16.model.dtype == torch.bfloat16


def test_loader_errors_are_one_line(comfy, monkeypatch, tmp_path):
    loader = node(comfy, "CFMLoader")
    monkeypatch.setattr(comfy.nodes.loader, "BUNDLED_MODEL_PATH", str(tmp_path / "absent.safetensors"))
    with pytest.raises(CFMError) as missing_bundled:
        loader.load("(bundled) cfm-pixel-2x", "auto")
    assert "bundled model" in one_line_error(missing_bundled)
    with pytest.raises(CFMError) as unknown:
        loader.load("nope.safetensors", "auto")
    assert "not found in models/cfm" in one_line_error(unknown)
    folder = os.path.join(comfy.folder_paths.models_dir, "cfm")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "junk.safetensors"), "wb") as fh:
        fh.write(b"\x00" * 64)
    with pytest.raises(CFMError) as junk:
        loader.load("junk.safetensors", "auto")
    assert "junk.safetensors" in one_line_error(junk)
    torch.save({"x": torch.zeros(1)}, os.path.join(folder, "pickle.safetensors"))
    with pytest.raises(CFMError) as pickled:
        loader.load("pickle.safetensors", "auto")
    assert "pickle" in one_line_error(pickled)
    assert node(comfy, "CFMLoader").IS_CHANGED("nope.safetensors", "auto") == "missing"


# ------------------------------------------------------------------------------------------ ComfyVAESpace

def test_comfy_vae_space_is_a_cfm_core_latent_space(comfy):
    from nodes.vae_space import ComfyVAESpace

    vae = comfy.sd.VAE()
    scaling = LatentScaling(SCALE, SHIFT)
    space = ComfyVAESpace(vae, scaling)
    pixels = torch.rand(2, 3, 32, 48) * 2 - 1
    expected_z = (vae.encode(((pixels + 1) / 2).movedim(1, -1)) - SHIFT) * SCALE
    assert torch.allclose(space.encode(pixels), expected_z, atol=1e-5)
    z = torch.randn(2, 4, 4, 6)
    expected_pixels = vae.decode(z / SCALE + SHIFT).movedim(-1, 1) * 2 - 1
    assert torch.allclose(space.decode(z), expected_pixels, atol=1e-6)
    assert (space.spec.channels, space.spec.downscale) == (4, 8)
    assert space.spec.fingerprint == vae_fingerprint(vae.first_stage_model.quant_conv.weight) != ""


def test_fingerprint_of_half_precision_copies_matches_the_fp32_file(comfy):
    """ComfyUI keeps VAEs in fp16/bf16 on most GPUs; that must not look like another VAE."""
    from nodes.common import comfy_vae_fingerprint

    sd = comfy.sd.stub_vae_state_dict(seed=0)
    expected = vae_fingerprint(sd["quant_conv.weight"])
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        assert comfy_vae_fingerprint(comfy.sd.VAE(sd, dtype=dtype)) == expected, dtype
    assert comfy_vae_fingerprint(comfy.sd.VAE(comfy.sd.stub_vae_state_dict(seed=1))) != expected


# ------------------------------------------------------------------------------------------ PixelSpaceUpsample

def test_psu_is_decode_resize_encode_on_raw_latents(comfy):
    vae = comfy.sd.VAE()
    raw = raw_latent()
    out, = node(comfy, "PixelSpaceUpsample").upsample({"samples": raw}, vae, 2.0)
    image = vae.decode(raw).movedim(-1, 1)
    resized = F.interpolate(image, size=(128, 128), mode="bilinear", align_corners=False)
    expected = vae.encode(resized.movedim(1, -1))
    assert out["samples"].shape == (2, 4, 16, 16)
    assert torch.allclose(out["samples"], expected, atol=1e-5)
    # The same as the engine's PSU in model space, whatever the scaling (it cancels out).
    from nodes.vae_space import ComfyVAESpace

    scaling = LatentScaling(SCALE, SHIFT)
    engine = scaling.to_raw(pixel_space_upsample(scaling.to_model(raw), ComfyVAESpace(vae, scaling), 2))
    assert torch.allclose(out["samples"], engine, atol=1e-4)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "nearest-exact"])
@pytest.mark.parametrize("scale", [2.0, 1.5, 0.5])
def test_psu_node_is_the_engines_psu_and_keeps_its_bits(comfy, mode, scale):
    """The node runs the engine's pixel_space_upsample; its output is bit for bit what the node computed before the
    engine owned PSU (decode → resize the [0, 1] pixels to d·round(s·h) → encode; antialiased when shrinking)."""
    from nodes.vae_space import ComfyVAESpace

    vae, raw = comfy.sd.VAE(), raw_latent(size=7)  # odd: round(7·1.5) = 10 latents, 80 pixels
    out, = node(comfy, "PixelSpaceUpsample").upsample({"samples": raw}, vae, scale, resize_method=mode)
    engine = pixel_space_upsample(raw, ComfyVAESpace(vae).raw_pixels(), scale, mode)
    side = round(7 * scale)
    smooth = {"align_corners": False, "antialias": scale < 1} if mode != "nearest-exact" else {}
    before = F.interpolate(vae.decode(raw).movedim(-1, 1), size=(8 * side, 8 * side), mode=mode, **smooth)
    assert out["samples"].shape == (2, 4, side, side)
    assert torch.equal(out["samples"], engine)
    assert torch.equal(out["samples"], vae.encode(before.movedim(1, -1)))


def test_psu_keeps_batch_index_and_resizes_the_pixel_mask(comfy):
    vae = comfy.sd.VAE()
    mask = torch.zeros(2, 64, 64)
    mask[:, :32] = 1
    latent = {"samples": raw_latent(), "batch_index": [4, 7], "noise_mask": mask}
    out, = node(comfy, "PixelSpaceUpsample").upsample(latent, vae, 1.5)
    assert out["samples"].shape == (2, 4, 12, 12)
    assert out["batch_index"] == [4, 7]
    assert out["noise_mask"].shape == (2, 1, 96, 96)
    assert out["noise_mask"][:, :, :40].min() == 1 and out["noise_mask"][:, :, 56:].max() == 0
    assert latent["noise_mask"] is mask and latent["samples"].shape == (2, 4, 8, 8)  # input dict untouched


def test_psu_scale_zero_takes_the_models_factor(comfy):
    handle, _ = install(comfy, make_model(factor=4))
    out, = node(comfy, "PixelSpaceUpsample").upsample({"samples": raw_latent(1)}, comfy.sd.VAE(), 0.0,
                                                       cfm_model=handle)
    assert out["samples"].shape == (1, 4, 32, 32)


def test_psu_accepts_every_scale_its_widget_offers(comfy):
    """The widget's range is the node's: 0 (the model's factor), shrinking below 1, enlarging up to the max."""
    kind, options = comfy.nodes.PixelSpaceUpsample.INPUT_TYPES()["required"]["scale_by"]
    vae, psu = comfy.sd.VAE(), node(comfy, "PixelSpaceUpsample")
    steps = round((options["max"] - options["min"]) / options["step"])
    for k in (0, 1, steps // 16, steps // 8 - 1, steps // 8, steps):  # 0, 0.05, 0.5, 0.95, 1, 8 on a 0.05 grid
        scale = options["min"] + k * options["step"]
        out, = psu.upsample({"samples": raw_latent(1)}, vae, scale)
        expected = max(1, round(8 * (scale or 2.0)))
        assert out["samples"].shape == (1, 4, expected, expected), scale
    half, = psu.upsample({"samples": raw_latent(1)}, vae, 0.5)  # shrinking is antialiased: 2×2 means in pixels
    image = vae.decode(raw_latent(1)).movedim(-1, 1)
    small = F.interpolate(image, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    assert torch.allclose(half["samples"], vae.encode(small.movedim(1, -1)), atol=1e-5)
    with pytest.raises(CFMError) as negative:
        psu.upsample({"samples": raw_latent(1)}, vae, -1.0)
    assert "above 0" in one_line_error(negative)


def test_psu_vae_tiling_modes_and_oom_fallback(comfy, monkeypatch):
    vae = comfy.sd.VAE()
    raw = raw_latent(1, size=16)
    psu = node(comfy, "PixelSpaceUpsample")
    plain, = psu.upsample({"samples": raw}, vae, 2.0, vae_tiling="never")
    assert [c[0] for c in vae.stub_calls] == ["decode", "encode"]
    vae.stub_calls.clear()
    tiled, = psu.upsample({"samples": raw}, vae, 2.0, vae_tiling="always", vae_tile_size=128)
    assert vae.stub_calls == [("decode_tiled", (1, 4, 16, 16), 16, 16), ("encode_tiled", (1, 3, 256, 256), 128, 128)]
    assert torch.allclose(tiled["samples"], plain["samples"], atol=1e-5)
    vae.stub_calls.clear()
    monkeypatch.setattr(comfy.nodes.vae_space, "AUTO_TILE_PIXELS", 200 * 200)  # 256² output counts as "large"
    psu.upsample({"samples": raw}, vae, 2.0, vae_tiling="auto")
    assert [c[0] for c in vae.stub_calls] == ["decode", "encode_tiled"]

    def decode_without_fallback(samples_in, vae_options=None):  # a VAE that does not catch its own OOM
        raise comfy.mm.OOM_EXCEPTION("CUDA out of memory. Tried to allocate 9 GiB")

    monkeypatch.setattr(vae, "decode", decode_without_fallback)
    vae.stub_calls.clear()
    fallback, = psu.upsample({"samples": raw}, vae, 2.0, vae_tiling="never")
    assert vae.stub_calls[0][0] == "decode_tiled"
    assert torch.allclose(fallback["samples"], plain["samples"], atol=1e-5)


def test_psu_errors(comfy):
    psu = node(comfy, "PixelSpaceUpsample")
    vae = comfy.sd.VAE()
    with pytest.raises(CFMError) as channels:
        psu.upsample({"samples": raw_latent(1, channels=16)}, vae, 2.0)
    assert "16 channels" in one_line_error(channels)
    with pytest.raises(CFMError) as video:
        psu.upsample({"samples": torch.zeros(1, 4, 3, 8, 8)}, vae, 2.0)
    assert "video" in one_line_error(video)
    nan = raw_latent(1)
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(CFMError) as nans:
        psu.upsample({"samples": nan}, vae, 2.0)
    assert "NaN" in one_line_error(nans)
    with pytest.raises(CFMError) as augmented:
        psu.upsample({"samples": raw_latent(1), "cfm_context": raw_latent(1)}, vae, 2.0)
    assert "NoiseAugment" in one_line_error(augmented)
    other_vae = vae_fingerprint(comfy.sd.stub_vae_state_dict(seed=1)["quant_conv.weight"])
    handle, _ = install(comfy, make_model(fingerprint=other_vae))
    with pytest.raises(CFMError) as wrong_vae:
        psu.upsample({"samples": raw_latent(1)}, vae, 2.0, cfm_model=handle)
    assert "fingerprint" in one_line_error(wrong_vae)


# ------------------------------------------------------------------------------------------ NoiseAugment

def test_noise_augment_noises_in_model_space_and_stores_raw(comfy):
    handle, _ = install(comfy, make_model(noise_step=300))
    raw = raw_latent(2, size=16)
    out, = node(comfy, "NoiseAugment").augment({"samples": raw, "batch_index": [5, 9]}, -1, 42, cfm_model=handle)
    ab = alpha_bar(300)
    eps = batch_stable_noise((2, 4, 16, 16), 42, [5, 9])
    expected = (math.sqrt(ab) * (raw - SHIFT) * SCALE + math.sqrt(1 - ab) * eps) / SCALE + SHIFT
    assert torch.allclose(out["samples"], expected, atol=1e-5)
    assert not torch.allclose(out["samples"], math.sqrt(ab) * raw + math.sqrt(1 - ab) * eps, atol=1e-2)
    assert torch.equal(out["cfm_context"], raw)
    assert (out["cfm_noise_step"], out["cfm_scale_factor"], out["cfm_shift_factor"]) == (300, SCALE, SHIFT)
    assert out["batch_index"] == [5, 9]


def test_noise_augment_without_model_uses_the_given_scaling_and_step_400(comfy):
    raw = raw_latent(1, size=8)
    out, = node(comfy, "NoiseAugment").augment({"samples": raw}, -1, 7, scale_factor=0.18215)
    ab = alpha_bar(400)
    expected = math.sqrt(ab) * raw + math.sqrt(1 - ab) * batch_stable_noise((1, 4, 8, 8), 7) / 0.18215
    assert torch.allclose(out["samples"], expected, atol=1e-4)
    assert out["cfm_noise_step"] == 400


def test_noise_augment_is_batch_stable(comfy):
    raws = raw_latent(3, size=8)
    augment = node(comfy, "NoiseAugment").augment
    batch, = augment({"samples": raws, "batch_index": [0, 1, 2]}, 400, 3)
    single, = augment({"samples": raws[1:2], "batch_index": [1]}, 400, 3)
    plain, = augment({"samples": raws}, 400, 3)  # no batch_index: element i has index i
    assert torch.equal(batch["samples"][1:2], single["samples"])
    assert torch.equal(plain["samples"], batch["samples"])
    with pytest.raises(CFMError) as mismatch:
        augment({"samples": raws, "batch_index": [0]}, 400, 3)
    assert "batch_index" in one_line_error(mismatch)


# ------------------------------------------------------------------------------------------ CFMUpscaleLatent

def test_upscale_latent_scales_once_in_and_out(comfy):
    handle, _ = install(comfy, make_model())
    raw = raw_latent(2, size=16)
    mask = torch.ones(1, 1, 128, 128)
    latent = {"samples": raw, "batch_index": [3, 4], "noise_mask": mask}
    out, = node(comfy, "CFMUpscaleLatent").upscale(handle, latent, "heun", 2, 11, -1, 0, 8)
    z1 = boost(handle.model, (raw - SHIFT) * SCALE, solver="heun", steps=2, seed=11, batch_indices=[3, 4]).latent
    assert torch.allclose(out["samples"], z1 / SCALE + SHIFT, atol=1e-5)
    assert set(out) == {"samples", "batch_index", "noise_mask"} and out["noise_mask"] is mask
    assert out["samples"].device == comfy.mm.intermediate_device() and out["samples"].dtype == torch.float32
    load = comfy.mm.stub_load_calls[-1]
    assert load["models"] == [handle.patcher] and load["force_full_load"] and load["memory_required"] > 0
    assert handle.patcher.model.device == handle.patcher.load_device


def test_upscale_latent_from_noise_augment_equals_internal_augmentation(comfy):
    handle, _ = install(comfy, make_model())
    clean = {"samples": raw_latent(2, size=16), "batch_index": [1, 2]}
    augmented, = node(comfy, "NoiseAugment").augment(clean, 250, 5, cfm_model=handle)
    upscale = node(comfy, "CFMUpscaleLatent").upscale
    via_node, = upscale(handle, augmented, "euler", 3, 999, -1, 0, 8)  # seed/noise_step ignored: already noised
    internal, = upscale(handle, clean, "euler", 3, 5, 250, 0, 8)
    assert torch.allclose(via_node["samples"], internal["samples"], atol=1e-5)
    assert "cfm_context" not in via_node and via_node["batch_index"] == [1, 2]


def test_progress_bar_ticks_once_per_ode_step(comfy):
    handle, _ = install(comfy, make_model())
    ticks = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: ticks.append((value, total)))
    upscale = node(comfy, "CFMUpscaleLatent").upscale
    upscale(handle, {"samples": raw_latent(1, size=8)}, "euler", 3, 0, -1, 0, 8)
    assert ticks == [(1, 3), (2, 3), (3, 3)]
    ticks.clear()
    upscale(handle, {"samples": raw_latent(1, size=8)}, "rk4", 2, 0, -1, 0, 8)
    assert ticks == [(1, 2), (2, 2)]
    ticks.clear()
    upscale(handle, {"samples": raw_latent(1, size=8)}, "default", 0, 0, -1, 0, 8)
    assert ticks[-1] == (2, 2)  # the model's default_steps


def test_interrupt_stops_within_an_ode_step(comfy):
    handle, _ = install(comfy, make_model())
    calls = []

    def count_and_interrupt(module, args, output):
        calls.append(1)
        if len(calls) == 2:  # the user presses Cancel during the 2nd of rk4's 4 evaluations of step 1
            comfy.mm.interrupt_current_processing(True)

    hook = handle.model.net.register_forward_hook(count_and_interrupt)
    try:
        with pytest.raises(comfy.mm.InterruptProcessingException):
            node(comfy, "CFMUpscaleLatent").upscale(handle, {"samples": raw_latent(1, size=8)}, "rk4", 3, 0, -1, 0, 8)
    finally:
        hook.remove()
    assert len(calls) == 2  # stopped before the 3rd evaluation, not after all 12
    assert not comfy.mm.processing_interrupted()


def test_out_of_memory_retries_with_halving_tiles(comfy):
    handle, _ = install(comfy, make_model())
    sizes = []

    def oom_above_16(module, args):
        sizes.append(args[0].shape[-1])
        if args[0].shape[-1] > 16:
            raise comfy.mm.OOM_EXCEPTION("CUDA out of memory. Tried to allocate 20.00 GiB")

    raw = raw_latent(1, size=32)
    hook = handle.model.net.register_forward_pre_hook(oom_above_16)
    try:
        out, = node(comfy, "CFMUpscaleLatent").upscale(handle, {"samples": raw}, "euler", 2, 0, -1, 0, 8)
    finally:
        hook.remove()
    assert sizes[0] == 32 and set(sizes[1:]) == {16}
    z_up = (raw - SHIFT) * SCALE
    tiled = boost(handle.model, z_up, solver="euler", steps=2, seed=0, tile=16, overlap=8).latent
    assert torch.allclose(out["samples"], tiled / SCALE + SHIFT, atol=1e-5)


def test_out_of_memory_everywhere_gives_one_line_and_other_errors_pass_through(comfy):
    handle, _ = install(comfy, make_model())

    def always_oom(module, args):
        raise comfy.mm.OOM_EXCEPTION("CUDA out of memory")

    hook = handle.model.net.register_forward_pre_hook(always_oom)
    with pytest.raises(CFMError) as oom:
        node(comfy, "CFMUpscaleLatent").upscale(handle, {"samples": raw_latent(1, size=32)}, "euler", 1, 0, -1, 0, 8)
    hook.remove()
    assert "out of memory" in one_line_error(oom)
    calls = []

    def bug(module, args):
        calls.append(1)
        raise RuntimeError("some bug")

    hook = handle.model.net.register_forward_pre_hook(bug)
    with pytest.raises(RuntimeError, match="some bug"):
        node(comfy, "CFMUpscaleLatent").upscale(handle, {"samples": raw_latent(1, size=32)}, "euler", 1, 0, -1, 0, 8)
    hook.remove()
    assert len(calls) == 1  # not retried as if it were an OOM


def test_upscale_latent_errors(comfy):
    handle, _ = install(comfy, make_model())
    upscale = node(comfy, "CFMUpscaleLatent").upscale
    cases = {
        "16 channels": {"samples": raw_latent(1, channels=16)},
        "at least 8×8": {"samples": raw_latent(1, size=4)},
        "at most": {"samples": torch.zeros(1, 4, 8, 8193)},
        "NaN": {"samples": torch.full((1, 4, 8, 8), float("nan"))},
        "not a ComfyUI LATENT": {"latent": raw_latent(1)},
    }
    for fragment, latent in cases.items():
        with pytest.raises(CFMError) as excinfo:
            upscale(handle, latent)
        assert fragment in one_line_error(excinfo)
    sd_scaled, = node(comfy, "NoiseAugment").augment({"samples": raw_latent(1)}, 400, 0, scale_factor=0.18215)
    with pytest.raises(CFMError) as scaling:
        upscale(handle, sd_scaled)
    assert "connect the CFM model to NoiseAugment" in one_line_error(scaling)
    pixel_model, _ = install(comfy, make_model(kind="space_to_depth"), "pixel.safetensors")
    with pytest.raises(CFMError) as pixel:
        upscale(pixel_model, {"samples": raw_latent(1)})
    assert "CFMUpscaleImage" in one_line_error(pixel)


def test_nan_output_suggests_fp32(comfy):
    model = make_model()
    with torch.no_grad():
        model.net.out[2].weight.fill_(float("inf"))
    handle, _ = install(comfy, model)
    with pytest.raises(CFMError) as excinfo:
        node(comfy, "CFMUpscaleLatent").upscale(handle, {"samples": raw_latent(1)}, "euler", 1)
    assert "fp32" in one_line_error(excinfo)


# ------------------------------------------------------------------------------------------ CFMBoost

def test_boost_equals_pixel_space_upsample_then_upscale_latent(comfy):
    handle, _ = install(comfy, make_model())
    vae = comfy.sd.VAE()
    latent = {"samples": raw_latent(2, size=8), "batch_index": [0, 6], "noise_mask": torch.ones(2, 1, 64, 64)}
    boosted, = node(comfy, "CFMBoost").boost(latent, vae, handle, "midpoint", 2, 8, 300)
    up, = node(comfy, "PixelSpaceUpsample").upsample(latent, vae, 0.0, cfm_model=handle)
    chained, = node(comfy, "CFMUpscaleLatent").upscale(handle, up, "midpoint", 2, 8, 300)
    assert boosted["samples"].shape == (2, 4, 16, 16)
    assert torch.allclose(boosted["samples"], chained["samples"], atol=1e-5)
    assert boosted["noise_mask"].shape == (2, 1, 128, 128) and boosted["batch_index"] == [0, 6]


def test_boost_checks_the_vae_and_accepts_half_precision_copies(comfy):
    sd = comfy.sd.stub_vae_state_dict(seed=0)
    handle, _ = install(comfy, make_model(fingerprint=vae_fingerprint(sd["quant_conv.weight"])))
    latent = {"samples": raw_latent(1, size=8)}
    boost_node = node(comfy, "CFMBoost")
    boost_node.boost(latent, comfy.sd.VAE(sd), handle, "euler", 1)
    boost_node.boost(latent, comfy.sd.VAE(sd, dtype=torch.bfloat16), handle, "euler", 1)
    boost_node.boost(latent, comfy.sd.VAE(sd, dtype=torch.float16), handle, "euler", 1)
    with pytest.raises(CFMError) as other:
        boost_node.boost(latent, comfy.sd.VAE(comfy.sd.stub_vae_state_dict(seed=3)), handle, "euler", 1)
    assert "fingerprint" in one_line_error(other)
    with pytest.raises(CFMError) as channels:
        boost_node.boost(latent, comfy.sd.VAE(comfy.sd.stub_vae_state_dict(latent_channels=16)), handle)
    assert "16-channel" in one_line_error(channels)


def test_boost_uses_latent_resize_for_models_trained_with_it(comfy):
    handle, _ = install(comfy, make_model(upsample="latent-bilinear"))
    vae = comfy.sd.VAE()
    out, = node(comfy, "CFMBoost").boost({"samples": raw_latent(1, size=8)}, vae, handle, "euler", 1)
    assert out["samples"].shape == (1, 4, 16, 16) and vae.stub_calls == []


# ------------------------------------------------------------------------------------------ CFMUpscaleImage

def test_upscale_image_pixel_model_any_size(comfy):
    handle, _ = install(comfy, make_model(kind="space_to_depth"), "pixel.safetensors")
    image = torch.rand(2, 37, 45, 3)
    out, = node(comfy, "CFMUpscaleImage").upscale(image, handle, "euler", 2, 4)
    assert out.shape == (2, 74, 90, 3) and 0 <= out.min() and out.max() <= 1
    padded = F.pad(image.movedim(-1, 1), (0, 1, 0, 1), mode="reflect")
    expected, _ = upscale_image(handle.model, padded, solver="euler", steps=2, seed=4)
    assert torch.allclose(out, expected[..., :74, :90].movedim(1, -1), atol=1e-5)


@pytest.mark.parametrize("size", [(37, 45), (32, 48), (17, 19)])
def test_upscale_image_node_and_cli_give_bit_identical_pixels(comfy, size):
    # one image, one model, one set of settings: the node and `cfm-boost upscale` run the same engine functions
    # (pad_to_multiple, upscale_image, the crop), so their outputs agree bit for bit, odd sizes included
    from cfm_core.cli.upscale import Settings, upscale_rgb

    model = make_model(kind="space_to_depth")
    handle, _ = install(comfy, model, "pixel.safetensors")
    image = torch.rand(1, *size, 3, generator=torch.Generator().manual_seed(1))
    out, = node(comfy, "CFMUpscaleImage").upscale(image, handle, "euler", 2, 4, noise_step=30)
    settings = Settings(stages=1, solver="euler", steps=2, seed=4, noise_step=30, tile=None, overlap=8,
                        drop_alpha=False)
    cli, nfe = upscale_rgb(handle.model, None, image[0].movedim(-1, 0), settings)
    assert nfe == 2 and out.shape == (1, 2 * size[0], 2 * size[1], 3)
    assert torch.equal(out[0], cli.movedim(0, -1))


def test_upscale_image_with_a_latent_model_needs_its_vae(comfy):
    handle, _ = install(comfy, make_model())
    image = torch.rand(1, 64, 64, 4)  # RGBA: alpha is dropped
    upscale = node(comfy, "CFMUpscaleImage").upscale
    with pytest.raises(CFMError) as no_vae:
        upscale(image, handle)
    assert "connect that VAE" in one_line_error(no_vae)
    out, = upscale(image, handle, "euler", 1, vae=comfy.sd.VAE())
    assert out.shape == (1, 128, 128, 3)
    with pytest.raises(CFMError) as tiny:
        upscale(torch.rand(1, 8, 8, 3), handle, vae=comfy.sd.VAE())
    assert "at least" in one_line_error(tiny)
