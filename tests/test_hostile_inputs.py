"""Issue 20: hostile and mistaken inputs, as a new user (or an attacker) would hand them to the CLI, the API and
the nodes. The rules: no hang; nothing replaced that the user did not name with ``--overwrite``; no half-written
file; a one-line error naming the input and the fix with a non-zero exit, and no traceback unless ``--debug`` /
``CFM_DEBUG=1``; non-finite numbers are an error, never an image; no code from a file ever runs.

CLI cases run through ``cfm_core.__main__.main`` in-process (exit code and stderr, as the shell sees them) and,
where the process itself matters (start-up, signals, pipes, hangs, stream encodings), as real subprocesses.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from cfm_core import (
    CFMConfig,
    CFMError,
    CFMModel,
    SpaceToDepth,
    boost,
    latent_upsample,
    pixel_space_upsample,
    preset,
    save_model,
)
from cfm_core.__main__ import main
from cfm_core.images import list_images
from cfm_core.pipeline import upscale_image, upscale_latent

ROOT = Path(__file__).resolve().parent.parent
TINY_TRAIN = ["--preset", "tiny", "--model-channels", "32", "--channel-mult", "1,2", "--num-res-blocks", "1",
              "--attention-resolutions", "", "--crop", "32", "--warmup", "2", "--ema-start", "1", "--lr", "1e-3",
              "--log-every", "1", "--quiet", "--threads", "1", "--space", "s2d2", "--batch-size", "1"]


# ------------------------------------------------------------------------------------------- helpers

def pixel_model(**config) -> CFMModel:
    """A tiny space-to-depth 2× model with a non-zero velocity."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CFMModel(CFMConfig(unet=preset("tiny", latent_channels=12), latent=SpaceToDepth(2).spec,
                                   noise_step=100, default_steps=1, **config))
        torch.nn.init.normal_(model.net.out[-1].weight, std=0.02)
    return model.eval()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("models") / "tiny.safetensors")
    save_model(pixel_model(), path)
    return path


def photo(path: Path, w: int = 24, h: int = 16) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    Image.fromarray((torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy()).save(path)
    return str(path)


def cli(capsys, *args) -> tuple[int, str]:
    """Run the CLI in-process → (exit code, stderr); the error (if any) must be one line without a traceback."""
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code:
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, err
    return code, err


def run_cli(*args, env: dict | None = None, timeout: float = 180, **popen) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: a fresh Python process."""
    full_env = {k: v for k, v in os.environ.items() if k != "CFM_DEBUG"}
    full_env.update({"PYTHONPATH": str(ROOT), **(env or {})})
    return subprocess.run([sys.executable, "-m", "cfm_core", *map(str, args)], capture_output=True, timeout=timeout,
                          env=full_env, **popen)


def rewrite_config(src: str, dst: Path, edit) -> str:
    """A copy of model ``src`` whose config metadata is ``edit(config_dict)`` (a string is stored as is)."""
    from safetensors import safe_open

    with safe_open(src, framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        meta = dict(handle.metadata())
    config = edit(json.loads(meta["config"]))
    meta["config"] = config if isinstance(config, str) else json.dumps(config)
    save_file(tensors, str(dst), metadata=meta)
    return str(dst)


def png_header_only(path: Path, w: int, h: int) -> str:
    """A PNG whose header declares w×h but whose pixel data is cut off: decoding it would fail, so a size error
    proves the size was read from the header alone."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))
    return str(path)


class Payload:
    """Unpickling this would create ``marker``: proof that code from a file ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def train_state(out: Path, **overrides) -> str:
    """A valid one-step train_state.pt of the tiny TINY_TRAIN architecture, without training."""
    from cfm_core.train.train import STATE_FILE

    config = CFMConfig(unet=preset("tiny", latent_channels=12, model_channels=32, channel_mult=(1, 2),
                                   num_res_blocks=1, attention_resolutions=()), latent=SpaceToDepth(2).spec)
    model = CFMModel(config)
    optim = torch.optim.Adam(model.net.parameters())
    state = {"step": 1, "net": model.net.state_dict(), "ema": model.net.state_dict(), "optim": optim.state_dict(),
             "config": json.dumps(config.to_dict()), "args": "{}", "elapsed": 1.0, **overrides}
    out.mkdir(parents=True, exist_ok=True)
    torch.save(state, out / STATE_FILE)
    return str(out / STATE_FILE)


# ------------------------------------------------------------------------------------------- hangs: symlink loops

def test_folder_links_to_itself_and_its_parent_are_walked_once(tmp_path):
    folder = tmp_path / "L"
    photo(folder / "img.png")
    photo(folder / "sub" / "b.png")
    (folder / ".tmp-123img.png").write_bytes(b"")  # an unfinished atomic write is not an input
    os.symlink(".", folder / "a")
    os.symlink(".", folder / "b")
    os.symlink("../../L", folder / "sub" / "up")
    expected = [str(folder / "img.png"), str(folder / "sub" / "b.png")]
    assert list_images([str(folder)]) == expected
    assert list_images([str(folder / "**" / "*.png")]) == expected  # glob's own ** would loop too
    assert list_images([str(folder / "**")]) == expected
    assert list_images([str(folder / "*.png")]) == expected[:1]


def test_upscale_of_a_self_linked_folder_ends_with_one_output(model_file, tmp_path):
    folder = tmp_path / "L"
    photo(folder / "img.png")
    os.symlink(".", folder / "a")
    os.symlink(".", folder / "b")
    done = run_cli("upscale", folder, "-o", tmp_path / "out", "--model", model_file, "--threads", "1", timeout=240)
    assert done.returncode == 0, done.stderr.decode()
    written = sorted(p.relative_to(tmp_path / "out") for p in (tmp_path / "out").rglob("*.png"))
    assert written == [Path("img_x2.png")]


# ------------------------------------------------------------------------------------------- files replaced

def official_checkpoint(path: Path) -> str:
    from cfm_core import VelocityUNet

    net = VelocityUNet(preset("tiny", attention="official"))
    torch.save({"state_dict": {f"ema_model.ema_model.net.{k}": v for k, v in net.state_dict().items()}}, path)
    return str(path)


def test_convert_official_never_replaces_its_source_and_asks_before_replacing(tmp_path, capsys):
    src = official_checkpoint(tmp_path / "X.ckpt")
    before = Path(src).read_bytes()
    for extra in ([], ["--overwrite"]):
        code, err = cli(capsys, "convert-official", src, src, *extra)
        assert code == 2 and "own input" in err
    os.symlink(src, tmp_path / "alias.safetensors")  # another name for the same file
    code, err = cli(capsys, "convert-official", src, tmp_path / "alias.safetensors", "--overwrite")
    assert code == 2 and "own input" in err
    assert Path(src).read_bytes() == before
    asks_before_replacing(capsys, tmp_path, "convert-official", src)


def asks_before_replacing(capsys, tmp_path, *command) -> None:
    """``command DEST``: an existing DEST is kept unless --overwrite (then replaced), a folder is refused."""
    existing = tmp_path / "existing.safetensors"
    existing.write_bytes(b"keep me")
    code, err = cli(capsys, *command, existing)
    assert code == 2 and "--overwrite" in err and existing.read_bytes() == b"keep me"
    assert cli(capsys, *command, existing, "--overwrite")[0] == 0
    assert existing.read_bytes() != b"keep me"
    code, err = cli(capsys, *command, tmp_path)
    assert code == 2 and "is a folder" in err


def test_export_never_replaces_the_runs_state_and_asks_before_replacing(tmp_path, capsys):
    run = tmp_path / "run"
    state = train_state(run)
    before = Path(state).read_bytes()
    for extra in ([], ["--overwrite"]):
        code, err = cli(capsys, "export", run, state, *extra)
        assert code == 2 and "own input" in err
    assert Path(state).read_bytes() == before
    asks_before_replacing(capsys, tmp_path, "export", run)


def test_train_export_to_an_existing_file_is_refused_before_training(tmp_path, capsys):
    data = tmp_path / "data"
    photo(data / "a.png", 64, 64)
    existing = tmp_path / "keep.safetensors"
    existing.write_bytes(b"keep me")
    code, err = cli(capsys, "train", "--data", data, "--out", tmp_path / "run", *TINY_TRAIN, "--max-steps", "1",
                    "--export", existing)
    assert code == 2 and "--overwrite" in err and existing.read_bytes() == b"keep me"
    assert not (tmp_path / "run").exists()  # refused before anything was created
    state = train_state(tmp_path / "old")
    code, err = cli(capsys, "train", "--data", data, "--out", tmp_path / "old", *TINY_TRAIN, "--max-steps", "2",
                    "--resume", "--export", state, "--overwrite")
    assert code == 2 and "own input" in err


def test_disk_full_while_writing_compare_takes_the_main_output_back(model_file, tmp_path, capsys, monkeypatch):
    from cfm_core.cli import upscale as cli_upscale

    src = photo(tmp_path / "in.png")
    real_save = cli_upscale.save

    def full_on_compare(path, *args, **kwargs):
        if path.endswith("_compare.png"):
            raise CFMError(f"cannot write {path!r} (No space left on device); check that the folder is writable")
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(cli_upscale, "save", full_on_compare)
    code, err = cli(capsys, "upscale", src, "-o", tmp_path / "out/", "--model", model_file, "--compare")
    assert code == 2 and "No space left" in err
    assert not list((tmp_path / "out").iterdir())  # nothing half done: a rerun is not refused
    monkeypatch.setattr(cli_upscale, "save", real_save)
    assert cli(capsys, "upscale", src, "-o", tmp_path / "out/", "--model", model_file, "--compare")[0] == 0


def test_an_output_that_appears_during_the_run_is_not_replaced(model_file, tmp_path, capsys, monkeypatch):
    """Two runs into one folder: the later writer must not replace what the other wrote meanwhile."""
    from cfm_core.cli import upscale as cli_upscale

    src = photo(tmp_path / "in.png")
    target = tmp_path / "out" / "in_x2.png"
    real = cli_upscale.upscale_file

    def other_run_writes_first(model, space, job, *args, **kwargs):
        done = real(model, space, job, *args, **kwargs)
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(b"the other run's result")
        return done

    monkeypatch.setattr(cli_upscale, "upscale_file", other_run_writes_first)
    code, err = cli(capsys, "upscale", src, "-o", tmp_path / "out/", "--model", model_file)
    assert code == 2 and "appeared while this run was working" in err
    assert target.read_bytes() == b"the other run's result"
    assert not [p for p in os.listdir(tmp_path / "out") if p.startswith(".tmp-")]


# ------------------------------------------------------------------------------------------- broken model files

@pytest.mark.parametrize("edit, fragment", [
    (lambda c: "just a string", "broken config"),
    (lambda c: json.dumps(json.dumps(c)), "JSON object"),  # JSON inside JSON: a string, not an object
    (lambda c: {**c, "unet": {**c["unet"], "channel_mult": ["x"]}}, "channel_mult"),
    (lambda c: {**c, "unet": {**c["unet"], "model_channels": 128000}}, "model_channels"),
    (lambda c: {**c, "unet": {**c["unet"], "num_res_blocks": 10 ** 9}}, "num_res_blocks"),
    (lambda c: {**c, "unet": {**c["unet"], "norm_groups": 0}}, "norm_groups"),
    (lambda c: {**c, "unet": {**c["unet"], "model_channels": "64"}}, "model_channels"),
    (lambda c: {**c, "default_steps": 0}, "default steps"),
    (lambda c: {**c, "default_solver": "bogus"}, "default solver"),
    (lambda c: {**c, "latent": {**c["latent"], "downscale": 0}}, "downscale"),
    (lambda c: {**c, "factor": "2"}, "factor"),
    (lambda c: {**c, "unet": [1, 2]}, "'unet' and 'latent' objects"),
])
def test_broken_config_metadata_is_a_one_line_error_everywhere(model_file, tmp_path, capsys, edit, fragment):
    from cfm_core.checkpoint import load_model, read_config

    bad = rewrite_config(model_file, tmp_path / "bad.safetensors", edit)
    for call in (read_config, load_model):
        with pytest.raises(CFMError, match=fragment) as excinfo:
            call(bad)
        assert "\n" not in str(excinfo.value) and "bad.safetensors" in str(excinfo.value)
    code, err = cli(capsys, "info", bad)
    assert code == 2 and fragment in err
    code, err = cli(capsys, "upscale", photo(tmp_path / "in.png"), "-o", tmp_path / "o.png", "--model", bad)
    assert code == 2 and fragment in err and "in.png" not in err  # blamed on the model, not the image


def test_declared_sizes_are_checked_against_the_tensors_before_allocating(model_file, tmp_path):
    """8192 channels pass the plausibility bounds; building that UNet would take tens of GB."""
    from cfm_core.checkpoint import load_model

    bad = rewrite_config(model_file, tmp_path / "big.safetensors",
                         lambda c: {**c, "unet": {**c["unet"], "model_channels": 8192}})
    allocated = []
    real_init = CFMModel.__init__

    def spy(self, config):
        allocated.append(torch.empty(0).device.type)  # the device new tensors would land on now
        real_init(self, config)

    CFMModel.__init__ = spy
    try:
        with pytest.raises(CFMError, match="config says"):
            load_model(bad)
    finally:
        CFMModel.__init__ = real_init
    assert allocated == ["meta"]  # only the shape check's meta-device model was ever built


def test_nan_weights_are_an_error_never_a_black_image(tmp_path, capsys):
    model = pixel_model()
    with torch.no_grad():
        model.net.out[-1].weight.fill_(float("nan"))
    path = str(tmp_path / "nan.safetensors")
    save_model(model, path)
    code, err = cli(capsys, "upscale", photo(tmp_path / "in.png"), "-o", tmp_path / "out.png", "--model", path)
    assert code == 2 and "NaN" in err and "fp32" in err
    assert not (tmp_path / "out.png").exists()
    z = torch.zeros(1, 12, 8, 8)
    with pytest.raises(CFMError, match="NaN"):
        model(z, 0.5, z)  # the bare velocity call
    with pytest.raises(CFMError, match="NaN"):
        boost(model, z)


def test_model_paths_that_are_folders_empty_or_pickles(tmp_path, capsys):
    src = photo(tmp_path / "in.png")
    code, err = cli(capsys, "upscale", src, "-o", tmp_path / "o.png", "--model", tmp_path)
    assert code == 2 and "is a folder" in err
    code, err = cli(capsys, "info", tmp_path)
    assert code == 2 and "is a folder" in err
    (tmp_path / "empty.safetensors").write_bytes(b"")
    code, err = cli(capsys, "info", tmp_path / "empty.safetensors")
    assert code == 2 and "empty (0 bytes)" in err


# ------------------------------------------------------------------------------------------- the API's inputs

def test_api_refuses_8_bit_and_out_of_range_images_and_wrong_channels():
    model = pixel_model()
    image = torch.rand(1, 3, 16, 16)
    with pytest.raises(CFMError, match="uint8 tensor; pass floats in \\[0, 1\\]"):
        upscale_image(model, (image * 255).to(torch.uint8))
    with pytest.raises(CFMError, match="divide 8-bit values by 255"):
        upscale_image(model, image * 255)
    with pytest.raises(CFMError, match=r"\(x \+ 1\) / 2"):
        upscale_image(model, image * 2 - 1)
    with pytest.raises(CFMError, match="NaN"):
        upscale_image(model, torch.full_like(image, float("nan")))
    out, _ = upscale_image(model, image)  # the valid input still works
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()
    x = torch.zeros(1, 4, 8, 8)
    with pytest.raises(CFMError, match="takes \\[B, 12, H, W\\]"):
        model(x, 0.5, x)
    with pytest.raises(CFMError, match="4 channels but this CFM model expects 12"):
        boost(model, x)
    z = torch.zeros(1, 12, 8, 8)
    cases = {"makes 48-channel /4 latents": lambda: upscale_latent(model, z, SpaceToDepth(4)),
             "t has 3 values for a batch of 1": lambda: model(z, torch.rand(3), z),
             "must be [B, 12, H, W]": lambda: pixel_space_upsample(torch.zeros(1, 5, 8, 8), SpaceToDepth(2)),
             "mode 'bogus' is unknown": lambda: latent_upsample(z, 2, "bogus"),
             "is empty": lambda: boost(model, torch.zeros(1, 12, 0, 9)),
             "complex64 tensor": lambda: boost(model, z.to(torch.complex64))}
    for fragment, call in cases.items():
        with pytest.raises(CFMError, match=re.escape(fragment)):
            call()


# ------------------------------------------------------------------------------------------- images

def test_animated_and_multi_page_images_are_refused(model_file, tmp_path, capsys):
    frames = [Image.new("RGB", (16, 16), (i * 80, 0, 0)) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "pages.tiff", save_all=True, append_images=frames[1:])
    for name, kind in (("anim.gif", "animated GIF with 3 frames"), ("pages.tiff", "multi-page TIFF")):
        code, err = cli(capsys, "upscale", tmp_path / name, "-o", tmp_path / "o.png", "--model", model_file)
        assert code == 2 and kind in err and name in err
    Image.new("RGB", (16, 16)).save(tmp_path / "still.gif")
    assert cli(capsys, "upscale", tmp_path / "still.gif", "-o", tmp_path / "o.png", "--model", model_file)[0] == 0


def test_huge_images_are_refused_from_their_header_before_decoding(model_file, tmp_path, capsys):
    from cfm_core.images import load_image

    huge = png_header_only(tmp_path / "huge.png", 10000, 10000)
    with pytest.raises(CFMError, match="100 MP, over the limit"):
        load_image(huge)
    code, err = cli(capsys, "upscale", huge, "-o", tmp_path / "o.png", "--model", model_file)
    assert code == 2 and "over 16384 px per side" in err and "--scale 2" not in err  # the scale is already 2
    for side in (20000, 60000):  # beyond Pillow's own bomb limit, which Image.open itself enforces
        code, err = cli(capsys, "upscale", png_header_only(tmp_path / f"s{side}.png", side, side), "-o",
                        tmp_path / "o.png", "--model", model_file)
        assert code == 2 and "larger than" in err
    wide = png_header_only(tmp_path / "wide.png", 6000, 100)
    code, err = cli(capsys, "upscale", wide, "-o", tmp_path / "o.png", "--model", model_file, "--scale", "4")
    assert code == 2 and "or use --scale 2" in err and "not a readable" not in err


def test_unwritable_output_formats_are_refused_naming_the_supported_ones(model_file, tmp_path, capsys):
    src = photo(tmp_path / "in.png")
    for name in ("out.gif", "out.avif", "out.heic"):
        code, err = cli(capsys, "upscale", src, "-o", tmp_path / name, "--model", model_file)
        assert code == 2 and ".png, .jpg or .webp" in err
        assert not (tmp_path / name).exists()  # no folder called out.gif


def test_zero_byte_and_folder_inputs(model_file, tmp_path, capsys):
    (tmp_path / "zero.png").write_bytes(b"")
    code, err = cli(capsys, "upscale", tmp_path / "zero.png", "-o", tmp_path / "o.png", "--model", model_file)
    assert code == 2 and "zero.png: not a readable image" in err
    (tmp_path / "folder.png").mkdir()
    photo(tmp_path / "folder.png" / "inside.png")
    code, _ = cli(capsys, "upscale", tmp_path / "folder.png", "-o", tmp_path / "out/", "--model", model_file)
    assert code == 0 and (tmp_path / "out" / "inside_x2.png").exists()


def test_odd_file_names_and_a_non_utf8_terminal(model_file, tmp_path):
    """Undecodable bytes and a newline in file names, printed to an ASCII-only stdout: no crash, one line each."""
    folder = tmp_path / "in"
    photo(folder / "plain.png")
    odd = os.fsdecode(b"caf\xe9 \xff.png")  # Latin-1 bytes: not UTF-8, a surrogate escape in Python
    photo(folder / odd)
    photo(folder / "two\nlines.png")
    done = run_cli("upscale", folder, "-o", tmp_path / "out", "--model", model_file, "--threads", "1",
                   env={"PYTHONIOENCODING": "ascii"})
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert b"Traceback" not in done.stderr
    assert len(list((tmp_path / "out").iterdir())) == 3
    assert (tmp_path / "out" / os.fsdecode(b"caf\xe9 \xff_x2.png")).exists()


def test_sizes_beyond_reason_and_special_files_are_refused(model_file, tmp_path, capsys):
    src = photo(tmp_path / "in.png")
    for flags, fragment in ((["-o", tmp_path / "a.png", "--steps", "1000000000"], "integer in [1, 10000]"),
                            (["-o", tmp_path / "b.png", "--threads", "100000"], "--threads 100000 must lie in"),
                            (["-o", ""], "-o is empty")):
        code, err = cli(capsys, "upscale", src, "--model", model_file, *flags)
        assert code == 2 and fragment in err
    folder = tmp_path / "fifo"
    photo(folder / "ok.png")
    os.mkfifo(folder / "x.png")
    assert list_images([str(folder)]) == [str(folder / "ok.png")]  # opening the FIFO would block for ever
    code, err = cli(capsys, "info", os.devnull)
    assert code == 2 and "is not a regular file" in err
    code, err = cli(capsys, "export", src, tmp_path / "x.safetensors")
    assert code == 2 and "is not a torch file" in err


# ------------------------------------------------------------------------------------------- VAE folders

def vae_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({
        "_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3, "latent_channels": 4,
        "block_out_channels": [32], "layers_per_block": 1, "norm_num_groups": 32,
        "down_block_types": ["DownEncoderBlock2D"], "up_block_types": ["UpDecoderBlock2D"]}))
    return path


def test_vae_folders_with_payloads_missing_weights_or_bad_config(tmp_path):
    from cfm_core.autoencoders import load_autoencoder_kl

    marker = tmp_path / "PWNED"
    payload = vae_folder(tmp_path / "payload")
    with open(payload / "diffusion_pytorch_model.bin", "wb") as fh:
        pickle.dump({"encoder.conv_in.weight": Payload(marker)}, fh)
    missing = vae_folder(tmp_path / "missing")
    malformed = vae_folder(tmp_path / "malformed")
    (malformed / "config.json").write_text("{not json")
    for folder in (payload, missing, malformed):
        with pytest.raises(CFMError) as excinfo:
            load_autoencoder_kl(str(folder))
        assert "\n" not in str(excinfo.value) and folder.name in str(excinfo.value)
    assert not marker.exists()
    assert "weights_only=True" in load_autoencoder_kl.__doc__  # says how .bin files are read, not "no pickle"


# ------------------------------------------------------------------------------------------- train

@pytest.mark.parametrize("flags, fragment", [
    (["--save-every", "0"], "--save-every 0 must be ≥ 1"),
    (["--batch-size", "0"], "--batch-size 0 must be ≥ 1"),
    (["--threads", "-1"], "--threads -1 must be ≥ 0"),
    (["--log-every", "0"], "--log-every 0 must be ≥ 1"),
    (["--grad-accum", "0"], "--grad-accum 0"),
    (["--max-steps", "0"], "--max-steps 0"),
    (["--lr", "0"], "--lr 0 must be a positive number"),
    (["--lr", "nan"], "--lr nan must be a positive number"),
    (["--ema-decay", "2"], "--ema-decay 2"),
    (["--device", "bogus"], "--device 'bogus' is not a device"),
    (["--device", "cuda"], "no CUDA GPU"),
    (["--default-steps", "0"], "default steps"),
    (["--noise-step", "5000"], "noise_step=5000"),
    (["--init-from", "."], "is a folder"),
])
def test_train_flag_errors_come_first_and_leave_no_folder(tmp_path, capsys, flags, fragment, monkeypatch):
    if "cuda" in flags:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # what a CPU machine says
    data = tmp_path / "data"
    photo(data / "a.png", 64, 64)
    code, err = cli(capsys, "train", "--data", data, "--out", tmp_path / "run", *TINY_TRAIN, "--max-steps", "1",
                    *flags)  # the last --threads wins
    assert code == 2 and fragment in err
    assert not (tmp_path / "run").exists()


def test_training_data_skips_animated_and_huge_images_up_front(tmp_path):
    from cfm_core.train.data import scan_images

    data = tmp_path / "data"
    good = photo(data / "a.png", 64, 64)
    frames = [Image.new("RGB", (64, 64), (i * 80, 0, 0)) for i in range(2)]
    frames[0].save(data / "pages.tiff", save_all=True, append_images=frames[1:])
    png_header_only(data / "huge.png", 9000, 9000)
    assert scan_images(str(data), 32) == [good]  # not a failure at the step that first draws them


def test_failed_run_leaves_no_empty_out_folder_and_out_must_be_a_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, err = cli(capsys, "train", "--data", tmp_path / "empty", "--out", tmp_path / "run", *TINY_TRAIN)
    assert code == 2 and "contains no images" in err and not (tmp_path / "run").exists()
    (tmp_path / "file").write_text("x")
    code, err = cli(capsys, "train", "--data", tmp_path / "empty", "--out", tmp_path / "file", *TINY_TRAIN)
    assert code == 2 and "is a file" in err
    code, err = cli(capsys, "train", "--data", tmp_path, "--out", tmp_path / "run", *TINY_TRAIN)
    assert code == 2 and "inside --data" in err and not (tmp_path / "run").exists()


def test_resume_refuses_broken_states_in_one_line_and_runs_no_payload(tmp_path, capsys):
    data = tmp_path / "data"
    photo(data / "a.png", 64, 64)
    marker = tmp_path / "PWNED"
    cases = {"lacks ['net', 'ema', 'optim', 'config']": {"step": 1},
             "holds objects other than tensors": {"step": 1, "x": Payload(marker)},
             "malformed 'step'": None, "broken config": None, "do not fit": None, "unreadable": None}
    for fragment, state in cases.items():
        out = tmp_path / fragment.split()[0].strip("'")
        path = train_state(out)
        if fragment == "malformed 'step'":
            train_state(out, step=-3)
        elif fragment == "broken config":
            train_state(out, config="{oops")
        elif fragment == "do not fit":
            train_state(out, net={"input_blocks.0.0.weight": torch.zeros(1)}, ema={"x": torch.zeros(1)})
        elif fragment == "unreadable":
            Path(path).write_bytes(b"")
        else:
            torch.save(state, path)
        code, err = cli(capsys, "train", "--data", data, "--out", out, *TINY_TRAIN, "--max-steps", "2", "--resume")
        assert code == 2 and fragment in err, err
        code, err = cli(capsys, "export", out, tmp_path / f"{out.name}.safetensors")
        assert code == 2, fragment
    assert not marker.exists()


def test_resume_skips_a_garbage_log_line_and_removes_stale_temporaries(tmp_path, capsys):
    data = tmp_path / "data"
    photo(data / "a.png", 64, 64)
    out = tmp_path / "run"
    assert cli(capsys, "train", "--data", data, "--out", out, *TINY_TRAIN, "--max-steps", "1")[0] == 0
    with open(out / "log.jsonl", "a") as fh:
        fh.write('{"step": 2, "loss": 0.1\n[1, 2]\n\xff garbage\n')  # a line cut by a crash, and worse
    (out / ".tmp-abc123train_state.pt").write_bytes(b"")  # a SIGKILL during a save
    (out / ".tmp-keepme.txt").write_bytes(b"")  # not ours: left alone
    code, err = cli(capsys, "train", "--data", data, "--out", out, *TINY_TRAIN, "--max-steps", "2", "--resume")
    assert code == 0, err
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    assert sorted(p for p in os.listdir(out) if p.startswith(".tmp-")) == [".tmp-keepme.txt"]


def test_a_second_train_on_the_same_out_folder_is_refused(tmp_path, capsys):
    from cfm_core.train.train import _lock_run

    data = tmp_path / "data"
    photo(data / "a.png", 64, 64)
    out = tmp_path / "run"
    train_state(out)
    held = _lock_run(str(out))  # as a running trainer holds it
    try:
        code, err = cli(capsys, "train", "--data", data, "--out", out, *TINY_TRAIN, "--max-steps", "2", "--resume")
        assert code == 2 and "in use by another train process" in err
    finally:
        held.close()
    assert cli(capsys, "train", "--data", data, "--out", out, *TINY_TRAIN, "--max-steps", "2", "--resume")[0] == 0


def test_sigterm_during_training_saves_and_exits_143(tmp_path):
    data = tmp_path / "data"
    photo(data / "a.png", 64, 64)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CFM_DEBUG", None)
    proc = subprocess.Popen([sys.executable, "-m", "cfm_core", "train", "--data", str(data), "--out", str(out),
                             *TINY_TRAIN, "--max-steps", "100000", "--save-every", "100000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.time() + 240
        while not (out / "log.jsonl").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert (out / "log.jsonl").exists(), proc.stderr.read().decode() if proc.poll() is not None else "slow"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err.decode()
    assert b"Traceback" not in err and b"saving so that --resume continues" in err
    state = torch.load(out / "train_state.pt", weights_only=True)
    assert state["step"] >= 1 and (out / "model.safetensors").exists()


# ------------------------------------------------------------------------------------------- evaluate

def test_evaluate_outputs_and_flags_are_checked_before_the_work(model_file, tmp_path, capsys, monkeypatch):
    from cfm_core.evaluate import evaluate

    monkeypatch.setattr(evaluate, "evaluate_models", lambda *a, **k: pytest.fail("work started"))
    src = photo(tmp_path / "in.png", 64, 64)
    (tmp_path / "file").write_text("x")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "metrics_vs_nfe.png").write_bytes(b"keep")
    cases = [(["--out-json", tmp_path], "is a folder"),
             (["--out-json", tmp_path / "file"], "already exists; pass --overwrite"),
             (["--plots", tmp_path / "file"], "is a file; pass a folder"),
             (["--plots", tmp_path / "plots"], "already exists; pass --overwrite"),
             (["--max-images", "-1"], "--max-images -1 must be ≥ 1"),
             (["--device", "bogus"], "is not a device"),
             (["--device", "cuda"], "no CUDA GPU")]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for flags, fragment in cases:
        code, err = cli(capsys, "evaluate", src, "--model", model_file, *flags)
        assert code == 2 and fragment in err, (flags, err)
    assert (tmp_path / "file").read_text() == "x"


def test_bench_output_paths_are_checked_before_measuring(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, err = cli(capsys, "bench", "--quick", "--out-json", tmp_path)
    assert code == 2 and "is a folder" in err
    code, err = cli(capsys, "bench", "--quick", "--plots", tmp_path / "file")
    assert code == 2 and "is a file" in err


# ------------------------------------------------------------------------------------------- the process

def test_debug_flag_and_environment_show_the_traceback_of_an_error(model_file, tmp_path, capsys, monkeypatch):
    from cfm_core.cli import info

    code, err = cli(capsys, "info", tmp_path / "absent.safetensors")
    assert code == 2 and err.count("\n") == 1
    assert main(["info", str(tmp_path / "absent.safetensors"), "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setattr(info, "read_config", lambda path: 1 / 0)  # a bug, not a user's mistake
    code, err = cli(capsys, "info", model_file)
    assert code == 1 and "internal error ZeroDivisionError" in err and "CFM_DEBUG=1" in err
    monkeypatch.setenv("CFM_DEBUG", "1")
    assert main(["info", model_file]) == 1
    assert "Traceback" in capsys.readouterr().err


def _wait_until_main_catches_sigterm(pid: int, timeout: float = 60) -> None:
    """Until cfm_core's main() has installed its handlers (the SigCgt mask of /proc/PID/status), so the signal tests
    our code and not how fast a busy machine starts an interpreter; a fixed sleep where /proc is missing."""
    status, deadline = Path(f"/proc/{pid}/status"), time.monotonic() + timeout
    if not status.exists():
        time.sleep(0.8)
        return
    while time.monotonic() < deadline:
        try:
            line = next(x for x in status.read_text().splitlines() if x.startswith("SigCgt:"))
        except (OSError, StopIteration):
            return  # the process is gone; the test reads its exit
        if int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1:
            return
        time.sleep(0.002)


@pytest.mark.parametrize("signum, code, line", [(signal.SIGINT, 130, "interrupted"),
                                               (signal.SIGTERM, 143, "terminated")])
def test_ctrl_c_or_sigterm_during_start_up_is_one_line(tmp_path, signum, code, line):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CFM_DEBUG", None)
    proc = subprocess.Popen([sys.executable, "-m", "cfm_core", "upscale", "x.png", "-o", str(tmp_path / "o.png")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    _wait_until_main_catches_sigterm(proc.pid)  # main() is running; torch is still loading (an interrupt there can
    proc.send_signal(signum)  # surface as numpy's ImportError: it is still reported as an interruption)
    _, err = proc.communicate(timeout=120)
    assert b"Traceback" not in err
    if proc.returncode != 2:  # 2 only if start-up finished first (then the missing file is reported)
        assert proc.returncode == code and err.decode().strip() == line


def test_a_closed_pipe_ends_quietly(model_file):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "cfm_core", "info", model_file], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # `| head -0`: the reader is gone before anything is written
    err = proc.stderr.read()
    proc.wait(timeout=120)
    assert err == b"" and proc.returncode == 141


# ------------------------------------------------------------------------------------------- ComfyUI nodes

def test_nodes_refuse_hostile_model_files_in_one_line_and_the_next_prompt_runs(comfy, model_file, tmp_path):
    folder = Path(comfy.folder_paths.models_dir) / "cfm"
    folder.mkdir(parents=True, exist_ok=True)
    rewrite_config(model_file, folder / "big.safetensors",
                   lambda c: {**c, "unet": {**c["unet"], "model_channels": 8192}})
    rewrite_config(model_file, folder / "string.safetensors", lambda c: "a string")
    rewrite_config(model_file, folder / "steps0.safetensors", lambda c: {**c, "default_steps": 0})
    nan_model = pixel_model()
    with torch.no_grad():
        nan_model.net.out[-1].weight.fill_(float("nan"))
    save_model(nan_model, str(folder / "nan.safetensors"))
    save_model(pixel_model(), str(folder / "good.safetensors"))
    loader = comfy.nodes.NODE_CLASS_MAPPINGS["CFMLoader"]()
    upscale = comfy.nodes.NODE_CLASS_MAPPINGS["CFMUpscaleImage"]().upscale
    image = torch.rand(1, 16, 16, 3)
    for name, fragment in (("big", "config says"), ("string", "broken config"), ("steps0", "default steps")):
        with pytest.raises(CFMError, match=fragment) as excinfo:
            loader.load(f"{name}.safetensors", "fp32")
        assert "\n" not in str(excinfo.value)
    handle, _ = loader.load("nan.safetensors", "fp32")
    with pytest.raises(CFMError, match="NaN") as excinfo:
        upscale(image, handle, "euler", 1)
    assert "\n" not in str(excinfo.value)
    handle, _ = loader.load("good.safetensors", "fp32")  # the next prompt runs
    with pytest.raises(CFMError, match="not a float tensor"):  # a custom node handing over 8-bit pixels
        upscale((image * 255).to(torch.uint8), handle, "euler", 1)
    with pytest.raises(CFMError, match="is a list, not a tensor"):
        comfy.nodes.common.latent_samples({"samples": [1, 2]})
    out, = upscale(image * 1.02, handle, "euler", 1)  # a filter's slight overshoot is clipped, not refused
    assert out.shape == (1, 32, 32, 3) and torch.isfinite(out).all()

