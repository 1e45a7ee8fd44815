"""Section 5 — what pixel-space upsampling costs: VAE decode, bilinear resize and VAE encode, timed separately,
plain and tiled, against the latent-bilinear shortcut that skips the autoencoder.

Tiled = diffusers' own ``AutoencoderKL`` tiling (tiles blended over 25 % overlaps); each operation is tiled at half
its input side, so every tiled run really splits into tiles. cfm_core itself has no VAE tiling.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..autoencoders import DiffusersVAE
from ..upsample import latent_upsample, resize_pixels
from .common import RANDOM_WEIGHTS, BenchContext, Section, Table, timed, timed_group
from .models import build_sd_vae, count_parameters
from .timing import ratio


@dataclass(frozen=True)
class PSUConfig:
    base_latent: int = 64
    factor: int = 2
    vae_config: dict | None = None  # None: the SD1.5 architecture
    tiled: bool = True


@contextlib.contextmanager
def vae_tiling(vae, sample_tile: int | None):
    """Switch diffusers tiling on with ``sample_tile``-pixel tiles (latent tiles = sample_tile / 8) for a block."""
    saved = (vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size)
    if sample_tile is not None:
        down = 2 ** (len(vae.config.block_out_channels) - 1)
        vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size = True, sample_tile, sample_tile // down
    try:
        yield
    finally:
        vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size = saved


def _tiling_call(vae, fn, sample_tile: int | None):
    def call():
        with vae_tiling(vae, sample_tile):
            return fn()

    return call


def run_psu(ctx: BenchContext, cfg: PSUConfig | None = None) -> Section:
    cfg = cfg or PSUConfig()
    target = cfg.base_latent * cfg.factor
    vae = build_sd_vae(ctx.device, cfg.vae_config, ctx.seed)
    space = DiffusersVAE(vae, name="sd15-random")
    down = space.spec.downscale
    section = Section("psu", f"PSU cost: {cfg.base_latent}² → {target}² latents "
                             f"({cfg.base_latent * down}² → {target * down}² px)")
    gen = torch.Generator().manual_seed(ctx.seed)
    z = torch.randn(1, space.spec.channels, cfg.base_latent, cfg.base_latent, generator=gen).to(ctx.device)
    table = Table("Seconds per image (median)", ["step", "plain (s)", "tiled (s)", "tiled / plain",
                                                 "max |tiled − plain|"])
    modes = ["plain", "tiled"] if cfg.tiled else ["plain"]
    with torch.no_grad():
        pixels = space.decode(z)
        pixels_up = resize_pixels(pixels, cfg.factor)
        steps = {  # step -> (closure, tile side in pixels or None when the step has nothing to tile)
            "decode": (lambda: space.decode(z), cfg.base_latent * down // 2),
            "bilinear resize (pixels)": (lambda: resize_pixels(pixels, cfg.factor), None),
            "encode": (lambda: space.encode(pixels_up), target * down // 2),
        }
        totals = dict.fromkeys(modes, 0.0)
        for step, (fn, tile) in steps.items():
            row = {"step": step + (f" (tiles {tile} px)" if tile and cfg.tiled else "")}
            step_modes = modes if tile else ["plain"]
            fns = {f"{step} {mode}": _tiling_call(vae, fn, tile if mode == "tiled" else None) for mode in step_modes}
            timings = timed_group(ctx, section, fns)  # plain and tiled round-robin
            outputs = {}
            for mode in step_modes:
                timing = timings[f"{step} {mode}"]
                outputs[mode], timing.result = timing.result, None
                row[f"{mode} (s)"] = timing.seconds
            for mode in modes:  # an untileable step costs the same in both columns
                totals[mode] += row.get(f"{mode} (s)", row["plain (s)"])
            if "tiled" in outputs:
                row["tiled / plain"] = ratio(row["tiled (s)"], row["plain (s)"])
                row["max |tiled − plain|"] = float((outputs["tiled"] - outputs["plain"]).abs().max())
            elif cfg.tiled:
                row["tiled (s)"] = "same as plain"
            table.rows.append(row)
        table.rows.append({"step": "PSU total", "plain (s)": totals["plain"], "tiled (s)": totals.get("tiled"),
                           "tiled / plain": ratio(totals.get("tiled"), totals["plain"])})
        latent_bilinear = timed(ctx, section, lambda: latent_upsample(z, cfg.factor, "bilinear"),
                                "latent bilinear")
        latent_bilinear.result = None
    table.rows.append({"step": "latent-bilinear alternative (no VAE)", "plain (s)": latent_bilinear.seconds})
    section.tables.append(table)
    section.extra.update({"psu_seconds": totals["plain"], "latent_bilinear_seconds": latent_bilinear.seconds,
                          "vae_parameters": count_parameters(vae),
                          "psu_over_latent_bilinear": ratio(totals["plain"], latent_bilinear.seconds)})
    section.notes += [
        f"{RANDOM_WEIGHTS} (SD1.5-architecture diffusers AutoencoderKL, {count_parameters(vae):,} parameters).",
        f"PSU costs {_times(ratio(totals['plain'], latent_bilinear.seconds))} the latent-bilinear shortcut; the "
        "paper (Tab. 6) finds PSU's start point worth it.",
        "Tiled = diffusers AutoencoderKL tiling (25 % overlap, tiles at half the input side); its output differs "
        "from the plain one because GroupNorm statistics are per tile.",
    ]
    if cfg.base_latent != 64:
        section.notes.append(f"Quick mode: measured at {cfg.base_latent}² → {target}² latents instead of "
                             "64² → 128² (about 4× less work).")
    return section  # the VAE is freed on return


def _times(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}×"


def plot_psu(section: Section, path: str) -> None:
    from .plots import new_figure, save_figure

    rows = [r for r in section.tables[0].rows if r["step"].split(" ")[0] in ("decode", "bilinear", "encode")]
    fig, ax = new_figure()
    for x, mode in enumerate(("plain (s)", "tiled (s)")):
        bottom = 0.0
        for i, r in enumerate(rows):
            value = r.get(mode) if isinstance(r.get(mode), float) else r["plain (s)"]
            ax.bar(x, value, bottom=bottom, color=f"C{i}", label=r["step"] if x == 0 else None)
            bottom += value
    ax.set_xticks([0, 1], ["plain", "tiled"])
    ax.set_ylabel("seconds")
    ax.set_title(section.title, fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, path)
