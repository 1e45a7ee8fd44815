"""Section 6 — training throughput: one optimisation step = CFM loss forward + backward + Adam update.

Measured with :func:`cfm_core.path.training_loss` and ``torch.optim.Adam`` directly (the training script adds data
loading, EMA and checkpoints on top), on random latents of the paper's shape.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..path import training_loss
from .common import RANDOM_WEIGHTS, BenchContext, Section, Table, free_memory, timed_group
from .flops import count_training_step
from .models import build_cfm_unet, count_parameters


@dataclass(frozen=True)
class TrainConfig:
    presets: tuple[str, ...] = ("small", "paper-113m")
    latent: int = 64
    batch: int = 2
    precisions: tuple[str, ...] = ("fp32", "bf16 autocast")
    lr: float = 3e-5  # the official code's Adam learning rate


def train_step_call(net, batch: int, latent: int, device: torch.device, precision: str, lr: float, seed: int):
    """A closure making one Adam step on a fixed random batch; returns the loss."""
    net.train().requires_grad_(True)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    c = net.config.latent_channels
    x1 = torch.randn(batch, c, latent, latent, generator=gen).to(device)
    z_up = torch.randn(batch, c, latent, latent, generator=gen).to(device)
    loss_gen = torch.Generator(device=device).manual_seed(seed)

    def step() -> float:
        autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16 autocast"
                    else contextlib.nullcontext())
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = training_loss(net, x1, z_up, "cfm", generator=loss_gen).loss
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def run_train(ctx: BenchContext, cfg: TrainConfig | None = None) -> Section:
    cfg = cfg or TrainConfig()
    section = Section("train", f"Training throughput at {cfg.latent}² latents, batch {cfg.batch}")
    table = Table("One step = loss forward + backward + Adam (median)",
                  ["preset", "parameters", "precision", "s / step", "samples / s", "TFLOP/s achieved",
                   "loss finite"])
    for name in cfg.presets:
        step_flops = count_training_step(name, cfg.latent).step_flops * cfg.batch  # counted, see flops.py
        steps, params = {}, 0
        for precision in cfg.precisions:  # one model and optimiser per precision, timed round-robin
            net = build_cfm_unet(name, ctx.device, ctx.seed)
            params = count_parameters(net)
            steps[f"{name} {precision} train step"] = (precision, train_step_call(
                net, cfg.batch, cfg.latent, ctx.device, precision, cfg.lr, ctx.seed))
        timings = timed_group(ctx, section, {label: step for label, (_, step) in steps.items()})
        for label, (precision, _) in steps.items():
            timing = timings[label]
            table.rows.append({"preset": name, "parameters": params, "precision": precision,
                               "s / step": timing.seconds, "samples / s": cfg.batch / timing.seconds,
                               "TFLOP/s achieved": step_flops / timing.seconds / 1e12,
                               "loss finite": bool(torch.isfinite(torch.tensor(timing.result)))})
        del steps, timings
        free_memory()
    section.tables.append(table)
    section.notes += [f"{RANDOM_WEIGHTS}; objective cfm (noise step 400), Adam lr {cfg.lr:g}, fresh t and noise "
                      "each step, no EMA, no data loading. TFLOP/s achieved = the step's counted FLOPs (forward "
                      "+ backward, `bench --sections flops`) / measured s per step; divide by the device's peak "
                      "for its utilisation."]
    return section


def plot_train(section: Section, path: str) -> None:
    from .plots import bar_chart

    bar_chart(section, path, "samples / s", lambda r: f"{r['preset']}\n{r['precision']}", "samples / s")
