"""A 16-channel Flux-layout VAE in a REAL ComfyUI (skipped unless ``CFM_COMFY_URL`` is set, see test_comfy_server).

The server needs, in its models folders (names overridable by env):
* ``CFM_TEST_FLUX_VAE`` (default ``cfm_test_flux_random_ae.safetensors``, models/vae): a random-weight Flux VAE
  in the layout of Flux's ``ae.safetensors`` (LDM keys, 16 channels, no quant_conv), published widths;
* ``CFM_TEST_OTHER_16CH_VAE`` (``cfm_test_sd3_random_vae.safetensors``, models/vae): another 16-channel VAE
  (SD3 family, diffusers keys);
* ``CFM_TEST_FLUX_CFM_MODEL`` (``cfm-test-flux-2x.safetensors``, models/cfm): a CFM model trained with the pack's
  trainer on that Flux VAE; and the SD1.5 VAE of ``CFM_TEST_SD15_VAE`` (``sd15_random_vae.safetensors``).
Make them (about two minutes on 2 cores; M = ComfyUI/models):
    .venv/bin/python scripts/make_family_vae.py --family flux --layout ldm --seed 11 \
        M/vae/cfm_test_flux_random_ae.safetensors
    .venv/bin/python scripts/make_family_vae.py --family sd3 --layout diffusers --seed 12 \
        M/vae/cfm_test_sd3_random_vae.safetensors
    .venv/bin/python -m cfm_core train --data PHOTOS --space vae --vae M/vae/cfm_test_flux_random_ae.safetensors \
        --vae-family flux --preset tiny --crop 64 --batch-size 2 --cache-size 4 --max-steps 2 --warmup 1 \
        --out /tmp/flux_run --export M/cfm/cfm-test-flux-2x.safetensors
"""
from __future__ import annotations

import os

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

FLUX_VAE = os.environ.get("CFM_TEST_FLUX_VAE", "cfm_test_flux_random_ae.safetensors")
OTHER_16CH_VAE = os.environ.get("CFM_TEST_OTHER_16CH_VAE", "cfm_test_sd3_random_vae.safetensors")
SD15_VAE = os.environ.get("CFM_TEST_SD15_VAE", "sd15_random_vae.safetensors")
FLUX_MODEL = os.environ.get("CFM_TEST_FLUX_CFM_MODEL", "cfm-test-flux-2x.safetensors")

pytestmark = [pytest.mark.comfy_server,
              pytest.mark.skipif(not URL, reason="set CFM_COMFY_URL to a running ComfyUI with this pack")]


@pytest.fixture(scope="module")
def flux_files(object_info):  # noqa: F811
    vaes = object_info["VAELoader"]["input"]["required"]["vae_name"][0]
    models = object_info["CFMLoader"]["input"]["required"]["model_name"][0]
    missing = [name for name in (FLUX_VAE, OTHER_16CH_VAE, SD15_VAE) if name not in vaes]
    missing += [FLUX_MODEL] if FLUX_MODEL not in models else []
    if missing:
        pytest.skip(f"the server lacks {missing}; see this file's docstring")


def graph(vae: str, image: str) -> dict:
    """LoadImage → VAEEncode → PixelSpaceUpsample → NoiseAugment → CFMUpscaleLatent → VAE Decode → SaveImage."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "VAELoader", "inputs": {"vae_name": vae}},
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["13", 0], "vae": ["2", 0]}},
        "13": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "bilinear",
                                                       "width": 128, "height": 128, "crop": "center"}},
        "4": {"class_type": "CFMLoader", "inputs": {"model_name": FLUX_MODEL, "dtype": "fp32"}},
        "5": {"class_type": "PixelSpaceUpsample", "inputs": {
            "samples": ["3", 0], "vae": ["2", 0], "scale_by": 0.0, "resize_method": "bilinear",
            "vae_tiling": "never", "vae_tile_size": 512, "cfm_model": ["4", 0]}},
        "6": {"class_type": "NoiseAugment", "inputs": {
            "samples": ["5", 0], "noise_step": -1, "seed": 3, "scale_factor": 0.3611, "shift_factor": 0.1159,
            "cfm_model": ["4", 0]}},
        "7": {"class_type": "CFMUpscaleLatent", "inputs": {
            "cfm_model": ["4", 0], "samples": ["6", 0], "solver": "default", "steps": 2, "seed": 3,
            "noise_step": -1, "tile": 0, "overlap": 8}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["2", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "cfm_test_flux"}},
    }


@pytest.mark.timeout(900)
def test_flux_vae_runs_the_latent_graph(flux_files):
    result = run(graph(FLUX_VAE, upload_image(SAMPLE_IMAGE)))
    assert result.status == "success", result.explain()
    outputs = output_files(result)
    assert len(outputs) == 1 and png_size(outputs[0]) == (256, 256)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("vae, words", [(OTHER_16CH_VAE, ("flux", "fingerprint")), (SD15_VAE, ("16", "4"))])
def test_other_families_vaes_are_refused_in_one_line(flux_files, vae, words):
    assert_one_line_error(run(graph(vae, upload_image(SAMPLE_IMAGE))), "PixelSpaceUpsample", *words)
    assert_still_serving()
