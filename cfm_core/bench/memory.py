"""Section 4 — peak memory and time of whole upscales, untiled vs tiled, each in a fresh child process.

On CPU tracemalloc does not see torch's allocations, so each configuration runs in its own Python process
(``python -m cfm_core.bench.memory SPEC``). After loading the model and a small warm-up the child resets its
peak-RSS counter (``/proc/self/clear_refs`` ← 5), runs the upscale and reads the new peak (``VmHWM``); peak minus
the RSS at the reset is the working memory of the upscale.

Why not ``ru_maxrss``: Linux carries it across ``exec``, and Python starts children with vfork/posix_spawn,
so a child's ``ru_maxrss`` (and the parent's ``RUSAGE_CHILDREN``) starts at the *parent's* high-water mark — after
the earlier sections that is gigabytes. It is used only where /proc is missing. On a GPU the child reports
``torch.cuda.max_memory_allocated`` instead.
"""
from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

from ..errors import CFMError
from .common import PACK_ROOT, RANDOM_WEIGHTS, BenchContext, Goal, Section, Table, shown_path
from .timing import ratio

GOAL_MEMORY_RATIO = 1.5
RESULT_PREFIX = "BENCH_MEMORY_RESULT "


@dataclass(frozen=True)
class MemoryConfig:
    outputs: tuple[int, ...] = (1024, 2048)  # output side in pixels
    tile: int = 272  # latent side of a tile (256 + overlap: a 512² latent splits into 2 × 2 tiles)
    overlap: int = 16
    solver: str = "euler"
    steps: int = 4
    standin_preset: str = "small"  # used when there is no trained model: memory does not depend on weights
    standin_space_factor: int = 2
    timeout_s: float = 3600.0


@dataclass(frozen=True)
class ChildSpec:
    output: int
    tile: int | None
    overlap: int
    solver: str
    steps: int
    device: str
    seed: int
    threads: int
    model_path: str | None
    standin_preset: str
    standin_space_factor: int


def _proc_status_mb(field: str) -> float | None:
    """A ``kB`` field of /proc/self/status in MiB (None where /proc is missing)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Set this process's peak-RSS mark (VmHWM) to its current RSS (Linux ≥ 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    hwm = _proc_status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _build_model(spec: ChildSpec):
    import torch

    from ..autoencoders import SpaceToDepth
    from ..checkpoint import load_model
    from ..model import CFMConfig, CFMModel
    from ..unet import preset
    from .models import randomise_zero_layers

    if spec.model_path:
        return load_model(spec.model_path, device=spec.device)
    space = SpaceToDepth(spec.standin_space_factor)
    torch.manual_seed(spec.seed)
    config = CFMConfig(unet=preset(spec.standin_preset, space.spec.channels), latent=space.spec, factor=2)
    model = CFMModel(config)
    randomise_zero_layers(model, spec.seed)
    return model.to(spec.device).eval().requires_grad_(False)


def child_main(spec: ChildSpec) -> dict:
    """Runs in the child: load, warm up small, then one measured upscale of an ``output``² result."""
    import torch

    from ..pipeline import upscale_image

    torch.set_num_threads(spec.threads)
    device = torch.device(spec.device)
    model = _build_model(spec)
    f = model.config.factor
    gen = torch.Generator().manual_seed(spec.seed)
    small = max(16, spec.output // 16 // 8 * 8)
    upscale_image(model, torch.rand(1, 3, small, small, generator=gen), solver=spec.solver, steps=1)
    image = torch.rand(1, 3, spec.output // f, spec.output // f, generator=gen)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    gc.collect()
    reset = reset_peak_rss()
    baseline = _proc_status_mb("VmRSS") if reset else peak_rss_mb()
    cuda_base = torch.cuda.memory_allocated() / 2**20 if device.type == "cuda" else None
    start = time.perf_counter()
    out, result = upscale_image(model, image, solver=spec.solver, steps=spec.steps, seed=spec.seed,
                                tile=spec.tile, overlap=spec.overlap)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    report = {"baseline_rss_mb": baseline, "peak_rss_mb": peak_rss_mb(), "seconds": seconds, "nfe": result.nfe,
              "peak_method": "VmHWM after clear_refs" if reset else "ru_maxrss (includes the parent's peak)",
              "latent": spec.output // model.config.latent.downscale, "output_shape": list(out.shape),
              "finite": bool(torch.isfinite(out).all())}
    report["delta_rss_mb"] = report["peak_rss_mb"] - baseline
    if device.type == "cuda":
        report["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        report["cuda_delta_mb"] = report["cuda_peak_mb"] - cuda_base
    return report


def run_child(spec: ChildSpec, timeout_s: float) -> dict:
    """Start a fresh interpreter for one configuration and read back its report."""
    env = dict(os.environ)
    env["PYTHONPATH"] = PACK_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "cfm_core.bench.memory", json.dumps(asdict(spec))],
                          capture_output=True, text=True, timeout=timeout_s, env=env, cwd=PACK_ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise CFMError(f"memory benchmark child for {spec.output}² (tile={spec.tile}) failed "
                       f"(exit {proc.returncode}): {tail[0]}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def run_memory(ctx: BenchContext, cfg: MemoryConfig | None = None, model_path: str | None = None,
               runner=run_child) -> Section:
    import torch

    from .models import resolve_model

    cfg = cfg or MemoryConfig()
    section = Section("memory", "Peak memory and time per upscale: untiled vs tiled (fresh process each)")
    path = model_path or resolve_model(ctx)
    gpu = ctx.device.type == "cuda"
    unit = "GPU MB (max_memory_allocated)" if gpu else "peak RSS MB"
    table = Table(f"Whole upscale of one image, {cfg.solver} × {cfg.steps} steps",
                  ["output", "mode", "latent", "NFE", unit, "Δ over loaded model (MB)", "seconds"])
    results: dict[tuple[int, bool], dict] = {}
    for output in cfg.outputs:
        for tiled in (False, True):
            spec = ChildSpec(output=output, tile=cfg.tile if tiled else None, overlap=cfg.overlap,
                             solver=cfg.solver, steps=cfg.steps, device=str(ctx.device), seed=ctx.seed,
                             threads=torch.get_num_threads(), model_path=path, standin_preset=cfg.standin_preset,
                             standin_space_factor=cfg.standin_space_factor)
            ctx.log(f"  [memory] {output}² {'tiled' if tiled else 'untiled'} in a child process ...")
            report = runner(spec, cfg.timeout_s)
            results[(output, tiled)] = report
            peak, delta = ((report["cuda_peak_mb"], report["cuda_delta_mb"]) if gpu else
                           (report["peak_rss_mb"], report["delta_rss_mb"]))
            ctx.log(f"  [memory] {output}² {'tiled' if tiled else 'untiled'}: peak {peak:.0f} MB, "
                    f"Δ {delta:.0f} MB, {report['seconds']:.1f} s")
            mode = f"tiled ({cfg.tile}² latent tiles, overlap {cfg.overlap})" if tiled else "untiled"
            table.rows.append({"output": f"{output}²", "mode": mode, "latent": f"{report['latent']}²",
                               "NFE": report["nfe"], unit: peak, "Δ over loaded model (MB)": delta,
                               "seconds": report["seconds"]})
    section.tables.append(table)
    section.extra["children"] = {f"{o}-{'tiled' if t else 'untiled'}": r for (o, t), r in results.items()}
    section.goals.append(memory_goal(cfg, results, gpu))
    section.notes.append(f"model: {shown_path(path)}" if path else
                         f"no trained model found: a stand-in `{cfg.standin_preset}` UNet in space-to-depth "
                         f"({cfg.standin_space_factor}×) pixel space, {RANDOM_WEIGHTS} (memory does not depend "
                         "on the weights).")
    methods = sorted({r.get("peak_method", "?") for r in results.values()})
    section.notes.append("Each row is one fresh process: model load, warm-up upscale of a small image, peak-RSS "
                         "mark reset, one timed upscale; Δ = peak during the upscale − RSS before it (input image, "
                         f"latents, activations). Peak method: {', '.join(methods)}.")
    return section


def memory_goal(cfg: MemoryConfig, results: dict[tuple[int, bool], dict], gpu: bool) -> Goal:
    small, large = min(cfg.outputs), max(cfg.outputs)
    key = "cuda_delta_mb" if gpu else "delta_rss_mb"
    name = f"working memory of a tiled {large}² upscale / untiled {small}² upscale"
    if (small, False) not in results or (large, True) not in results or small == large:
        return Goal(name, None, GOAL_MEMORY_RATIO, higher_is_better=False, reason="configurations not measured")
    value = ratio(results[(large, True)][key], results[(small, False)][key])
    total = ratio(results[(large, True)]["cuda_peak_mb" if gpu else "peak_rss_mb"],
                  results[(small, False)]["cuda_peak_mb" if gpu else "peak_rss_mb"])
    return Goal(name, value, GOAL_MEMORY_RATIO, higher_is_better=False,
                reason=f"ratio of total peaks (incl. weights and runtime): {total:.2f}×" if total else "")


def plot_memory(section: Section, path: str) -> None:
    from .plots import new_figure, save_figure

    table = section.tables[0]
    fig, ax = new_figure()
    labels = [f"{r['output']} {r['mode'].split(' ')[0]}" for r in table.rows]
    ax.bar(range(len(labels)), [r["Δ over loaded model (MB)"] for r in table.rows], color="C0")
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("working memory (MB)")
    ax.set_title(section.title, fontsize=9)
    save_figure(fig, path)


if __name__ == "__main__":
    result = child_main(ChildSpec(**json.loads(sys.argv[1])))
    print(RESULT_PREFIX + json.dumps(result), flush=True)
