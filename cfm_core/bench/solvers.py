"""Section 3 — solvers at a few NFE for a trained model on a held-out photo: quality and time.

The photo is cropped to a square, degraded as in training (``make_low_res``) and upscaled back with every solver
from the same noise-augmented start (same seed), so differences come from the integrator alone. PSNR is measured
against a converged reference (rk4, 50 steps = 200 NFE) and against the ground-truth photo.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..checkpoint import load_model
from ..model import CFMModel
from ..pipeline import upscale_image
from ..solvers import SOLVERS, expected_nfe
from ..upsample import make_low_res
from .common import BenchContext, Goal, Section, Table, free_memory, shown_path, timed
from .models import resolve_model

GOAL_DB = 0.3
GOAL_NFE = (4, 10)


@dataclass(frozen=True)
class SolverConfig:
    nfe: tuple[int, ...] = (1, 2, 4, 8, 16)
    solvers: tuple[str, ...] = ("euler", "midpoint", "heun", "rk4", "dopri5")
    reference_solver: str = "rk4"
    reference_steps: int = 50
    crop: int = 256
    seed: int = 0


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1]: 10·log10(1 / MSE); inf for identical images."""
    mse = float((a.float().clamp(0, 1) - b.float().clamp(0, 1)).square().mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def held_out_image(crop: int) -> torch.Tensor:
    """skimage's "chelsea" photo (not in our training photos), centre-cropped to ``crop``², as (1, 3, H, W)."""
    from skimage import data

    array = torch.from_numpy(data.chelsea().copy()).permute(2, 0, 1).float() / 255
    h, w = array.shape[-2:]
    side = min(crop, h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return array[None, :, top:top + side, left:left + side]


def solver_grid(cfg: SolverConfig) -> list[tuple[str, int]]:
    """(solver, steps) pairs whose NFE is one of ``cfg.nfe``; dopri5 (adaptive) once."""
    grid = []
    for solver in cfg.solvers:
        per_step = SOLVERS[solver][1]
        if per_step == 0:
            grid.append((solver, 1))
            continue
        grid += [(solver, n // per_step) for n in cfg.nfe if n % per_step == 0]
    return grid


def run_solvers(ctx: BenchContext, cfg: SolverConfig | None = None, model: CFMModel | None = None) -> Section:
    cfg = cfg or SolverConfig()
    section = Section("solvers", "Solvers: PSNR vs a 200-NFE reference and vs ground truth, and time")
    if model is None:
        path = resolve_model(ctx)
        if path is None:
            section.skipped = ("no trained model: the bundled model file is absent (a development checkout?) and "
                               "no --model PATH was given; quality numbers need trained weights")
            section.goals.append(Goal(_goal_name(), None, GOAL_DB, higher_is_better=False, unit=" dB",
                                      reason="skipped: no trained model"))
            return section
        model = load_model(path, device=ctx.device)
        section.notes.append(f"model: {shown_path(path)}")
    gt = held_out_image(cfg.crop)
    f = model.config.factor
    low = make_low_res(gt, f)
    section.notes.append(f"image: skimage 'chelsea', centre crop {gt.shape[-1]}², degraded to {low.shape[-1]}² "
                         f"with make_low_res (bilinear, antialiased), upscaled {f}× back; seed {cfg.seed}.")

    def solve(solver: str, steps: int):
        return lambda: upscale_image(model, low, solver=solver, steps=steps, seed=cfg.seed)

    ctx.log("  [solvers] warm-up")
    solve("euler", 1)()
    ref_timing = timed(ctx, section, solve(cfg.reference_solver, cfg.reference_steps),
                       f"reference {cfg.reference_solver}×{cfg.reference_steps}", warmup=0, repeats=1)
    reference, ref_result = ref_timing.result
    table = Table("Quality and time per solver (one image)",
                  ["solver", "steps", "NFE", "PSNR vs ref (dB)", "PSNR vs GT (dB)", "Δ vs ref's PSNR-GT (dB)",
                   "seconds"])
    ref_gt = psnr(reference, gt)
    table.rows.append({"solver": f"{cfg.reference_solver} (reference)", "steps": cfg.reference_steps,
                       "NFE": ref_result.nfe, "PSNR vs ref (dB)": None, "PSNR vs GT (dB)": ref_gt,
                       "Δ vs ref's PSNR-GT (dB)": 0.0, "seconds": ref_timing.seconds})
    for solver, steps in solver_grid(cfg):
        timing = timed(ctx, section, solve(solver, steps), f"{solver}×{steps}", warmup=0,
                       repeats=1 if ctx.quick else None)
        image, result = timing.result
        timing.result = None
        value = psnr(image, gt)
        table.rows.append({"solver": solver, "steps": steps if SOLVERS[solver][1] else "adaptive",
                           "NFE": result.nfe, "PSNR vs ref (dB)": psnr(image, reference), "PSNR vs GT (dB)": value,
                           "Δ vs ref's PSNR-GT (dB)": value - ref_gt, "seconds": timing.seconds})
        expected = expected_nfe(solver, steps)
        if expected is not None and expected != result.nfe:
            section.notes.append(f"{solver}×{steps}: counted {result.nfe} NFE, expected {expected}.")
    ref_timing.result = None
    section.tables.append(table)
    section.goals.append(solver_goal(table))
    free_memory()
    return section


def _goal_name() -> str:
    return (f"best {GOAL_NFE[0]}–{GOAL_NFE[1]} NFE solver: |PSNR-GT − reference's PSNR-GT| "
            "(reference = rk4, 200 NFE)")


def solver_goal(table: Table) -> Goal:
    """The smallest |Δ PSNR-GT| among rows with 4 ≤ NFE ≤ 10 (fixed-grid and adaptive alike)."""
    rows = [r for r in table.rows if "reference" not in str(r["solver"]) and GOAL_NFE[0] <= r["NFE"] <= GOAL_NFE[1]]
    if not rows:
        return Goal(_goal_name(), None, GOAL_DB, higher_is_better=False, unit=" dB",
                    reason=f"no solver ran with {GOAL_NFE[0]}–{GOAL_NFE[1]} NFE")
    best = min(rows, key=lambda r: abs(r["Δ vs ref's PSNR-GT (dB)"]))
    return Goal(_goal_name(), abs(best["Δ vs ref's PSNR-GT (dB)"]), GOAL_DB, higher_is_better=False, unit=" dB",
                reason=f"best: {best['solver']} with {best['NFE']} NFE "
                       f"(PSNR vs ref {best['PSNR vs ref (dB)']:.2f} dB)")


def plot_solvers(section: Section, path: str) -> None:
    from .plots import new_figure, save_figure

    table = section.tables[0]
    fig, ax = new_figure()
    for i, solver in enumerate(dict.fromkeys(r["solver"] for r in table.rows if "reference" not in r["solver"])):
        rows = sorted((r for r in table.rows if r["solver"] == solver), key=lambda r: r["NFE"])
        ax.plot([r["NFE"] for r in rows], [r["PSNR vs GT (dB)"] for r in rows], "o-", color=f"C{i}", label=solver)
    ref = next(r for r in table.rows if "reference" in r["solver"])
    ax.axhline(ref["PSNR vs GT (dB)"], color="k", ls="--", lw=1, label=f"reference ({ref['NFE']} NFE)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("network evaluations (NFE)")
    ax.set_ylabel("PSNR vs ground truth (dB)")
    ax.legend(fontsize=7)
    save_figure(fig, path)
