"""``python -m cfm_core bench``: the paper's speed claims, measured side by side in one run on this machine.

Sections (``--sections`` picks a subset, by name or number):
  1 fig5       SD1.5-size UNet at 1024² vs SD at 512² + the CFM 2× stage (paper Fig. 5, Tab. 1–2)
  2 precision  per-NFE cost of our UNet: fp32 / bf16 / fp16, channels_last, attention kernels
  3 solvers    PSNR and time per ODE solver and NFE for a trained model (paper Tab. 8)
  4 memory     peak memory of 1024² and 2048² upscales, untiled vs tiled
  5 psu        pixel-space upsampling: decode / resize / encode, plain vs tiled VAE, vs latent bilinear
  6 train      training throughput (loss + backward + Adam), with the FLOP/s it achieves
  7 flops      training-step FLOPs and activation memory (counted), GPU s/step and hours (projected)

Every timing is a warm-up run then the median of N repeats (GPU synchronised). The markdown report goes to
stdout, progress to stderr; ``--out-json`` writes everything (atomically), ``--plots DIR`` one PNG per section.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

import torch

from ..devices import resolve_device
from ..errors import CFMError
from .common import BenchContext, Section
from .plots import write_plots
from .report import markdown_report, write_json
from .sections import SECTIONS, run_section, select_sections
from .timing import load_average, machine_info

QUICK_TIMING = {"repeats": 3, "warmup": 1, "budget_s": 15.0}
FULL_TIMING = {"repeats": 5, "warmup": 1, "budget_s": 120.0}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("--quick", action="store_true",
                        help="smaller/fewer measurements (a few minutes on 2 CPU cores); full mode otherwise")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--sections", default="all",
                        help="comma list of sections by name or number: " +
                             ", ".join(f"{i}={s.key}" for i, s in enumerate(SECTIONS, 1)) + " (default: all)")
    parser.add_argument("--out-json", metavar="PATH", help="write all numbers to this JSON file (atomically)")
    parser.add_argument("--plots", metavar="DIR", help="write one PNG plot per section into DIR")
    parser.add_argument("--model", metavar="PATH", help="CFM model for the solver and memory sections "
                                                        "(default: the bundled model, if present)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, help="timed repeats per measurement (default: 3 quick, 5 full)")
    parser.add_argument("--seed", type=int, default=0)


def build_context(args: argparse.Namespace) -> BenchContext:
    if args.threads is not None:
        if args.threads < 1:
            raise CFMError(f"--threads {args.threads} must be ≥ 1")
        torch.set_num_threads(args.threads)
    timing = dict(QUICK_TIMING if args.quick else FULL_TIMING)
    if args.repeats is not None:
        if args.repeats < 1:
            raise CFMError(f"--repeats {args.repeats} must be ≥ 1")
        timing["repeats"] = args.repeats
    return BenchContext(device=resolve_device(args.device), quick=args.quick, model_path=args.model,
                        seed=args.seed, **timing)


def contention_warnings(machine: dict) -> list[str]:
    """A busy machine makes multi-threaded CPU timings unreliable (OpenMP threads wait on each other)."""
    load, cpus, threads = machine.get("load_average"), machine.get("cpu_count") or 1, machine["torch_threads"]
    if machine["device"] == "cpu" and load and threads > 1 and load[0] + threads > cpus + 0.5:
        return [f"1-min load average {load[0]} with {cpus} CPUs: other processes compete with torch's {threads} "
                "threads, which can slow multi-threaded kernels several-fold; --threads 1 is steadier on a busy "
                "machine"]
    return []


def run_sections(ctx: BenchContext, specs) -> tuple[list[Section], list[str]]:
    """Run each section; a section that fails is reported as such and the others still run."""
    sections, failures = [], []
    for spec in specs:
        ctx.log(f"[bench] section {spec.key}: {spec.summary}")
        start, load = time.perf_counter(), load_average()
        try:
            section = run_section(spec, ctx)
        except (CFMError, RuntimeError, OSError, ValueError) as exc:
            traceback.print_exc(file=sys.stderr)
            section = Section(spec.key, spec.summary, skipped=f"failed: {type(exc).__name__}: {exc}")
            failures.append(spec.key)
        section.seconds = time.perf_counter() - start
        section.extra["load_average"] = {"start": load, "end": load_average()}
        ctx.log(f"[bench] section {spec.key} done in {section.seconds:.0f} s")
        sections.append(section)
    return sections, failures


def run(args: argparse.Namespace) -> int:
    if args.out_json and os.path.isdir(args.out_json):  # found before the minutes of measuring, not after
        raise CFMError(f"--out-json {args.out_json!r} is a folder; pass a file name")
    if args.plots and os.path.exists(args.plots) and not os.path.isdir(args.plots):
        raise CFMError(f"--plots {args.plots!r} is a file; pass a folder")
    specs = select_sections(args.sections)
    ctx = build_context(args)
    start = time.perf_counter()
    header = {
        "mode": "quick" if ctx.quick else "full",
        "argv": sys.argv[1:],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(ctx.device),
        "timing": (f"warm-up {ctx.warmup}, then median of up to {ctx.repeats} timed runs (fewer when a run "
                   f"exceeds {ctx.budget_s:g} s / repeats)" + ("; GPU synchronised" if ctx.device.type == "cuda"
                                                                else "")),
    }
    header["warnings"] = contention_warnings(header["machine"])
    for warning in header["warnings"]:
        ctx.log(f"[bench] warning: {warning}")
    sections, failures = run_sections(ctx, specs)
    header["load_average_end"] = load_average()
    header["wall_seconds"] = time.perf_counter() - start
    sys.stdout.write(markdown_report(header, sections))
    sys.stdout.flush()
    if args.out_json:
        write_json(args.out_json, header, sections)
        ctx.log(f"[bench] wrote {args.out_json}")
    if args.plots:
        for path in write_plots(args.plots, sections, {spec.key: spec.plot for spec in specs}):
            ctx.log(f"[bench] wrote {path}")
    return 1 if failures else 0
