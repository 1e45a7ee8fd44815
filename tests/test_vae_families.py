"""VAE families (SD1.x, SDXL, SD3, Flux) from the files users hold: random-weight VAEs built from each family's
published diffusers config (blocks shrunk to 32 channels, same keys and depth), saved as an LDM single file, a
diffusers single file, a diffusers pipeline folder and a full model checkpoint; read, trained on for 2 steps,
described by ``info``, used by ``upscale --vae`` and refused for every other family."""
from __future__ import annotations

import json

import pytest
import torch
from helpers import load_script
from PIL import Image

from cfm_core import __main__ as cli
from cfm_core import load_model
from cfm_core.autoencoders import DiffusersVAE, LatentSpec, check_space_matches
from cfm_core.errors import CFMError
from cfm_core.vae_families import (
    FAMILIES,
    family_from_checkpoint_keys,
    family_from_metadata,
    resolve_family,
)

pytest.importorskip("diffusers")
make = load_script("make_family_vae")

SEEDS = {"sd15": 1, "sdxl": 2, "sd3": 3, "flux": 4}  # four different VAEs, as in real life
LAYOUTS = make.LAYOUTS
SAYS_FAMILY = {"folder", "checkpoint"}  # layouts whose files name the family; the others need --vae-family
TRAIN = ["--preset", "tiny", "--model-channels", "32", "--channel-mult", "1,2", "--num-res-blocks", "1",
         "--attention-resolutions", "", "--crop", "64", "--warmup", "1", "--ema-start", "1", "--batch-size", "1",
         "--cache-size", "2", "--max-steps", "2", "--save-every", "100", "--quiet", "--threads", "1"]


def _path(root, family: str, layout: str) -> str:
    return str(root / f"{family}-{layout}") + ("" if layout == "folder" else ".safetensors")


@pytest.fixture(scope="module")
def vaes(tmp_path_factory):
    """{family: (AutoencoderKL, {layout: path})}; the checkpoint stores its VAE in fp16, as most do."""
    root = tmp_path_factory.mktemp("family_vaes")
    out = {}
    for family, seed in SEEDS.items():
        vae = make.build_vae(family, seed=seed)
        paths = {layout: make.save_layout(vae, family, layout, _path(root, family, layout),
                                          dtype=torch.float16 if layout == "checkpoint" else torch.float32)
                 for layout in LAYOUTS}
        out[family] = (vae, paths)
    return out


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    import skimage.data

    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee"):
        Image.fromarray(getattr(skimage.data, name)()[:96, :96]).save(folder / f"{name}.png")
    return str(folder)


# ------------------------------------------------------------------------------------------ reading the family

def test_metadata_and_checkpoint_neighbours_name_the_family():
    assert family_from_metadata({"modelspec.architecture": "stable-diffusion-xl-v1-base"}) == "sdxl"
    assert family_from_metadata({"modelspec.architecture": "stable-diffusion-v3-medium"}) == "sd3"
    assert family_from_metadata({"modelspec.architecture": "flux-1-dev/vae"}) == "flux"
    assert family_from_metadata({"modelspec.architecture": "stable-diffusion-v1"}) == "sd15"
    assert family_from_metadata({"modelspec.architecture": "stable-diffusion-v2-768-v"}) == "sd15"
    assert family_from_metadata({"format": "pt"}) is None and family_from_metadata(None) is None
    for family, keys in make.CHECKPOINT_NEIGHBOURS.items():
        assert family_from_checkpoint_keys(keys) == family
    assert family_from_checkpoint_keys(["encoder.conv_in.weight", "decoder.conv_out.weight"]) is None
    unclip = ["cond_stage_model.model.ln_final.weight", "model.diffusion_model.label_emb.0.0.weight"]  # SD2.1 unCLIP
    assert family_from_checkpoint_keys(unclip) == "sd15"
    assert family_from_checkpoint_keys(["model.diffusion_model.label_emb.0.0.weight"]) == "sdxl"


@pytest.mark.parametrize("channels, flag", [(4, "--vae-family sd15|sdxl"), (16, "--vae-family sd3|flux")])
def test_an_ambiguous_vae_gets_a_one_line_question_never_a_guess(channels, flag):
    with pytest.raises(CFMError) as err:
        resolve_family(channels, path="vae.safetensors")
    assert flag in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(CFMError, match="--scale-factor"):
        resolve_family(8, path="odd.safetensors")
    assert resolve_family(4, scale=0.13025).key == "sdxl"  # a family's scale names it
    assert resolve_family(4, scale=0.5) is None  # a custom space, described by its scale alone
    with pytest.raises(CFMError, match="16-channel"):
        resolve_family(4, told="flux")
    with pytest.raises(CFMError, match="not SDXL's"):
        resolve_family(4, told="sdxl", scale=0.5)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family", list(SEEDS))
def test_every_layout_loads_in_its_family_space(vaes, family, layout):
    vae, paths = vaes[family]
    path = paths[layout]
    if layout in SAYS_FAMILY:
        space = DiffusersVAE.load(path)
    else:
        with pytest.raises(CFMError, match=r"--vae-family (sd15\|sdxl|sd3\|flux)"):
            DiffusersVAE.load(path)
        space = DiffusersVAE.load(path, family=family)
    f = FAMILIES[family]
    spec = space.spec
    assert (spec.family, spec.name, spec.channels, spec.downscale) == (family, family, f.channels, 8)
    assert (spec.scale_factor, spec.shift_factor) == (f.scale, f.shift)
    assert (space.vae.quant_conv is None) == (f.channels == 16)
    # one VAE, one fingerprint, whatever the layout or precision it is stored in
    reference = DiffusersVAE(vae).spec.fingerprint
    assert spec.fingerprint == reference != ""
    tolerance = {"atol": 1e-3, "rtol": 1e-3} if layout == "checkpoint" else {"atol": 0, "rtol": 0}
    loaded = space.vae.state_dict()
    for key, value in vae.state_dict().items():
        torch.testing.assert_close(loaded[key], value, **tolerance)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(space.encode(x), (vae.encode(x).latent_dist.mean - f.shift) * f.scale,
                                   **({"atol": 2e-2, "rtol": 2e-2} if layout == "checkpoint" else {}))


def test_metadata_names_the_family_of_a_single_file(vaes, tmp_path):
    vae, _ = vaes["sdxl"]
    path = make.save_layout(vae, "sdxl", "ldm", str(tmp_path / "sdxl_vae.safetensors"),
                            metadata={"modelspec.architecture": "stable-diffusion-xl-v1-base"})
    assert DiffusersVAE.load(path).spec.family == "sdxl"
    with pytest.raises(CFMError, match="SDXL VAE .*metadata.* says sd15") as err:
        DiffusersVAE.load(path, family="sd15")
    assert "\n" not in str(err.value)


def test_a_flag_that_contradicts_the_checkpoint_is_refused(vaes):
    with pytest.raises(CFMError, match="Flux.1 VAE .*diffusion model beside.* says sd3"):
        DiffusersVAE.load(vaes["flux"][1]["checkpoint"], family="sd3")


def test_only_the_vae_tensors_of_a_checkpoint_are_read(vaes, monkeypatch):
    import safetensors

    read = []
    real_open = safetensors.safe_open

    class Recording:
        def __init__(self, *args, **kwargs):
            self.handle = real_open(*args, **kwargs)

        def __enter__(self):
            self.handle.__enter__()
            return self

        def __exit__(self, *exc):
            return self.handle.__exit__(*exc)

        def get_tensor(self, key):
            read.append(key)
            return self.handle.get_tensor(key)

        def __getattr__(self, name):
            return getattr(self.handle, name)

    monkeypatch.setattr(safetensors, "safe_open", Recording)
    DiffusersVAE.load(vaes["sd3"][1]["checkpoint"])
    assert read and all(k.startswith("first_stage_model.") for k in read)


def test_a_diffusion_model_without_a_vae_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = str(tmp_path / "flux1-dev.safetensors")
    save_file({"double_blocks.0.img_attn.qkv.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(CFMError, match="without a VAE inside"):
        DiffusersVAE.load(path)


def test_families_refuse_each_other():
    flux = LatentSpec(channels=16, scale_factor=0.3611, shift_factor=0.1159, name="flux", family="flux")
    with pytest.raises(CFMError, match="trained for flux latents but this VAE is a sd3 VAE"):
        check_space_matches(flux, LatentSpec(channels=16, family="sd3"))
    check_space_matches(flux, LatentSpec(channels=16, family=""))  # a VAE that does not say: weights decide


# ------------------------------------------------------------------------------------------ train, info, upscale

def _train(photo_dir, out, vae_path, *extra) -> int:
    return cli.main(["train", "--data", photo_dir, "--out", str(out), "--space", "vae", "--vae", vae_path,
                     *TRAIN, *extra])


@pytest.fixture(scope="module")
def trained(vaes, photo_dir, tmp_path_factory):
    """{family: model path}, each trained 2 steps from the family's full checkpoint."""
    root = tmp_path_factory.mktemp("family_models")
    out = {}
    for family in SEEDS:
        assert _train(photo_dir, root / family, vaes[family][1]["checkpoint"]) == 0
        out[family] = str(root / family / "model.safetensors")
    return out


@pytest.mark.parametrize("layout", [layout for layout in LAYOUTS if layout != "checkpoint"])
@pytest.mark.parametrize("family", list(SEEDS))
def test_train_two_steps_from_each_layout(vaes, photo_dir, tmp_path, capsys, family, layout):
    path = vaes[family][1][layout]
    flag = () if layout in SAYS_FAMILY else ("--vae-family", family)
    if flag:
        assert _train(photo_dir, tmp_path / "asked", path) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--vae-family" in err[0]
    assert _train(photo_dir, tmp_path / "run", path, *flag) == 0
    latent = load_model(str(tmp_path / "run" / "model.safetensors")).config.latent
    f = FAMILIES[family]
    assert (latent.family, latent.channels, latent.scale_factor, latent.shift_factor) == (
        family, f.channels, f.scale, f.shift)


@pytest.mark.parametrize("family", list(SEEDS))
def test_info_upscale_and_refusals(vaes, trained, tmp_path, capsys, family):
    model = trained[family]
    capsys.readouterr()
    assert cli.main(["info", model]) == 0
    latent = json.loads(capsys.readouterr().out)["latent"]
    f = FAMILIES[family]
    assert (latent["family"], latent["channels"], latent["scale_factor"], latent["shift_factor"]) == (
        family, f.channels, f.scale, f.shift)
    image = tmp_path / "in.png"
    Image.fromarray((torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(1)) * 255).byte().numpy()).save(
        image)
    for layout, path in vaes[family][1].items():  # the same VAE in any layout
        out = tmp_path / f"out-{layout}.png"
        assert cli.main(["upscale", str(image), "-o", str(out), "--model", model, "--vae", path, "--steps", "1"]) == 0
        with Image.open(out) as im:
            assert im.size == (64, 64)
    for other in SEEDS:
        if other == family:
            continue
        for layout in ("ldm", "checkpoint"):
            code = cli.main(["upscale", str(image), "-o", str(tmp_path / "no.png"), "--model", model, "--vae",
                             vaes[other][1][layout]])
            err = capsys.readouterr().err.strip().splitlines()
            assert code == 2 and len(err) == 1, err
            assert "error" in err[0].lower() or "VAE" in err[0]
            assert not (tmp_path / "no.png").exists()


def test_evaluate_runs_a_family_model_in_its_space(vaes, trained, photo_dir, tmp_path, capsys):
    """``evaluate --vae`` uses the model's family (no question for an LDM file) and refuses another family's VAE."""
    args = ["evaluate", photo_dir, "--model", trained["flux"], "--crop", "64", "--steps", "1", "--swd-patches", "8"]
    assert cli.main([*args, "--vae", vaes["flux"][1]["ldm"], "--out-json", str(tmp_path / "e.json")]) == 0
    rows = json.loads((tmp_path / "e.json").read_text())["rows"]
    assert any(r["kind"] == "model" for r in rows)
    capsys.readouterr()
    assert cli.main([*args, "--vae", vaes["sd3"][1]["checkpoint"]]) == 2
    assert "says flux" in capsys.readouterr().err
