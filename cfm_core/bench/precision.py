"""Section 2 — cost of one network evaluation of our UNet by precision, memory format and attention kernel.

bf16 is tried two ways, and the faster is named: ``torch.autocast`` (fp32 weights, matmuls/convs in bf16) and
weights cast to bf16 (everything in bf16). Accuracy: max |v_bf16 − v_fp32| on the same input, with the
zero-initialised layers randomised so the output is not identically zero.
"""
from __future__ import annotations

import contextlib
import copy
import math
import warnings
from dataclasses import dataclass

import torch

from .common import RANDOM_WEIGHTS, BenchContext, Goal, Section, Table, free_memory, timed_group
from .models import build_cfm_unet, cfm_unet_call, count_parameters
from .timing import bf16_hardware_note, cpu_flags, ratio

GOAL_BF16_SPEEDUP = 1.7


@dataclass(frozen=True)
class Variant:
    name: str
    precision: str = "fp32"  # fp32 | autocast | weights
    dtype: torch.dtype = torch.float32  # the low precision for autocast / weights
    channels_last: bool = False
    attention: str = "default"  # default | math | flash | efficient | cudnn (torch.nn.attention.SDPBackend)
    devices: tuple[str, ...] = ("cpu", "cuda")

    @property
    def is_bf16(self) -> bool:
        return self.dtype == torch.bfloat16


VARIANTS: tuple[Variant, ...] = (
    Variant("fp32"),
    Variant("fp32 channels_last", channels_last=True),
    Variant("fp32 sdpa=math", attention="math"),
    Variant("fp32 sdpa=flash", attention="flash"),
    Variant("bf16 autocast", "autocast", torch.bfloat16),
    Variant("bf16 autocast channels_last", "autocast", torch.bfloat16, channels_last=True),
    Variant("bf16 weights", "weights", torch.bfloat16),
    Variant("bf16 weights channels_last", "weights", torch.bfloat16, channels_last=True),
    Variant("bf16 weights sdpa=math", "weights", torch.bfloat16, attention="math"),
    Variant("fp16 weights", "weights", torch.float16, devices=("cuda",)),
    Variant("fp16 weights channels_last", "weights", torch.float16, channels_last=True, devices=("cuda",)),
    Variant("fp16 weights sdpa=flash", "weights", torch.float16, attention="flash", devices=("cuda",)),
    Variant("fp16 weights sdpa=efficient", "weights", torch.float16, attention="efficient", devices=("cuda",)),
    Variant("bf16 weights sdpa=flash", "weights", torch.bfloat16, attention="flash", devices=("cuda",)),
)
CORE_VARIANTS = ("fp32", "bf16 autocast", "bf16 weights", "fp16 weights")
LAYOUT_VARIANTS = ("fp32", "fp32 channels_last", "bf16 weights", "bf16 weights channels_last")
BUNDLED = "bundled"  # the preset name that stands for the bundled model's UNet (checkpoint.runs_channels_last)


@dataclass(frozen=True)
class PrecisionCase:
    preset: str
    latent: int
    variants: tuple[str, ...] | None = None  # None: every variant for the device


@dataclass(frozen=True)
class PrecisionConfig:
    cases: tuple[PrecisionCase, ...] = tuple(PrecisionCase(p, s) for p in ("paper-113m", "paper-306m")
                                             for s in (64, 128)) + (PrecisionCase(BUNDLED, 256, LAYOUT_VARIANTS),)
    batch: int = 1


def attention_context(name: str):
    if name == "default":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"math": SDPBackend.MATH, "flash": SDPBackend.FLASH_ATTENTION,
               "efficient": SDPBackend.EFFICIENT_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[name]
    return sdpa_kernel(backend)


def variant_call(net, variant: Variant, latent: int, batch: int, device: torch.device, seed: int):
    """A closure evaluating ``net`` (fp32, not modified) as ``variant`` prescribes."""
    model = net
    if variant.precision == "weights":
        model = copy.deepcopy(net).to(variant.dtype)
    if variant.channels_last:
        model = (copy.deepcopy(model) if model is net else model).to(memory_format=torch.channels_last)
    run = cfm_unet_call(model, latent, batch, device, seed, channels_last=variant.channels_last)

    def call() -> torch.Tensor:
        autocast = (torch.autocast(device.type, dtype=variant.dtype) if variant.precision == "autocast"
                    else contextlib.nullcontext())
        with autocast, attention_context(variant.attention):
            return run().float()

    return call


def variants_for(case: PrecisionCase, device: torch.device) -> list[Variant]:
    chosen = [v for v in VARIANTS if device.type in v.devices]
    if case.variants is not None:
        chosen = [v for v in chosen if v.name in case.variants]
    return chosen


def run_precision(ctx: BenchContext, cfg: PrecisionConfig | None = None) -> Section:
    cfg = cfg or PrecisionConfig()
    section = Section("precision", "Per-NFE cost of our UNet: precision, channels_last, attention kernel")
    table = Table(f"One network evaluation, batch {cfg.batch} (median seconds, variants timed interleaved)",
                  ["preset", "parameters", "latent", "variant", "s / NFE", "speed-up vs fp32", "max |Δ| vs fp32",
                   "rel. max |Δ|"])
    for preset_name in dict.fromkeys(c.preset for c in cfg.cases):
        net = build_cfm_unet(_unet_config(preset_name), ctx.device, ctx.seed)
        params = count_parameters(net)
        for case in (c for c in cfg.cases if c.preset == preset_name):
            table.rows += measure_case(ctx, section, net, case, cfg.batch, params)
            free_memory()
        del net
        free_memory()
    section.tables.append(table)
    best, speedups = best_bf16(table)
    section.extra.update({"bf16_method": best, "bf16_speedups": speedups})
    section.goals.append(bf16_goal(ctx.device, best, speedups))
    section.notes += [
        RANDOM_WEIGHTS + " (zero-initialised layers randomised so outputs and their differences are non-zero).",
        f"bf16 on this CPU: {bf16_hardware_note(cpu_flags())}." if ctx.device.type == "cpu" else
        "fp16/bf16 and the flash/efficient attention kernels are GPU-only rows.",
        "'bundled' is the bundled model's UNet (no attention) at the 256² s2d latent of a 512² image: the case "
        "behind the CPU layout rule (checkpoint.runs_channels_last).",
        "Attention layers run at 1/8 resolution and in the middle block only. 'sdpa=…' rows force one "
        "scaled-dot-product kernel; a 'failed' row means torch refused that kernel for this tensor layout.",
    ]
    if best:
        section.notes.append(f"Faster bf16 method here: **{best}** (geometric-mean speed-up over the measured "
                             f"cases: {_geomean(speedups[best]):.2f}× vs the other's "
                             f"{_geomean(next(v for k, v in speedups.items() if k != best) or [float('nan')]):.2f}×)."
                             if len(speedups) > 1 else f"Only one bf16 method was measured: {best}.")
    return section


def _unet_config(name: str):
    """A preset name, or ``bundled``: the architecture of the bundled model (its latent 256² is a 512² image)."""
    if name != BUNDLED:
        return name
    from ..bundled import require_bundled_model
    from ..checkpoint import read_config

    return read_config(require_bundled_model()).unet


def measure_case(ctx: BenchContext, section: Section, net, case: PrecisionCase, batch: int,
                 params: int) -> list[dict]:
    """All variants of one (preset, latent) case, timed round-robin so their ratios share the same load."""
    rows, calls = [], {}
    base = {"preset": case.preset, "parameters": params, "latent": f"{case.latent}²"}
    for variant in variants_for(case, ctx.device):
        call = variant_call(net, variant, case.latent, batch, ctx.device, ctx.seed)
        try:
            with warnings.catch_warnings():  # torch explains a refused kernel in warnings; the row says it
                warnings.simplefilter("ignore")
                call()  # probe (and first warm-up): a kernel this device or layout lacks raises here
        except RuntimeError as exc:
            rows.append({**base, "variant": variant.name, "s / NFE": None,
                         "speed-up vs fp32": f"failed: {str(exc).splitlines()[0][:70]}"})
            continue
        calls[f"{case.preset} @ {case.latent}² {variant.name}"] = (variant, call)
    timings = timed_group(ctx, section, {label: call for label, (_, call) in calls.items()},
                          warmup=max(0, ctx.warmup - 1))
    fp32 = next((timings[label] for label, (v, _) in calls.items() if v.name == "fp32"), None)
    reference = fp32.result if fp32 is not None else None
    for label, (variant, _) in calls.items():
        timing = timings[label]
        diff = _max_abs_diff(timing.result, reference) if variant.dtype != torch.float32 else None
        scale = float(reference.abs().max()) if reference is not None else None
        rows.append({**base, "variant": variant.name, "s / NFE": timing.seconds,
                     "speed-up vs fp32": ratio(fp32.seconds, timing.seconds) if fp32 is not None else None,
                     "max |Δ| vs fp32": diff, "rel. max |Δ|": ratio(diff, scale) if diff is not None else None})
    for timing in timings.values():
        timing.result = None
    return rows


def _max_abs_diff(out: torch.Tensor, reference: torch.Tensor | None) -> float | None:
    if reference is None:
        return None
    return float((out.float() - reference.float()).abs().max())


def best_bf16(table: Table) -> tuple[str | None, dict[str, list[float]]]:
    """The bf16 method (``bf16 autocast`` or ``bf16 weights``) with the higher geometric-mean speed-up."""
    speedups: dict[str, list[float]] = {}
    for row in table.rows:
        if row["variant"] in ("bf16 autocast", "bf16 weights") and isinstance(row.get("speed-up vs fp32"), float):
            speedups.setdefault(row["variant"], []).append(row["speed-up vs fp32"])
    if not speedups:
        return None, speedups
    return max(speedups, key=lambda k: _geomean(speedups[k])), speedups


def _geomean(values: list[float]) -> float:
    values = [v for v in values if v and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def bf16_goal(device: torch.device, best: str | None, speedups: dict[str, list[float]]) -> Goal:
    name = "bf16 per-NFE speed-up over fp32 on CPU (geometric mean over the measured presets/sizes)"
    if device.type != "cpu":
        return Goal(name, None, GOAL_BF16_SPEEDUP, reason="this run is on a GPU; the goal is about CPUs")
    if best is None:
        return Goal(name, None, GOAL_BF16_SPEEDUP, reason="no bf16 variant was measured")
    value = _geomean(speedups[best])
    reason = f"method: {best}."
    if value < GOAL_BF16_SPEEDUP:
        reason += f" Why: {bf16_hardware_note()}."
    return Goal(name, value, GOAL_BF16_SPEEDUP, reason=reason)


def plot_precision(section: Section, path: str) -> None:
    """Speed-up over fp32 per variant, one group of bars per (preset, latent)."""
    from .plots import new_figure, save_figure

    rows = [r for r in section.tables[0].rows if isinstance(r.get("speed-up vs fp32"), float)]
    cases = list(dict.fromkeys((r["preset"], r["latent"]) for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig, ax = new_figure(8, 4)
    width = 0.8 / max(1, len(variants))
    for j, variant in enumerate(variants):
        xs, ys = [], []
        for i, case in enumerate(cases):
            match = [r for r in rows if (r["preset"], r["latent"]) == case and r["variant"] == variant]
            if match:
                xs.append(i + j * width)
                ys.append(match[0]["speed-up vs fp32"])
        ax.bar(xs, ys, width, color=f"C{j % 10}", label=variant)
    ax.axhline(GOAL_BF16_SPEEDUP, color="k", ls="--", lw=1, label=f"goal {GOAL_BF16_SPEEDUP}×")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cases))], [f"{p}\n{s}" for p, s in cases], fontsize=7)
    ax.set_ylabel("speed-up vs fp32 (per NFE)")
    ax.legend(fontsize=6, ncol=2)
    save_figure(fig, path)
