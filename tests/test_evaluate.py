"""Evaluation: cropping / downsampling, the function API against known values, and the CLI end to end."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import load_script

import cfm_core
from cfm_core.__main__ import main
from cfm_core.errors import CFMError
from cfm_core.evaluate.evaluate import (
    FLOOR,
    MEAN,
    Setting,
    crop_multiple,
    downsample,
    evaluate_models,
    format_table,
    prepare_high_res,
)
from cfm_core.images import save_image
from cfm_core.solvers import expected_nfe
from cfm_core.upsample import DOWNSAMPLE_KERNELS, parse_kernels

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




def tiny_cfm(randomize: bool = False, noise_step: int = 0) -> cfm_core.CFMModel:
    """A pixel-space (space-to-depth ×2) tiny CFM model. Fresh, its velocity is exactly 0 (zero-init output)."""
    torch.manual_seed(0)
    model = cfm_core.CFMModel(cfm_core.CFMConfig(unet=cfm_core.preset("tiny", latent_channels=12),
                                                 latent=cfm_core.SpaceToDepth(2).spec, noise_step=noise_step))
    if randomize:
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def photos() -> list[torch.Tensor]:
    """Three real photo crops of different sizes, (3, H, W) in [0, 1]."""
    from skimage import data

    crops = [data.astronaut()[40:120, 180:276], data.chelsea()[60:140, 150:238], data.coffee()[100:180, 200:296]]
    return [torch.from_numpy(c.copy()).permute(2, 0, 1).float() / 255 for c in crops]


def test_crop_multiple_and_prepare_high_res():
    model = tiny_cfm()  # space-to-depth 2, UNet stride 4
    assert crop_multiple([], 2) == 2
    assert crop_multiple([model], 2) == 8  # lcm(2·2, 2·4)
    hr = prepare_high_res(torch.rand(3, 70, 90), 8)
    assert hr.shape == (3, 64, 88)
    assert prepare_high_res(torch.rand(3, 70, 90), 8, crop=40).shape == (3, 40, 40)
    with pytest.raises(CFMError, match="smaller than the crop 80"):
        prepare_high_res(torch.rand(3, 70, 90), 8, crop=80)


def test_downsample_kernels_halve_and_preserve_a_constant():
    hr = torch.full((3, 32, 48), 0.25)
    for kernel in DOWNSAMPLE_KERNELS + ("bilinear", "bicubic"):
        lr = downsample(hr, 2, kernel)
        assert lr.shape == (3, 16, 24)
        torch.testing.assert_close(lr, torch.full_like(lr, 0.25))
    with pytest.raises(CFMError, match="'gauss' is unknown"):
        downsample(hr, 2, "gauss")


def test_box_is_the_official_bilinear_and_the_kernels_differ():
    hr = torch.rand(3, 32, 48, generator=torch.Generator().manual_seed(0))
    box = downsample(hr, 2, "box")
    # the official code's F.interpolate(mode="bilinear") without antialias is the 2×2 average at 2×
    torch.testing.assert_close(box, hr.unflatten(1, (16, 2)).unflatten(3, (24, 2)).mean((2, 4)))
    torch.testing.assert_close(box, downsample(hr, 2, "area"))
    outs = {k: downsample(hr, 2, k) for k in ("box", "bilinear-aa", "bicubic-aa", "lanczos")}
    for a in outs:
        for b in outs:
            assert a == b or (outs[a] - outs[b]).abs().max() > 0.01, (a, b)
    # Lanczos agrees with PIL's own 8-bit resize up to rounding (on a smooth image: PIL clips between its passes)
    from PIL import Image
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(48.0), indexing="ij")
    smooth = ((0.5 + 0.3 * torch.sin(xx / 5 + torch.arange(3.0)[:, None, None]) * torch.cos(yy / 7)) * 255).round()
    img = Image.fromarray(smooth.permute(1, 2, 0).byte().numpy())
    pil = torch.from_numpy(np.array(img.resize((24, 16), Image.LANCZOS))).permute(2, 0, 1) / 255
    assert (downsample(smooth / 255, 2, "lanczos") - pil).abs().max() <= 1 / 255


def test_parse_kernels_takes_lists_commas_and_old_names():
    assert parse_kernels("box,lanczos") == ("box", "lanczos")
    assert parse_kernels(["box", "bilinear", "bilinear-aa"]) == ("box", "bilinear-aa")
    with pytest.raises(CFMError, match="--downsample 'nearest' is unknown"):
        parse_kernels(["box", "nearest"])


def test_several_kernels_give_rows_per_kernel_and_their_mean(photos):
    model = [("zero", tiny_cfm(), [Setting("euler", 1)])]
    rows = evaluate_models(photos, model, kernels=["box", "lanczos"], baselines=["bicubic"], swd_patches=64,
                           noise_step=[0, 100])
    assert [r.kind for r in rows].count("floor") == 1
    by_key = {(r.kernel, r.label): r for r in rows}
    for label in ("bicubic", "zero euler×1 n0", "zero euler×1 n100"):
        box, lanczos, mean = (by_key[(k, label)] for k in ("box", "lanczos", MEAN))
        for metric in ("psnr", "ssim", "swd", "nfe"):
            assert getattr(mean, metric) == pytest.approx((getattr(box, metric) + getattr(lanczos, metric)) / 2)
        assert box.psnr != lanczos.psnr
    assert len(rows) == 1 + 3 * 3
    table = format_table(rows)
    assert "**mean**" in table and "| lanczos |" in table


def test_zero_velocity_model_equals_the_bilinear_baseline(photos):
    # v ≡ 0 and noise step 0 (ᾱ = 1 − 1e-10): the ODE returns its start, the bilinear upsample of the input.
    rows = evaluate_models(photos, [("zero", tiny_cfm(), [Setting("euler", 1), Setting("midpoint", 2)])],
                           swd_patches=512)
    by_label = {r.label: r for r in rows}
    bilinear, bicubic = by_label["bilinear"], by_label["bicubic"]
    for label in ("zero euler×1 n0", "zero midpoint×2 n0"):
        assert by_label[label].psnr == pytest.approx(bilinear.psnr, abs=1e-3)
        assert by_label[label].ssim == pytest.approx(bilinear.ssim, abs=1e-5)
        assert by_label[label].swd == pytest.approx(bilinear.swd, abs=1e-2)
    assert by_label["zero midpoint×2 n0"].nfe == expected_nfe("midpoint", 2) == 4
    # on real photos bicubic beats bilinear: a sanity check that the metrics and the baselines are wired right
    assert bicubic.psnr > bilinear.psnr and bicubic.ssim > bilinear.ssim and bicubic.swd < bilinear.swd
    floor, *methods = rows
    assert floor.kind == "floor" and floor.label == FLOOR and floor.swd > 0 and math.isnan(floor.psnr)
    assert all(r.images == 3 and r.seconds_per_image > 0 for r in methods)
    assert format_table(rows).count("\n") == len(rows) + 1


def test_swd_sampling_floor_falls_with_more_patches(photos):
    # the floor is pure sampling noise (same images, other positions): more patches must shrink it, roughly as
    # 1/√N; the paired-position baselines move far less, which is why the default samples many patches
    floors = {n: evaluate_models(photos, [], baselines=["bicubic"], swd_patches=n)[0].swd for n in (64, 1024)}
    assert floors[1024] < 0.5 * floors[64]


def test_noise_step_override_reaches_the_solver(photos):
    # a zero-velocity model returns its start point: the noised upsample at its own step 100, the plain bilinear
    # upsample when the evaluation overrides the step with 0
    model = [("zero", tiny_cfm(noise_step=100), [Setting("euler", 1)])]
    own = {r.label: r for r in evaluate_models(photos, model, baselines=["bilinear"], swd_patches=64)}
    clean = {r.label: r for r in evaluate_models(photos, model, baselines=["bilinear"], swd_patches=64,
                                                 noise_step=0)}
    assert clean["zero euler×1 n0"].psnr == pytest.approx(clean["bilinear"].psnr, abs=1e-3)
    assert own["zero euler×1 n100"].psnr < own["bilinear"].psnr - 1.0


def test_function_api_errors(photos):
    with pytest.raises(CFMError, match="no images"):
        evaluate_models([], [])
    with pytest.raises(CFMError, match="factor"):
        evaluate_models(photos, [("m", tiny_cfm(), [])], factor=4)
    with pytest.raises(CFMError, match="baseline 'lanczos'"):
        evaluate_models(photos, [], baselines=["lanczos"])


def test_cli_writes_table_json_and_plots(tmp_path, photos):
    folder = tmp_path / "held_out"
    for i, photo in enumerate(photos):
        save_image(str(folder / f"img{i}.png"), photo)
    (folder / "broken.png").write_bytes(b"not an image")
    save_image(str(folder / "tiny.png"), torch.rand(3, 12, 12))
    zero, noisy = tmp_path / "zero.safetensors", tmp_path / "random.safetensors"
    cfm_core.save_model(tiny_cfm(), str(zero))
    cfm_core.save_model(tiny_cfm(randomize=True, noise_step=100), str(noisy))
    out_json, plots = tmp_path / "out" / "eval.json", tmp_path / "plots"
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "cfm_core", "evaluate", str(folder), "--model", str(zero), "--model", str(noisy),
         "--solvers", "euler", "midpoint", "--steps", "1", "2", "--seed", "3", "--out-json", str(out_json),
         "--plots", str(plots), "--swd-patches", "256"], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "broken.png" in proc.stderr and "tiny.png" in proc.stderr  # warned about, then skipped
    table = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 1 + 2 + 2 * 4  # header, rule, floor, 2 baselines, 2 models × 2 solvers × 2 steps
    assert table[2].startswith(f"| — | *{FLOOR}*")

    report = json.loads(out_json.read_text())
    assert report["settings"]["skipped"] == {"unreadable": 1, "too_small": 1}
    assert len(report["settings"]["images"]) == 3
    assert report["rows"][0]["kind"] == "floor" and report["rows"][0]["psnr"] == "nan"  # strict JSON, no NaN
    rows = {r["label"]: r for r in report["rows"][1:]}
    assert len(rows) == 10
    for r in rows.values():
        assert math.isfinite(r["psnr"]) and 10 < r["psnr"] < 60
        assert 0 < r["ssim"] <= 1 and r["swd"] >= 0 and len(r["swd_levels"]) >= 2
        if r["kind"] == "model":
            assert r["nfe"] == expected_nfe(r["solver"], r["steps"])
    assert rows["zero euler×2 n0"]["psnr"] == pytest.approx(rows["bilinear"]["psnr"], abs=1e-3)
    assert abs(rows["random euler×2 n100"]["psnr"] - rows["bilinear"]["psnr"]) > 0.01  # a real model changes things
    assert report["settings"]["downsample"] == ["box"] and {r["kernel"] for r in rows.values()} == {"box"}
    for name in ("metrics_vs_nfe.png", "metrics_vs_time.png"):
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the selection script reads exactly this format: every model row, its noise step, the baseline's PSNR
    chooser = load_script("choose_inference_setting")
    models, baseline_psnr = chooser.read_rows([str(out_json)], "bicubic")
    assert len(models) == 8 and {key[3] for key in models} == {0, 100}  # each row's own noise step
    assert baseline_psnr == {"box": pytest.approx(rows["bicubic"]["psnr"], abs=1e-6)}


def test_cli_errors_are_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["evaluate", str(empty)]) == 2
    assert "no images found" in capsys.readouterr().err
    small = tmp_path / "small"
    save_image(str(small / "a.png"), torch.rand(3, 20, 20))
    assert main(["evaluate", str(small), "--crop", "32"]) == 2
    err = capsys.readouterr().err
    assert "smaller than the crop 32" in err and "none of the 1 images is usable" in err
    assert main(["evaluate", str(small), "--noise-step", "1000"]) == 2
    assert "--noise-step 1000 is outside [0, 999]" in capsys.readouterr().err


def write_result(path, noise_step: int | None, bicubic_psnr: float | dict, rows: list[tuple]) -> str:
    """A minimal `evaluate --out-json` file: a floor row, bicubic rows and (method, steps, psnr, swd[, kernel]) model
    rows. ``bicubic_psnr`` a float: an old one-kernel file (no per-row kernel); a dict: {kernel: PSNR}."""
    out = [{"method": FLOOR, "kind": "floor", "solver": None, "steps": None, "psnr": "nan", "swd": 9.0}]
    for kernel, psnr_ in (bicubic_psnr.items() if isinstance(bicubic_psnr, dict) else [(None, bicubic_psnr)]):
        out.append({"method": "bicubic", "kind": "baseline", "solver": None, "steps": None, "psnr": psnr_,
                    "swd": 12.0} | ({"kernel": kernel} if kernel else {}))
    for m, s, p, w, *kernel in rows:
        out.append({"method": m, "kind": "model", "solver": "euler", "steps": s, "psnr": p, "swd": w}
                   | ({"kernel": kernel[0], "noise_step": noise_step} if kernel else {}))
    path.write_text(json.dumps({"settings": {"noise_step": noise_step}, "rows": out}))
    return str(path)


def test_choose_inference_setting_takes_the_lowest_swd_that_keeps_bicubic_psnr(tmp_path, capsys):
    chooser = load_script("choose_inference_setting")
    a = write_result(tmp_path / "n0.json", 0, 37.0, [("m", 1, 37.5, 6.4), ("m", 4, 37.8, 5.9)])
    b = write_result(tmp_path / "n50.json", 50, 37.0, [("m", 1, 36.9, 5.0), ("m", 4, 37.0, 6.1)])
    assert chooser.main([a, b]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("chosen: m euler×4 noise step 0:")  # 5.0 is lower but below bicubic
    assert "(not eligible)" in out and out.count("noise step") == 5

    low = write_result(tmp_path / "low.json", 0, 40.0, [("m", 1, 37.5, 6.4)])
    assert chooser.main([low]) == 1 and "chosen: none" in capsys.readouterr().out
    assert chooser.main([a, low]) == 2  # two bicubic PSNRs: not the same images
    assert chooser.main([a, "--baseline", "bilinear"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: --baseline ") for line in err)


def test_choose_inference_setting_needs_the_gain_on_every_kernel_and_the_flat_images(tmp_path, capsys):
    chooser = load_script("choose_inference_setting")
    base = {"box": 30.0, "lanczos": 32.0}
    # m×1 gains 2 dB on box but only 0.5 on lanczos; m×4 gains 1.2 on both; m×2 gains 1.5 on both
    val = write_result(tmp_path / "val.json", 25, base, [
        ("m", 1, 32.0, 3.0, "box"), ("m", 1, 32.5, 3.0, "lanczos"),
        ("m", 2, 31.5, 5.0, "box"), ("m", 2, 33.5, 5.0, "lanczos"),
        ("m", 4, 31.2, 4.0, "box"), ("m", 4, 33.2, 4.0, "lanczos")])
    assert chooser.main([val, "--min-gain", "1.0"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("chosen: m euler×4 noise step 25:")
    # on the flat images m×4 loses 0.3 dB on one kernel (more than 0.2), m×2 only 0.1
    flat = write_result(tmp_path / "flat.json", 25, {"box": 50.0, "lanczos": 51.0}, [
        ("m", 1, 50.0, 1.0, "box"), ("m", 1, 51.0, 1.0, "lanczos"),
        ("m", 2, 49.9, 1.0, "box"), ("m", 2, 51.0, 1.0, "lanczos"),
        ("m", 4, 49.7, 1.0, "box"), ("m", 4, 51.0, 1.0, "lanczos")])
    assert chooser.main([val, "--min-gain", "1.0", "--flat", flat]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("chosen: m euler×2 noise step 25:") and "flat margin -0.10" in out
    assert chooser.main([val, "--min-gain", "2.0"]) == 1
    # with a 0.05 dB tolerance none holds the flat images; the fallback takes the highest flat margin among the
    # settings that hold the rest (m×1 holds the flat images best but misses the gain on lanczos)
    assert chooser.main([val, "--min-gain", "1.0", "--flat", flat, "--flat-tolerance", "0.05"]) == 1
    capsys.readouterr()
    assert chooser.main([val, "--min-gain", "1.0", "--flat", flat, "--flat-tolerance", "0.05", "--flat-fallback"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("chosen (flat fallback: no setting meets the flat "
                                                                "condition): m euler×2 noise step 25:")


def test_choose_inference_setting_can_require_a_lower_swd_than_the_regression_model(tmp_path, capsys):
    chooser = load_script("choose_inference_setting")
    # (method, steps): PSNR on box and on lanczos, SWD. m×1 (SWD 4.5) and m×4 (SWD 3.5) both gain enough over
    # bicubic (30 / 32 dB); the L2 model sits between them at SWD 4.0
    table = {("m", 1): (31.5, 33.5, 4.5), ("m", 4): (31.2, 33.2, 3.5), ("l2", 1): (32.0, 34.0, 4.0)}
    rows = [(m, steps, psnr_, swd_, kernel) for (m, steps), (box, lanczos, swd_) in table.items()
            for kernel, psnr_ in (("box", box), ("lanczos", lanczos))]
    val = write_result(tmp_path / "val.json", 0, {"box": 30.0, "lanczos": 32.0}, rows)
    assert chooser.main([val, "--min-gain", "1.0"]) == 0  # without the condition the L2 file is a candidate too
    assert capsys.readouterr().out.splitlines()[-1].startswith("chosen: m euler×4")
    assert chooser.main([val, "--min-gain", "1.0", "--below-swd-of", "l2"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("chosen: m euler×4") and "l2 euler" not in out
    assert "SWD below the reference by +0.50" in out and "SWD below the reference by -0.50" in out
    # when every candidate's SWD is above the reference, none is eligible
    assert chooser.main([val, "--min-gain", "1.5", "--below-swd-of", "l2"]) == 1  # m×4 misses the gain, m×1 the SWD
    assert chooser.main([val, "--below-swd-of", "nope"]) == 2
    assert "--below-swd-of nope: 0 settings" in capsys.readouterr().err


def test_the_swd_reference_can_be_a_file_of_its_own(tmp_path, capsys):
    chooser = load_script("choose_inference_setting")
    base = {"box": 30.0}
    cfm = write_result(tmp_path / "cfm.json", 0, base, [("model", 1, 31.5, 4.5, "box"), ("model", 4, 31.2, 3.5, "box")])
    l2 = write_result(tmp_path / "l2.json", 100, base, [("model", 1, 32.0, 4.0, "box")])  # labelled "model" too
    assert chooser.main([cfm, "--min-gain", "1.0", "--below-swd-of", l2]) == 0
    out = capsys.readouterr().out
    assert out.count("noise step") == 3 and "noise step 100" not in out  # the L2 file is the reference only
    assert out.splitlines()[-1].startswith("chosen: model euler×4") and "by -0.50" in out
    other = write_result(tmp_path / "other.json", 100, {"box": 29.0}, [("model", 1, 32.0, 4.0, "box")])
    assert chooser.main([cfm, "--below-swd-of", other]) == 2
    assert "not the same images" in capsys.readouterr().err


def test_flat_mean_holds_each_flat_set_on_its_mean_over_kernels(tmp_path, capsys):
    chooser = load_script("choose_inference_setting")
    base = {"box": 30.0, "lanczos": 32.0}
    val = write_result(tmp_path / "val.json", 25, base, [
        ("m", 2, 31.5, 5.0, "box"), ("m", 2, 33.5, 5.0, "lanczos"),
        ("m", 4, 31.2, 4.0, "box"), ("m", 4, 33.2, 4.0, "lanczos")])
    # set A: m×4 loses 0.5 dB on lanczos but gains 0.3 on box (mean −0.1: holds); set B (other images, other
    # bicubic PSNRs): m×4 loses 0.3 on average (fails), m×2 0.1 (holds)
    flat_a = write_result(tmp_path / "a.json", 25, {"box": 50.0, "lanczos": 51.0}, [
        ("m", 2, 50.0, 1.0, "box"), ("m", 2, 51.0, 1.0, "lanczos"),
        ("m", 4, 50.3, 1.0, "box"), ("m", 4, 50.5, 1.0, "lanczos")])
    flat_b = write_result(tmp_path / "b.json", 25, {"box": 40.0, "lanczos": 41.0}, [
        ("m", 2, 39.9, 1.0, "box"), ("m", 2, 40.9, 1.0, "lanczos"),
        ("m", 4, 39.7, 1.0, "box"), ("m", 4, 40.7, 1.0, "lanczos")])
    assert chooser.main([val, "--min-gain", "1.0", "--flat", flat_a, "--flat-mean"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("chosen: m euler×4") and "flat margin +0.10" in out
    assert chooser.main([val, "--min-gain", "1.0", "--flat", flat_a]) == 0  # per kernel: m×4 fails lanczos by 0.3
    assert capsys.readouterr().out.splitlines()[-1].startswith("chosen: m euler×2")
    assert chooser.main([val, "--min-gain", "1.0", "--flat", flat_a, "--flat", flat_b, "--flat-mean"]) == 0
    out = capsys.readouterr().out  # B is the worse set
    assert out.splitlines()[-1].startswith("chosen: m euler×2") and "flat margin -0.10" in out
    assert chooser.main([val, "--flat", flat_a, flat_b, "--flat-mean"]) == 2  # one set, two kinds of images
    assert "different PSNRs for one kernel" in capsys.readouterr().err
    # a set may come as one file per setting (one evaluation per model file)
    b2 = write_result(tmp_path / "b2.json", 25, {"box": 40.0, "lanczos": 41.0},
                      [("m", 2, 39.9, 1.0, "box"), ("m", 2, 40.9, 1.0, "lanczos")])
    b4 = write_result(tmp_path / "b4.json", 25, {"box": 40.0, "lanczos": 41.0},
                      [("m", 4, 39.7, 1.0, "box"), ("m", 4, 40.7, 1.0, "lanczos")])
    assert chooser.main([val, "--min-gain", "1.0", "--flat", flat_a, "--flat", b2, b4, "--flat-mean"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("chosen: m euler×2")
    missing = write_result(tmp_path / "c.json", 25, {"box": 40.0, "lanczos": 41.0},
                           [("m", 2, 39.9, 1.0, "box"), ("m", 2, 40.9, 1.0, "lanczos")])  # no m×4
    assert chooser.main([val, "--flat", missing, "--flat-mean"]) == 2
    assert "m euler×4 noise 25 is missing from the --flat files" in capsys.readouterr().err
    one_kernel = write_result(tmp_path / "d.json", 25, {"box": 40.0, "lanczos": 41.0},
                              [("m", 2, 39.9, 1.0, "box"), ("m", 4, 39.9, 1.0, "box"), ("m", 4, 40.9, 1.0, "lanczos")])
    assert chooser.main([val, "--flat", one_kernel, "--flat-mean"]) == 2
    assert "m has kernels ['box'] but the baseline has" in capsys.readouterr().err


def test_an_swd_margin_then_the_highest_flat_margin(tmp_path, capsys):
    chooser = load_script("choose_inference_setting")
    base = {"box": 30.0}
    # SWD: the L2 reference 5.0; m×1 4.9 (0.1 below), m×2 4.7 (0.3 below), m×4 4.5 (0.5 below); all gain ≥ 1 dB
    cfm = write_result(tmp_path / "cfm.json", 0, base, [("model", 1, 31.9, 4.9, "box"), ("model", 2, 31.6, 4.7, "box"),
                                                         ("model", 4, 31.3, 4.5, "box")])
    l2 = write_result(tmp_path / "l2.json", 100, base, [("model", 1, 32.0, 5.0, "box")])
    # flat images: m×1 +0.1 over bicubic, m×2 −0.05, m×4 −0.15 (all within 0.2)
    flat = write_result(tmp_path / "flat.json", 0, {"box": 50.0}, [
        ("model", 1, 50.1, 1.0, "box"), ("model", 2, 49.95, 1.0, "box"), ("model", 4, 49.85, 1.0, "box")])
    common = [cfm, "--min-gain", "1.0", "--below-swd-of", l2, "--flat", flat, "--flat-mean"]
    assert chooser.main(common) == 0  # the lowest SWD
    assert capsys.readouterr().out.splitlines()[-1].startswith("chosen: model euler×4")
    assert chooser.main(common + ["--prefer", "flat"]) == 0  # m×1 is flattest but only 0.1 below the reference...
    assert capsys.readouterr().out.splitlines()[-1].startswith("chosen: model euler×1")
    assert chooser.main(common + ["--prefer", "flat", "--min-swd-margin", "0.2"]) == 0  # ...which is now too little
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("chosen: model euler×2") and out.count("(not eligible)") == 1
    assert chooser.main(common + ["--min-swd-margin", "0.6"]) == 1
    capsys.readouterr()
    assert chooser.main([cfm, "--min-swd-margin", "0.2"]) == 2
    assert chooser.main([cfm, "--prefer", "flat"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "needs --below-swd-of" in err[0] and "needs --flat" in err[1]
