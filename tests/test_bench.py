"""The benchmark machinery on tiny models: structure, JSON, and that every ratio comes from measured numbers.

No timed assertions: where numbers matter the measurement is replaced by a fake with known values.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os

import pytest
import torch

from cfm_core.__main__ import main
from cfm_core.autoencoders import SpaceToDepth
from cfm_core.bench import sections as bench_sections
from cfm_core.bench import timing as bench_timing
from cfm_core.bench.common import BenchContext, Goal, Section, Table
from cfm_core.bench.fig5 import Fig5Config, run_fig5
from cfm_core.bench.memory import ChildSpec, MemoryConfig, run_child, run_memory
from cfm_core.bench.models import randomise_zero_layers
from cfm_core.bench.precision import PrecisionCase, PrecisionConfig, run_precision
from cfm_core.bench.psu import PSUConfig, run_psu
from cfm_core.bench.report import format_value, markdown_report, report_dict
from cfm_core.bench.solvers import SolverConfig, psnr, run_solvers, solver_grid
from cfm_core.bench.train import TrainConfig, run_train
from cfm_core.devices import resolve_device
from cfm_core.errors import CFMError
from cfm_core.model import CFMConfig, CFMModel
from cfm_core.unet import VelocityUNet, preset

TINY_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, sample_size=16, layers_per_block=1,
                norm_num_groups=32, block_out_channels=(32, 32),
                down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
TINY_SD_UNET = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                    block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                    attention_head_dim=4, norm_num_groups=32)
TINY_FIG5 = Fig5Config(base_latent=8, target_latent=16, cfm_presets=("tiny",), steps=(4, 25), goal_preset="tiny",
                       vae_config=TINY_VAE, sd_unet_config=TINY_SD_UNET, text_tokens=4)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a busy machine OpenMP spinning makes them much slower."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def ctx(**kw) -> BenchContext:
    defaults = dict(device=torch.device("cpu"), quick=True, repeats=1, warmup=0, budget_s=5.0, log=lambda m: None)
    return BenchContext(**{**defaults, **kw})


def fake_measure(seconds_by_prefix: dict[str, float]):
    """A stand-in for bench_timing.measure: runs ``fn`` once (for its result) and reports chosen seconds."""
    def measure(fn, *, label, repeats=1, warmup=0, device=None, budget_s=None):
        seconds = next(v for k, v in seconds_by_prefix.items() if label.startswith(k))
        return bench_timing.Timing(label, seconds, [seconds], warmup, fn())
    return measure


def patch_measurements(monkeypatch, seconds_by_prefix: dict[str, float]) -> None:
    """Replace both single and interleaved measurement by fakes with chosen seconds per label prefix."""
    single = fake_measure(seconds_by_prefix)

    def interleaved(fns, *, repeats=1, warmup=0, device=None, budget_s=None):
        return {label: single(fn, label=label) for label, fn in fns.items()}

    monkeypatch.setattr(bench_timing, "measure", single)
    monkeypatch.setattr(bench_timing, "measure_interleaved", interleaved)


# ------------------------------------------------------------------------------------------------ timing

def test_measure_takes_the_median_after_warmup(monkeypatch):
    ticks = iter([0.0, 1.0, 10.0, 13.0, 20.0, 22.0])  # timed runs of 1, 3 and 2 seconds
    monkeypatch.setattr(bench_timing, "clock", lambda: next(ticks))
    calls = []
    timing = bench_timing.measure(lambda: calls.append(1) or len(calls), label="x", repeats=3, warmup=2)
    assert len(calls) == 5  # two warm-up runs are not timed
    assert timing.samples == [1.0, 3.0, 2.0] and timing.seconds == 2.0
    assert timing.result == 5 and timing.to_dict()["repeats"] == 3


def test_measure_budget_drops_repeats(monkeypatch):
    ticks = iter([0.0, 4.0, 4.0, 8.0, 8.0, 12.0])
    monkeypatch.setattr(bench_timing, "clock", lambda: next(ticks))
    timing = bench_timing.measure(lambda: None, label="x", repeats=3, warmup=0, budget_s=10.0)
    assert timing.samples == [4.0, 4.0]  # a third 4 s run would exceed the 10 s budget
    with pytest.raises(CFMError):
        bench_timing.measure(lambda: None, label="x", repeats=0)


def test_measure_interleaved_goes_round_robin(monkeypatch):
    ticks = iter(range(100))
    monkeypatch.setattr(bench_timing, "clock", lambda: float(next(ticks)))
    order = []
    fns = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    timings = bench_timing.measure_interleaved(fns, repeats=3, warmup=1)
    assert order == ["a", "b"] + ["a", "b"] * 3  # warm-up round, then three timed rounds
    assert timings["a"].samples == [1.0, 1.0, 1.0] and timings["b"].seconds == 1.0


def test_ratio_and_goal_verdicts():
    assert bench_timing.ratio(6.0, 2.0) == 3.0
    assert bench_timing.ratio(1.0, 0.0) is None and bench_timing.ratio(None, 1.0) is None
    assert Goal("g", 10.0, 10.0).verdict == "PASS" and Goal("g", 9.99, 10.0).verdict == "MISS"
    assert Goal("g", 1.6, 1.5, higher_is_better=False).verdict == "MISS"
    assert Goal("g", None, 1.5).verdict == "n/a"


def test_machine_info_and_bf16_note():
    info = bench_timing.machine_info(torch.device("cpu"))
    assert info["torch"] == torch.__version__ and info["torch_threads"] >= 1 and info["cpu"]
    assert "AMX" in bench_timing.bf16_hardware_note({"amx_bf16", "avx512_bf16"})
    assert "lacks" in bench_timing.bf16_hardware_note(set())
    with pytest.raises(CFMError):
        resolve_device("tpu")


def test_randomise_zero_layers_makes_output_nonzero():
    torch.manual_seed(0)
    net = VelocityUNet(preset("tiny")).eval()
    x = torch.randn(1, 4, 16, 16)
    assert net(x, 0.5, x).abs().max() == 0
    randomise_zero_layers(net)
    assert net(x, 0.5, x).abs().max() > 0


# ------------------------------------------------------------------------------------------------ sections

def test_fig5_totals_and_goals_come_from_the_measured_costs(monkeypatch):
    monkeypatch.setattr(bench_timing, "measure", fake_measure(
        {"PSU": 2.0, "CFM tiny": 0.5, "SD UNet @ 8²": 3.0, "SD UNet @ 16²": 12.0}))
    section = run_fig5(ctx(), TINY_FIG5)
    per_eval, totals = section.tables
    assert [r["s / eval"] for r in per_eval.rows] == [2.0, 0.5, 3.0, 12.0]
    row = next(r for r in totals.rows if r["steps"] == 25)
    assert row["SD@128² (s)"] == 25 * 12.0
    assert row["CFM stage (s)"] == 2.0 + 25 * 0.5
    assert row["SD@64² + CFM (s)"] == 25 * 3.0 + 2.0 + 25 * 0.5
    assert row["stage speed-up"] == pytest.approx(300 / 14.5)
    stage_goal, pipeline_goal = section.goals
    assert stage_goal.value == pytest.approx(300 / 14.5) and stage_goal.verdict == "PASS"
    assert pipeline_goal.value == pytest.approx(300 / 89.5) and pipeline_goal.verdict == "MISS"
    assert "4.00×" in pipeline_goal.reason  # the per-step ceiling 12 / 3
    assert any("random weights" in n for n in section.notes)


def test_fig5_runs_real_tiny_models():
    section = run_fig5(ctx(), Fig5Config(**{**TINY_FIG5.__dict__, "heavy_once": True}))
    assert all(t.seconds > 0 for t in section.timings)
    assert all(r["stage speed-up"] > 0 for r in section.tables[1].rows)
    assert section.goals[0].value is not None


def test_precision_section(monkeypatch):
    cfg = PrecisionConfig(cases=(PrecisionCase("tiny", 16, ("fp32", "fp32 channels_last", "fp32 sdpa=flash",
                                                            "bf16 autocast", "bf16 weights", "fp16 weights")),))
    patch_measurements(monkeypatch, (
        {"tiny @ 16² fp32 channels_last": 0.8, "tiny @ 16² fp32": 1.0, "tiny @ 16² bf16 autocast": 0.5,
         "tiny @ 16² bf16 weights": 0.25}))
    section = run_precision(ctx(), cfg)
    rows = {r["variant"]: r for r in section.tables[0].rows}
    assert "fp16 weights" not in rows  # GPU-only
    flash = rows["fp32 sdpa=flash"]["speed-up vs fp32"]  # torch may refuse the kernel for our q/k/v layout
    assert isinstance(flash, float) or flash.startswith("failed")
    assert rows["fp32 channels_last"]["speed-up vs fp32"] == pytest.approx(1.25)
    assert rows["bf16 weights"]["speed-up vs fp32"] == pytest.approx(4.0)
    assert 0 < rows["bf16 weights"]["max |Δ| vs fp32"] < 1 and rows["fp32"]["max |Δ| vs fp32"] is None
    assert section.extra["bf16_method"] == "bf16 weights"
    assert section.goals[0].value == pytest.approx(4.0) and section.goals[0].verdict == "PASS"


def tiny_pixel_model() -> CFMModel:
    torch.manual_seed(0)
    space = SpaceToDepth(2)
    model = CFMModel(CFMConfig(unet=preset("tiny", space.spec.channels), latent=space.spec))
    return randomise_zero_layers(model).eval().requires_grad_(False)


def test_solver_section_on_a_tiny_model():
    cfg = SolverConfig(nfe=(1, 2, 4), solvers=("euler", "midpoint", "rk4"), reference_steps=3, crop=32)
    assert solver_grid(cfg) == [("euler", 1), ("euler", 2), ("euler", 4), ("midpoint", 1), ("midpoint", 2),
                                ("rk4", 1)]
    section = run_solvers(ctx(), cfg, model=tiny_pixel_model())
    rows = section.tables[0].rows
    assert rows[0]["NFE"] == 12 and [r["NFE"] for r in rows[1:]] == [1, 2, 4, 2, 4, 4]
    ref_gt = rows[0]["PSNR vs GT (dB)"]
    for r in rows[1:]:
        assert r["Δ vs ref's PSNR-GT (dB)"] == pytest.approx(r["PSNR vs GT (dB)"] - ref_gt)
    goal = section.goals[0]
    best = min(abs(r["Δ vs ref's PSNR-GT (dB)"]) for r in rows[1:] if 4 <= r["NFE"] <= 10)
    assert goal.value == pytest.approx(best)
    assert psnr(torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.1)) == pytest.approx(20.0)


def test_solver_section_skips_without_a_model(monkeypatch, tmp_path):
    import cfm_core.bundled as bundled

    monkeypatch.setattr(bundled, "bundled_model_path", lambda: str(tmp_path / "absent.safetensors"))
    section = run_solvers(ctx())
    assert section.skipped and section.goals[0].verdict == "n/a"


def test_memory_section_goal_from_child_reports():
    reports = {(32, None): 100.0, (32, 8): 60.0, (64, None): 400.0, (64, 8): 120.0}

    def runner(spec: ChildSpec, timeout_s: float) -> dict:
        delta = reports[(spec.output, spec.tile)]
        return {"peak_rss_mb": 500 + delta, "delta_rss_mb": delta, "seconds": 1.0, "nfe": 1,
                "latent": spec.output // 2}

    section = run_memory(ctx(), MemoryConfig(outputs=(32, 64), tile=8, overlap=2, steps=1, standin_preset="tiny"),
                         runner=runner)
    assert len(section.tables[0].rows) == 4
    assert section.goals[0].value == pytest.approx(120.0 / 100.0) and section.goals[0].verdict == "PASS"
    assert "stand-in" in section.notes[0] or "model:" in section.notes[0]


def test_memory_child_process_reports_peak_rss():
    spec = ChildSpec(output=128, tile=24, overlap=2, solver="euler", steps=1, device="cpu", seed=0, threads=1,
                     model_path=None, standin_preset="tiny", standin_space_factor=2)
    report = run_child(spec, timeout_s=120)
    assert report["peak_rss_mb"] >= report["baseline_rss_mb"] > 0 and report["delta_rss_mb"] >= 0
    assert report["nfe"] == 1 and report["latent"] == 64 and report["finite"]
    assert report["output_shape"] == [1, 3, 128, 128]
    if os.path.exists("/proc/self/clear_refs"):  # not ru_maxrss, which a child inherits from its parent
        assert report["peak_method"] == "VmHWM after clear_refs"


def test_psu_section_on_a_tiny_vae():
    section = run_psu(ctx(), PSUConfig(base_latent=8, vae_config=TINY_VAE))
    rows = {r["step"].split(" (")[0]: r for r in section.tables[0].rows}
    total = rows["PSU total"]
    parts = [rows["decode"]["plain (s)"], rows["bilinear resize"]["plain (s)"], rows["encode"]["plain (s)"]]
    assert total["plain (s)"] == pytest.approx(sum(parts))
    assert rows["decode"]["tiled (s)"] > 0 and rows["decode"]["max |tiled − plain|"] >= 0
    assert section.extra["psu_over_latent_bilinear"] == pytest.approx(
        total["plain (s)"] / section.extra["latent_bilinear_seconds"])


def test_train_section(monkeypatch):
    patch_measurements(monkeypatch, {"tiny": 0.5})
    section = run_train(ctx(), TrainConfig(presets=("tiny",), latent=16, batch=2, precisions=("fp32",)))
    row = section.tables[0].rows[0]
    assert row["samples / s"] == pytest.approx(4.0) and row["loss finite"] is True


# ------------------------------------------------------------------------------------------------ report / CLI

def test_markdown_and_json_structure():
    section = Section("x", "X", tables=[Table("t", ["a", "b"], [{"a": 1.23456, "b": None}])],
                      notes=["n"], goals=[Goal("g", 2.0, 1.5)])
    header = {"mode": "quick", "machine": bench_timing.machine_info(torch.device("cpu")), "timing": "t",
              "wall_seconds": 1.0, "load_average_end": None}
    text = markdown_report(header, [section])
    assert "| a | b |" in text and "| 1.23 | n/a |" in text and "PASS" in text
    data = report_dict(header, [section])
    assert data["format"] == "cfm-boost-bench" and data["sections"]["x"]["goals"][0]["verdict"] == "PASS"
    json.dumps(data)
    assert format_value(12345) == "12,345" and format_value(0.000123) == "1.23e-04" and format_value(math.nan)


def test_cli_runs_selected_sections_and_writes_json_and_plots(monkeypatch, tmp_path, capsys):
    tiny_train = dataclasses.replace(bench_sections.BY_KEY["train"], summary="tiny train", full=None,
                                     quick=TrainConfig(presets=("tiny",), latent=16, batch=2, precisions=("fp32",)))
    specs = tuple(tiny_train if s.key == "train" else s for s in bench_sections.SECTIONS)
    monkeypatch.setattr(bench_sections, "SECTIONS", specs)
    monkeypatch.setattr(bench_sections, "BY_KEY", {s.key: s for s in specs})
    out = tmp_path / "bench.json"
    code = main(["bench", "--quick", "--device", "cpu", "--sections", "6", "--repeats", "1",
                 "--out-json", str(out), "--plots", str(tmp_path / "plots")])
    assert code == 0
    text = capsys.readouterr().out
    assert "Training throughput" in text and "samples / s" in text and "torch" in text
    data = json.loads(out.read_text())
    assert list(data["sections"]) == ["train"] and data["mode"] == "quick"
    assert data["sections"]["train"]["timings"][0]["repeats"] == 1
    assert (tmp_path / "plots" / "train.png").stat().st_size > 0
    assert main(["bench", "--sections", "nope"]) == 2


def test_contention_warning_only_when_busy():
    from cfm_core.bench.bench import contention_warnings

    machine = {"device": "cpu", "cpu_count": 2, "torch_threads": 2, "load_average": [5.0, 5.0, 5.0]}
    assert contention_warnings(machine) and "--threads 1" in contention_warnings(machine)[0]
    assert not contention_warnings({**machine, "load_average": [0.1, 0.1, 0.1]})
    assert not contention_warnings({**machine, "torch_threads": 1})
