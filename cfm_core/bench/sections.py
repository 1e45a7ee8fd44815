"""The benchmark sections in report order, each with its quick and full settings and its own plotter."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import CFMError
from .common import BenchContext, Section
from .fig5 import Fig5Config, plot_fig5, run_fig5
from .flops import FlopsConfig, plot_flops, run_flops
from .memory import MemoryConfig, plot_memory, run_memory
from .plots import Plotter
from .precision import (
    BUNDLED,
    CORE_VARIANTS,
    LAYOUT_VARIANTS,
    PrecisionCase,
    PrecisionConfig,
    plot_precision,
    run_precision,
)
from .psu import PSUConfig, plot_psu, run_psu
from .solvers import SolverConfig, plot_solvers, run_solvers
from .train import TrainConfig, plot_train, run_train


@dataclass(frozen=True)
class SectionSpec:
    key: str
    summary: str
    run: Callable[..., Section]
    quick: object
    full: object
    plot: Plotter | None = None  # draws the section's PNG for ``--plots``


# quick: every variant for the 113M model at 64², the core ones (fp32 and both bf16 methods) elsewhere
QUICK_PRECISION = PrecisionConfig(cases=(
    PrecisionCase("paper-113m", 64), PrecisionCase("paper-306m", 64, CORE_VARIANTS),
    PrecisionCase("paper-113m", 128, CORE_VARIANTS), PrecisionCase("paper-306m", 128, CORE_VARIANTS),
    PrecisionCase(BUNDLED, 256, LAYOUT_VARIANTS),
))

SECTIONS: tuple[SectionSpec, ...] = (
    SectionSpec("fig5", "Fig. 5: SD1.5-size UNet at 1024² vs 512² + CFM 2×", run_fig5,
                Fig5Config(heavy_once=True), Fig5Config(), plot_fig5),
    SectionSpec("precision", "per-NFE cost: fp32/bf16/fp16, channels_last, attention kernels", run_precision,
                QUICK_PRECISION, PrecisionConfig(), plot_precision),
    SectionSpec("solvers", "solver table: PSNR vs 200-NFE reference and ground truth", run_solvers,
                SolverConfig(), SolverConfig(), plot_solvers),
    SectionSpec("memory", "peak memory untiled vs tiled, 1024² and 2048² outputs", run_memory,
                MemoryConfig(steps=1), MemoryConfig(), plot_memory),
    SectionSpec("psu", "PSU cost split, plain vs tiled VAE, latent-bilinear", run_psu,
                PSUConfig(base_latent=32), PSUConfig(), plot_psu),
    SectionSpec("train", "training throughput (loss + backward + Adam)", run_train,
                TrainConfig(), TrainConfig(), plot_train),
    SectionSpec("flops", "training-step FLOPs and activations (counted), GPU hours (projected)", run_flops,
                FlopsConfig(), FlopsConfig(), plot_flops),
)
BY_KEY = {s.key: s for s in SECTIONS}


def select_sections(text: str | None) -> list[SectionSpec]:
    """``None``/``all`` → every section; else a comma list of names or 1-based numbers, kept in report order."""
    if not text or text.strip() == "all":
        return list(SECTIONS)
    chosen = set()
    for item in (part.strip() for part in text.split(",") if part.strip()):
        if item.isdigit() and 1 <= int(item) <= len(SECTIONS):
            chosen.add(SECTIONS[int(item) - 1].key)
        elif item in BY_KEY:
            chosen.add(item)
        else:
            names = ", ".join(f"{i}={s.key}" for i, s in enumerate(SECTIONS, 1))
            raise CFMError(f"--sections: {item!r} is not a section; use names or numbers ({names})")
    return [s for s in SECTIONS if s.key in chosen]


def run_section(spec: SectionSpec, ctx: BenchContext) -> Section:
    return spec.run(ctx, spec.quick if ctx.quick else spec.full)
