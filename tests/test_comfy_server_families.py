"""VAEs of every family in a REAL ComfyUI (skipped unless ``CFM_COMFY_URL`` is set, see test_comfy_server).

For each family whose files the server has (others are skipped), in ComfyUI/models:
* ``vae/`` a random-weight VAE with the family's published architecture, in a layout users have (VAELoader loads
  them as ComfyUI loads the real ones: 4 channels with quant_conv, or 16 without);
* ``cfm/`` a CFM model trained on exactly that VAE with the pack's trainer (2 steps: the pictures are noise, the
  latent spec — family, channels, scale, shift, fingerprint — is real).

=========  ========================================  ====================================
family     vae                                       cfm
=========  ========================================  ====================================
flux       cfm_test_flux_random_ae.safetensors       cfm-test-flux-2x.safetensors
sd3        cfm_test_sd3_random_vae.safetensors       cfm-test-sd3-2x.safetensors
sdxl       cfm_test_sdxl_random_vae.safetensors      cfm-test-sdxl-2x.safetensors
sd15       sd15_random_vae.safetensors               cfm-sd15-othervae-2x.safetensors
=========  ========================================  ====================================

Make one (about a minute each on 2 cores; M = ComfyUI/models; sd15's come from make_sd15_test_cfm.py):
    .venv/bin/python scripts/make_family_vae.py --family flux --layout ldm --seed 11 \\
        M/vae/cfm_test_flux_random_ae.safetensors
    .venv/bin/python -m cfm_core train --data PHOTOS --space vae --vae M/vae/cfm_test_flux_random_ae.safetensors \\
        --vae-family flux --preset tiny --crop 64 --batch-size 2 --cache-size 4 --max-steps 2 --warmup 1 \\
        --out <scratch run folder> --export M/cfm/cfm-test-flux-2x.safetensors
(sd3: ``--layout diffusers --seed 12``; sdxl: ``--layout ldm --seed 13``.)
"""
from __future__ import annotations

import pytest
from test_comfy_server import (
    SAMPLE_IMAGE,
    URL,
    assert_one_line_error,
    assert_still_serving,
    object_info,  # noqa: F401 (a fixture)
    output_files,
    png_size,
    run,
    upload_image,
)

CASES = {  # family: (VAE file, CFM model trained on it, latent channels)
    "flux": ("cfm_test_flux_random_ae.safetensors", "cfm-test-flux-2x.safetensors", 16),
    "sd3": ("cfm_test_sd3_random_vae.safetensors", "cfm-test-sd3-2x.safetensors", 16),
    "sdxl": ("cfm_test_sdxl_random_vae.safetensors", "cfm-test-sdxl-2x.safetensors", 4),
    "sd15": ("sd15_random_vae.safetensors", "cfm-sd15-othervae-2x.safetensors", 4),
}

pytestmark = [pytest.mark.comfy_server,
              pytest.mark.skipif(not URL, reason="set CFM_COMFY_URL to a running ComfyUI with this pack")]


@pytest.fixture(scope="module")
def available(object_info):  # noqa: F811
    vaes = set(object_info["VAELoader"]["input"]["required"]["vae_name"][0])
    models = set(object_info["CFMLoader"]["input"]["required"]["model_name"][0])
    return {family for family, (vae, model, _) in CASES.items() if vae in vaes and model in models}


@pytest.fixture(scope="module")
def image(object_info):  # noqa: F811
    return upload_image(SAMPLE_IMAGE)


def graph(vae: str, model: str, image: str, prefix: str = "cfm_test_family") -> dict:
    """LoadImage → VAEEncode → PixelSpaceUpsample → NoiseAugment → CFMUpscaleLatent → VAE Decode → SaveImage."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "13": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "bilinear",
                                                       "width": 128, "height": 128, "crop": "center"}},
        "2": {"class_type": "VAELoader", "inputs": {"vae_name": vae}},
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["13", 0], "vae": ["2", 0]}},
        "4": {"class_type": "CFMLoader", "inputs": {"model_name": model, "dtype": "fp32"}},
        "5": {"class_type": "PixelSpaceUpsample", "inputs": {
            "samples": ["3", 0], "vae": ["2", 0], "scale_by": 0.0, "resize_method": "bilinear",
            "vae_tiling": "never", "vae_tile_size": 512, "cfm_model": ["4", 0]}},
        "6": {"class_type": "NoiseAugment", "inputs": {
            "samples": ["5", 0], "noise_step": -1, "seed": 3, "scale_factor": 0.18215, "shift_factor": 0.0,
            "cfm_model": ["4", 0]}},
        "7": {"class_type": "CFMUpscaleLatent", "inputs": {
            "cfm_model": ["4", 0], "samples": ["6", 0], "solver": "default", "steps": 2, "seed": 3,
            "noise_step": -1, "tile": 0, "overlap": 8}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["2", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": prefix}},
    }


def case_on_server(available, family: str):
    """(VAE file, CFM model, channels) of ``family``; the test is skipped when the server lacks its files."""
    if family not in available:
        pytest.skip(f"the server lacks the {family} files; see this file's docstring")
    return CASES[family]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("family", list(CASES))
def test_the_latent_graph_runs_with_each_familys_vae(available, image, family):
    vae, model, _ = case_on_server(available, family)
    result = run(graph(vae, model, image, f"cfm_test_{family}"))
    assert result.status == "success", result.explain()
    outputs = output_files(result)
    assert len(outputs) == 1 and png_size(outputs[0]) == (256, 256)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("family", list(CASES))
def test_a_model_refuses_every_other_familys_vae_in_one_line(available, image, family):
    _, model, channels = case_on_server(available, family)
    others = [other for other in CASES if other != family and other in available]
    if not others:
        pytest.skip("no other family's VAE on the server")
    for other in others:
        vae, _, other_channels = CASES[other]
        words = ("fingerprint",) if other_channels == channels else (str(channels), str(other_channels), "channel")
        assert_one_line_error(run(graph(vae, model, image)), "PixelSpaceUpsample", *words)
    assert_still_serving()
