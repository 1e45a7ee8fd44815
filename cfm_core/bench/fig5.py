"""Section 1 — the paper's Fig. 5 on this machine: SD1.5 at 1024² versus SD1.5 at 512² plus the CFM 2× stage.

Costs are measured once per network evaluation and combined, per number of sampler steps ``s``:

    direct   = s · SD(target, batch 2)                         # guided SD UNet at the target latent size
    stage    = PSU(base → target) + s · CFM(target, batch 1)   # our 2× stage with s network evaluations
    pipeline = s · SD(base, batch 2) + stage                   # base image at 512², boosted to 1024²

Classifier-free guidance runs the SD UNet on a batch of 2 (conditional + unconditional). The final VAE decode of
the target latent is the same for both paths and is left out of both.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..autoencoders import DiffusersVAE
from ..upsample import pixel_space_upsample
from .common import RANDOM_WEIGHTS, BenchContext, Goal, Section, Table, free_memory, timed
from .models import (
    SD15_TEXT_TOKENS,
    build_cfm_unet,
    build_sd_unet,
    build_sd_vae,
    cfm_unet_call,
    count_parameters,
    sd_unet_call,
)
from .timing import ratio

GOAL_SPEEDUP = 10.0


@dataclass(frozen=True)
class Fig5Config:
    base_latent: int = 64  # 512 px with the f8 VAE
    target_latent: int = 128  # 1024 px
    cfm_presets: tuple[str, ...] = ("paper-113m", "paper-306m")
    steps: tuple[int, ...] = (4, 25, 50)
    goal_steps: int = 25
    goal_preset: str = "paper-306m"
    guidance_batch: int = 2
    text_tokens: int = SD15_TEXT_TOKENS
    vae_config: dict | None = None  # None: the SD1.5 architecture
    sd_unet_config: dict | None = None
    heavy_once: bool = False  # quick mode: the biggest forwards run once, warmed up at a smaller size


def _heavy(ctx: BenchContext, section: Section, cfg: Fig5Config, fn, label: str, warm) -> float:
    """Time a large forward; with ``heavy_once`` warm the module at a small size and time a single run."""
    if cfg.heavy_once:
        warm()
        return timed(ctx, section, fn, label, warmup=0, repeats=1).seconds
    return timed(ctx, section, fn, label).seconds


def measure_psu(ctx: BenchContext, section: Section, cfg: Fig5Config) -> float:
    vae = build_sd_vae(ctx.device, cfg.vae_config, ctx.seed)
    space = DiffusersVAE(vae, name="sd15-random")
    factor = cfg.target_latent // cfg.base_latent
    gen = torch.Generator().manual_seed(ctx.seed)

    def psu_at(side: int):
        z = torch.randn(1, 4, side, side, generator=gen).to(ctx.device)
        return lambda: _no_grad(lambda: pixel_space_upsample(z, space, factor))

    seconds = _heavy(ctx, section, cfg, psu_at(cfg.base_latent),
                     f"PSU {cfg.base_latent}²→{cfg.target_latent}² latent", psu_at(max(8, cfg.base_latent // 4)))
    section.extra["vae_parameters"] = count_parameters(vae)
    return seconds  # the VAE is freed on return


def _no_grad(fn):
    with torch.no_grad():
        return fn()


def run_fig5(ctx: BenchContext, cfg: Fig5Config | None = None) -> Section:
    cfg = cfg or Fig5Config()
    section = Section("fig5", f"Fig. 5 on this machine: SD1.5-size UNet at {cfg.target_latent * 8}² vs "
                              f"{cfg.base_latent * 8}² + CFM 2×")
    per_eval = Table("Measured cost per network evaluation (one timed forward each)",
                     ["component", "latent", "batch", "parameters", "s / eval"])
    psu = measure_psu(ctx, section, cfg)
    per_eval.rows.append({"component": "PSU: VAE decode → bilinear → encode (fixed cost)",
                          "latent": f"{cfg.base_latent}²→{cfg.target_latent}²", "batch": 1,
                          "parameters": section.extra["vae_parameters"], "s / eval": psu})
    cfm: dict[str, float] = {}
    for name in cfg.cfm_presets:
        net = build_cfm_unet(name, ctx.device, ctx.seed)
        run = cfm_unet_call(net, cfg.target_latent, 1, ctx.device, ctx.seed)
        cfm[name] = timed(ctx, section, run, f"CFM {name} @ {cfg.target_latent}²").seconds
        per_eval.rows.append({"component": f"CFM UNet {name}", "latent": f"{cfg.target_latent}²", "batch": 1,
                              "parameters": count_parameters(net), "s / eval": cfm[name]})
        del net, run
        free_memory()
    sd_unet = build_sd_unet(ctx.device, cfg.sd_unet_config, ctx.seed)
    sd_params = count_parameters(sd_unet)

    def sd_at(side: int):
        return sd_unet_call(sd_unet, side, cfg.guidance_batch, ctx.device, cfg.text_tokens, ctx.seed)

    sd_base = timed(ctx, section, sd_at(cfg.base_latent), f"SD UNet @ {cfg.base_latent}² ×{cfg.guidance_batch}")
    # the base-size run above has warmed this module: in quick mode the big one runs once, without its own warm-up
    once = {"warmup": 0, "repeats": 1} if cfg.heavy_once else {}
    sd_target = timed(ctx, section, sd_at(cfg.target_latent),
                      f"SD UNet @ {cfg.target_latent}² ×{cfg.guidance_batch}", **once).seconds
    for side, seconds in ((cfg.base_latent, sd_base.seconds), (cfg.target_latent, sd_target)):
        per_eval.rows.append({"component": "SD1.5 UNet, guided (cond + uncond)", "latent": f"{side}²",
                              "batch": cfg.guidance_batch, "parameters": sd_params, "s / eval": seconds})
    totals = fig5_totals(cfg, psu=psu, cfm=cfm, sd_base=sd_base.seconds, sd_target=sd_target)
    section.tables += [per_eval, totals]
    section.goals += fig5_goals(cfg, psu=psu, cfm=cfm, sd_base=sd_base.seconds, sd_target=sd_target)
    section.extra.update({"per_eval_seconds": {"psu": psu, "cfm": cfm, "sd_base": sd_base.seconds,
                                               "sd_target": sd_target}, "steps": list(cfg.steps)})
    section.notes += [
        RANDOM_WEIGHTS + " (SD1.5-architecture diffusers UNet/VAE and paper-size CFM UNets, all random).",
        "Totals = steps × measured per-evaluation cost + measured PSU; they are computed, not timed end to end "
        f"(50 real steps of a {cfg.target_latent * 8}² SD UNet take far too long on a small CPU).",
        "The final VAE decode of the target latent is identical in both paths and excluded from both.",
        f"Per-step ceiling of the boosted pipeline: SD@{cfg.target_latent}² / SD@{cfg.base_latent}² = "
        f"{_fmt_ratio(ratio(sd_target, sd_base.seconds))} — with the same base steps, base at the low resolution + CFM "
        "can never be more than that factor cheaper than the direct path.",
    ]
    if cfg.heavy_once:
        section.notes.append("Quick mode: PSU and the target-size SD UNet were timed once each after a warm-up "
                             "at a smaller size (repeats = 1).")
    return section


def fig5_totals(cfg: Fig5Config, *, psu: float, cfm: dict[str, float], sd_base: float, sd_target: float) -> Table:
    """The totals table: one row per (steps, CFM preset), every figure derived from the per-eval costs."""
    base_px, target_px = cfg.base_latent * 8, cfg.target_latent * 8
    table = Table("Totals per image (computed: steps × per-eval + PSU)",
                  ["steps", "CFM", f"SD@{target_px}² (s)", "CFM stage (s)", "stage speed-up",
                   f"SD@{base_px}² + CFM (s)", "pipeline speed-up"])
    for steps in cfg.steps:
        direct = steps * sd_target
        for name, per_eval in cfm.items():
            stage = psu + steps * per_eval
            pipeline = steps * sd_base + stage
            table.rows.append({"steps": steps, "CFM": name, f"SD@{target_px}² (s)": direct, "CFM stage (s)": stage,
                               "stage speed-up": ratio(direct, stage), f"SD@{base_px}² + CFM (s)": pipeline,
                               "pipeline speed-up": ratio(direct, pipeline)})
    return table


def fig5_goals(cfg: Fig5Config, *, psu: float, cfm: dict[str, float], sd_base: float,
               sd_target: float) -> list[Goal]:
    steps, name = cfg.goal_steps, cfg.goal_preset
    direct = steps * sd_target
    stage = psu + steps * cfm[name] if name in cfm else None
    stage_ratio = ratio(direct, stage) if stage is not None else None
    pipe_ratio = ratio(direct, steps * sd_base + stage) if stage is not None else None
    ceiling = ratio(sd_target, sd_base)
    target_px = cfg.target_latent * 8
    return [
        Goal(f"CFM 2× stage (PSU + {steps} NFE of {name}) vs SD1.5-size UNet at {target_px}², {steps} guided "
             "steps", stage_ratio, GOAL_SPEEDUP,
             reason="" if name in cfm else f"{name} was not measured"),
        Goal(f"whole boosted path (SD@{cfg.base_latent * 8}² {steps} steps + CFM stage) vs SD@{target_px}² "
             f"{steps} steps", pipe_ratio, GOAL_SPEEDUP,
             reason=(f"its ceiling is the measured per-step ratio SD@{cfg.target_latent}²/SD@{cfg.base_latent}² "
                     f"= {_fmt_ratio(ceiling)}" if ceiling is not None and ceiling < GOAL_SPEEDUP else "")),
    ]


def _fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}×"


def plot_fig5(section: Section, path: str) -> None:
    """Grouped bars per steps value: SD at the target size, SD at the base size + CFM, the CFM stage alone."""
    from .plots import new_figure, save_figure

    totals = section.tables[1]
    target_key = next(c for c in totals.columns if c.startswith("SD@") and "+" not in c)
    pipe_key = next(c for c in totals.columns if "+ CFM" in c)
    names = list(dict.fromkeys(r["CFM"] for r in totals.rows))
    steps = list(dict.fromkeys(r["steps"] for r in totals.rows))
    fig, ax = new_figure()
    width = 0.8 / (1 + 2 * len(names))
    for i, s in enumerate(steps):
        rows = [r for r in totals.rows if r["steps"] == s]
        bars = [(target_key, rows[0][target_key])]
        bars += [(f"{pipe_key} ({r['CFM']})", r[pipe_key]) for r in rows]
        bars += [(f"CFM stage ({r['CFM']})", r["CFM stage (s)"]) for r in rows]
        for j, (label, value) in enumerate(bars):
            ax.bar(i + j * width, value, width, color=f"C{j}", label=label if i == 0 else None)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(steps))], [f"{s} steps" for s in steps])
    ax.set_yscale("log")
    ax.set_ylabel("seconds per image (computed)")
    ax.set_title(section.title, fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, path)
