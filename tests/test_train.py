"""Training: resume exactness, 2-process equivalence, the latent cache, and bad inputs."""
from __future__ import annotations

import errno
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

from cfm_core import __main__ as cli
from cfm_core import load_model
from cfm_core.errors import CFMError
from cfm_core.train.train import learning_rate

TINY = ["--preset", "tiny", "--model-channels", "32", "--channel-mult", "1,2", "--num-res-blocks", "1",
        "--attention-resolutions", "", "--crop", "32", "--warmup", "2", "--ema-start", "1", "--lr", "1e-3",
        "--log-every", "1", "--save-every", "100", "--quiet", "--threads", "1"]


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    import skimage.data

    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee"):
        Image.fromarray(getattr(skimage.data, name)()[:96, :96]).save(folder / f"{name}.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    Image.new("RGB", (8, 8)).save(folder / "tiny.png")
    return str(folder)


def _train(data, out, *extra):
    return cli.main(["train", "--data", data, "--out", str(out), *TINY, *extra])


def _losses(out):
    with open(os.path.join(out, "log.jsonl")) as fh:
        return [json.loads(line)["loss"] for line in fh]


def test_train_writes_model_log_and_plot(photo_dir, tmp_path, capsys):
    assert _train(photo_dir, tmp_path / "run", "--space", "s2d2", "--max-steps", "3", "--batch-size", "2") == 0
    assert "skipped 1 unreadable and 1 smaller" in capsys.readouterr().err
    model = load_model(str(tmp_path / "run" / "model.safetensors"))
    assert model.config.training["steps"] == 3 and model.config.latent.kind == "space_to_depth"
    assert len(_losses(tmp_path / "run")) == 3
    assert (tmp_path / "run" / "loss.png").stat().st_size > 0


def test_resume_continues_exactly(photo_dir, tmp_path):
    args = ("--space", "s2d2", "--batch-size", "2", "--seed", "3")
    _train(photo_dir, tmp_path / "straight", *args, "--max-steps", "4")
    _train(photo_dir, tmp_path / "split", *args, "--max-steps", "2")
    _train(photo_dir, tmp_path / "split", *args, "--max-steps", "4", "--resume")
    assert _losses(tmp_path / "straight") == _losses(tmp_path / "split")
    a = load_model(str(tmp_path / "straight" / "model.safetensors")).state_dict()
    b = load_model(str(tmp_path / "split" / "model.safetensors")).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_processes_match_one(photo_dir, tmp_path):
    """Same global batch (1 process × 4 vs 2 processes × 2, gloo) ⇒ the same loss curve."""
    common = ["--data", photo_dir, *TINY, "--space", "s2d2", "--max-steps", "3", "--seed", "1"]
    assert cli.main(["train", *common, "--out", str(tmp_path / "one"), "--batch-size", "4"]) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "cfm_core", "train", *common, "--out", str(tmp_path / "two"), "--batch-size", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 3
    assert one == pytest.approx(two, rel=1e-4, abs=1e-6)


def test_cache_for_vae_space_resumes(photo_dir, tmp_path):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4,
                        norm_num_groups=32)
    vae.save_pretrained(tmp_path / "vae")
    args = ("--space", "vae", "--vae", str(tmp_path / "vae"), "--batch-size", "2", "--cache-size", "6",
            "--cache-dir", str(tmp_path / "cache"), "--crop", "32")
    assert _train(photo_dir, tmp_path / "run", *args, "--max-steps", "2") == 0
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["done"] == [0]
    shard = tmp_path / "cache" / "shard-00000.safetensors"
    mtime = shard.stat().st_mtime_ns
    assert _train(photo_dir, tmp_path / "run", *args, "--max-steps", "3", "--resume") == 0
    assert shard.stat().st_mtime_ns == mtime  # reused, not rebuilt
    model = load_model(str(tmp_path / "run" / "model.safetensors"))
    assert model.config.latent.kind == "vae" and model.config.latent.channels == 4


def test_residual_prediction_fine_tunes_from_a_regression_model(photo_dir, tmp_path):
    """The recipe of the bundled model: an l2 run, then a cfm run with --prediction residual initialised from it."""
    assert _train(photo_dir, tmp_path / "l2", "--space", "s2d2", "--max-steps", "2", "--batch-size", "2",
                  "--objective", "l2") == 0
    l2 = str(tmp_path / "l2" / "model.safetensors")
    assert _train(photo_dir, tmp_path / "res", "--space", "s2d2", "--max-steps", "2", "--batch-size", "2",
                  "--prediction", "residual", "--weighting", "x1", "--init-from", l2, "--save-every", "1") == 0
    final = load_model(str(tmp_path / "res" / "model.safetensors"))
    assert final.config.training["init_from"] == l2
    assert final.config.objective == "cfm" and final.config.prediction == "residual"
    assert final.config.training["weighting"] == "x1"
    # `export` writes the same EMA weights from the run's state, e.g. while a run is still going
    exported = tmp_path / "exported.safetensors"
    assert cli.main(["export", str(tmp_path / "res"), str(exported)]) == 0
    again = load_model(str(exported))
    assert again.config.prediction == "residual" and again.config.training["steps"] == 2
    a, b = final.net.state_dict(), again.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert cli.main(["export", str(tmp_path / "l2" / "nothing_here"), str(exported)]) == 2


def test_folded_regression_start_ignores_the_noise_in_x_t():
    """The residual start made from a regression net ignores x_t; at t = 0 it gives the regression output."""
    import dataclasses

    from helpers import tiny_model

    from cfm_core.model import CFMModel
    from cfm_core.train.train import fold_context_input

    l2 = tiny_model(seed=4, objective="l2")
    folded = CFMModel(dataclasses.replace(l2.config, objective="cfm", prediction="residual")).eval()
    folded.net.load_state_dict(fold_context_input(l2.net.state_dict(), 4))
    z = torch.randn(2, 4, 16, 16)
    with torch.no_grad():
        regression = z + l2(z, torch.zeros(2), z)
        for t in (0.0, 0.5):
            tt = torch.full((2,), t)
            a, b = z + torch.randn_like(z), z + 2 * torch.randn_like(z)
            x1_a, x1_b = a + (1 - t) * folded(a, tt, z), b + (1 - t) * folded(b, tt, z)  # x̂1 from the velocity
            torch.testing.assert_close(x1_a, x1_b, rtol=1e-4, atol=1e-4)  # whatever the noise in x_t
            if t == 0:
                torch.testing.assert_close(x1_a, regression, rtol=1e-4, atol=1e-4)
        unfolded = CFMModel(folded.config).eval()
        unfolded.net.load_state_dict(l2.net.state_dict())
        noisy = z + torch.randn_like(z)
        assert not torch.allclose(noisy + unfolded(noisy, torch.zeros(2), z), regression, atol=1e-3)


@pytest.mark.parametrize("objective", ["fm", "l2", "l1"])
def test_baseline_objectives_train(photo_dir, tmp_path, objective):
    assert _train(photo_dir, tmp_path / objective, "--space", "s2d2", "--max-steps", "2", "--batch-size", "2",
                  "--objective", objective) == 0
    cfg = load_model(str(tmp_path / objective / "model.safetensors")).config
    assert cfg.objective == objective and (cfg.default_steps == 1) == (objective != "fm")


def test_bad_inputs_have_clear_errors(photo_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _train(str(empty), tmp_path / "a", "--max-steps", "1") == 2
    assert "contains no images" in capsys.readouterr().err
    assert _train(photo_dir, tmp_path / "b", "--max-steps", "1", "--crop", "512") == 2
    assert "none of the" in capsys.readouterr().err
    not_vae = tmp_path / "not_vae.safetensors"
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(2)}, str(not_vae))
    assert _train(photo_dir, tmp_path / "c", "--space", "vae", "--vae", str(not_vae), "--max-steps", "1") == 2
    assert "not an SD-style AutoencoderKL" in capsys.readouterr().err
    # resume with another architecture
    _train(photo_dir, tmp_path / "d", "--space", "s2d2", "--max-steps", "1", "--batch-size", "1")
    assert _train(photo_dir, tmp_path / "d", "--space", "s2d2", "--max-steps", "2", "--resume",
                  "--model-channels", "64") == 2
    assert "same model/space" in capsys.readouterr().err
    assert _train(photo_dir, tmp_path / "d", "--space", "s2d2", "--max-steps", "2", "--resume",
                  "--prediction", "residual") == 2
    assert "prediction 'velocity'" in capsys.readouterr().err
    # a second run into the same folder without --resume
    assert _train(photo_dir, tmp_path / "d", "--space", "s2d2", "--max-steps", "2") == 2
    assert "pass --resume" in capsys.readouterr().err
    # schedule flags out of range
    assert _train(photo_dir, tmp_path / "e", "--max-steps", "2", "--decay-from", "1") == 2
    assert "add --lr-schedule cosine" in capsys.readouterr().err
    cosine = ("--max-steps", "2", "--lr-schedule", "cosine")
    assert _train(photo_dir, tmp_path / "e", *cosine, "--lr-min", "1") == 2
    assert "--lr-min 1 must be ≥ 0 and below --lr" in capsys.readouterr().err
    assert _train(photo_dir, tmp_path / "e", *cosine, "--decay-from", "5") == 2
    assert "--decay-from 5 must lie in [0, --max-steps 2)" in capsys.readouterr().err


def test_cosine_schedule_warms_up_then_anneals_from_decay_from():
    base, warmup, total = 1e-3, 10, 110
    assert learning_rate(4, base, warmup, "cosine", total=total) == pytest.approx(base * 5 / 10)  # warm-up first
    assert learning_rate(10, base, warmup, "cosine", total=total) == pytest.approx(base)
    assert learning_rate(60, base, warmup, "cosine", total=total) == pytest.approx(base / 2)  # half way: cos(π/2)
    assert learning_rate(110, base, warmup, "cosine", total=total, minimum=1e-5) == pytest.approx(1e-5)
    assert learning_rate(500, base, warmup, "cosine", total=total) == pytest.approx(0.0, abs=1e-15)  # stays at min
    # annealing a constant-lr run on resume: flat until decay_from, then the whole cosine over the remaining steps
    assert learning_rate(79, base, warmup, "cosine", total=total, decay_from=80) == base
    assert learning_rate(95, base, warmup, "cosine", total=total, decay_from=80) == pytest.approx(base / 2)
    assert learning_rate(95, base, warmup) == base  # constant (official) ignores the decay arguments


def test_resumed_cosine_run_logs_the_annealed_rates(photo_dir, tmp_path):
    out = tmp_path / "run"
    assert _train(photo_dir, out, "--space", "s2d2", "--batch-size", "1", "--max-steps", "2") == 0
    assert _train(photo_dir, out, "--space", "s2d2", "--batch-size", "1", "--max-steps", "6", "--resume",
                  "--lr-schedule", "cosine", "--decay-from", "2") == 0
    with open(out / "log.jsonl") as fh:
        rates = [json.loads(line)["lr"] for line in fh]
    assert rates[:3] == [5e-4, 1e-3, 1e-3]  # warm-up of 2 steps, then flat (the logged lr is the step's own)
    assert rates[3:] == pytest.approx([1e-3 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in (1, 2, 3)])
    assert load_model(str(out / "model.safetensors")).config.training["lr_schedule"] == "cosine"


def test_disk_full_leaves_previous_checkpoint_intact(photo_dir, tmp_path, monkeypatch):
    from cfm_core.train import train

    out = tmp_path / "run"
    _train(photo_dir, out, "--space", "s2d2", "--max-steps", "1", "--batch-size", "1")
    before = (out / train.STATE_FILE).read_bytes()
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        real_save(obj, f, *a, **k)  # write part of the file, then fail like a full disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CFMError, match="disk full"):
        train._save_state(str(out / train.STATE_FILE), {"step": 99})
    assert (out / train.STATE_FILE).read_bytes() == before
    assert not [p for p in os.listdir(out) if p.startswith(".tmp-")]


def test_emulated_cpu_autocast_is_named_with_the_fix(monkeypatch):
    from cfm_core.train import train

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    message = train.slow_cpu_autocast("bf16", cpu)
    assert message and "--precision bf16" in message and "--precision fp32" in message and "\n" not in message
    assert train.slow_cpu_autocast("fp32", cpu) is None and train.slow_cpu_autocast("bf16", cuda) is None
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert train.slow_cpu_autocast("bf16", cpu) is None


def _sources_with(photo_dir, option):
    """Pair sources with PairSpec ``option`` at probability 0, 1 and 0.5, same seed (same crops)."""
    from cfm_core.train.data import PairSource, PairSpec, scan_images

    paths = scan_images(photo_dir, 32)
    return [PairSource(paths, PairSpec(crop=32, **{option: p}), seed=0) for p in (0.0, 1.0, 0.5)]


def test_low_contrast_fades_crops_towards_their_mean(photo_dir, tmp_path, capsys):
    from cfm_core.train.data import LOW_CONTRAST_RANGE

    plain, faded, half = _sources_with(photo_dir, "low_contrast")
    factors, half_faded = [], 0
    for i in range(16):
        h0, h1, hh = plain.pixels(i)[0], faded.pixels(i)[0], half.pixels(i)[0]
        mean = h0.mean((1, 2), keepdim=True)
        assert torch.allclose(h1.mean((1, 2), keepdim=True), mean, atol=1e-5)  # the mean colour stays
        s = float((h1 - mean).norm() / (h0 - mean).norm())
        assert torch.allclose(h1 - mean, s * (h0 - mean), atol=1e-5)  # a pure contrast scale, same crop
        assert LOW_CONTRAST_RANGE[0] - 1e-4 <= s <= LOW_CONTRAST_RANGE[1] + 1e-4
        factors.append(s)
        half_faded += not torch.equal(hh, h0)
    assert min(factors) < 0.2 < max(factors)  # log-uniform: flat and nearly untouched crops both occur
    assert 2 <= half_faded <= 14
    assert _train(photo_dir, tmp_path / "a", "--max-steps", "1", "--low-contrast", "2") == 2
    assert "--low-contrast 2.0 is not a probability" in capsys.readouterr().err


def test_grain_adds_gaussian_noise_to_the_high_res_crop(photo_dir, capsys):
    from cfm_core.train.data import GRAIN_RANGE, PairSpec

    plain, grainy, half = _sources_with(photo_dir, "grain")
    sigmas, half_grainy = [], 0
    for i in range(16):
        (h0, u0), (h1, u1) = plain.pixels(i), grainy.pixels(i)
        noise = (h1 - h0) / 2  # pixels are in [-1, 1]; grain σ is in [0, 1] units
        assert abs(float(noise.mean())) < 4 * float(noise.std()) / noise.numel() ** 0.5 + 1e-6  # zero-mean
        sigma = float(noise.std())
        assert GRAIN_RANGE[0] * 0.9 <= sigma <= GRAIN_RANGE[1] * 1.1
        sigmas.append(sigma)
        assert not torch.equal(u1, u0)  # the low-res partner is made from the grainy crop
        assert float((u1 - u0).std()) < sigma * 2  # …and carries only its average: less grain than the crop
        half_grainy += not torch.equal(half.pixels(i)[0], h0)
    assert min(sigmas) < 3 / 255 < max(sigmas)  # log-uniform over the range
    assert 2 <= half_grainy <= 14
    with pytest.raises(CFMError, match="--grain 1.5 is not a probability"):
        PairSpec(grain=1.5)


def test_training_times_on_the_solver_grid():
    from cfm_core.train.train import training_times

    uniform = training_times(4096, torch.Generator().manual_seed(3))
    assert torch.equal(uniform, torch.rand(4096, generator=torch.Generator().manual_seed(3)))  # grid 0: as before
    t = training_times(4096, torch.Generator().manual_seed(3), grid=8, fraction=0.5)
    on = (t * 8 - (t * 8).round()).abs() < 1e-6
    assert 0.45 < float(on.float().mean()) < 0.56  # half on the grid (uniform times hit it with probability 0)
    assert set((t[on] * 8).round().int().tolist()) == set(range(8))  # every grid time 0, 1/8, …, 7/8, never 1
    assert ((t >= 0) & (t < 1)).all()
    assert torch.equal(t[~on], uniform[~on])  # the others keep their uniform draw
    every = training_times(64, torch.Generator().manual_seed(0), grid=4, fraction=1.0)
    assert set((every * 4).tolist()) <= {0.0, 1.0, 2.0, 3.0}


def test_t_grid_flags_are_checked(photo_dir, tmp_path, capsys):
    assert _train(photo_dir, tmp_path / "a", "--max-steps", "1", "--t-grid", "4", "--t-grid-fraction", "2") == 2
    assert "--t-grid-fraction 2 is not a probability" in capsys.readouterr().err
    assert _train(photo_dir, tmp_path / "b", "--max-steps", "1", "--t-grid", "4", "--objective", "l2") == 2
    assert "--t-grid has no effect on --objective l2" in capsys.readouterr().err


def test_soft_blurs_the_high_res_crop(photo_dir, capsys):
    from cfm_core.train.data import SOFT_RANGE, PairSpec
    from cfm_core.train.degrade import gaussian_blur

    plain, soft, half = _sources_with(photo_dir, "soft")
    half_soft = 0
    for i in range(16):
        h0, h1 = plain.pixels(i)[0], soft.pixels(i)[0]
        fits = [float((gaussian_blur(h0, s) - h1).abs().max()) for s in torch.linspace(*SOFT_RANGE, 200).tolist()]
        assert min(fits) < 0.02  # h1 is h0 blurred by a σ in the range (the grid is 200 values across it)
        assert float((h1[:, 1:] - h1[:, :-1]).abs().mean()) < float((h0[:, 1:] - h0[:, :-1]).abs().mean())
        half_soft += not torch.equal(half.pixels(i)[0], h0)
    assert 2 <= half_soft <= 14
    with pytest.raises(CFMError, match="--soft -1 is not a probability"):
        PairSpec(soft=-1)
