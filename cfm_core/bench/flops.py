"""Section 7 — what a training step costs, counted rather than timed, and what that projects to on a GPU.

Counted (exact for the network, independent of the machine): FLOPs of one training step — CFM loss forward and
backward — per sample, with :class:`torch.utils.flop_counter.FlopCounterMode` (a multiply-add counts 2 FLOPs), and
the bytes of the tensors autograd saves for backward (the activation memory), both on the ``meta`` device so that
even the 306M model at 128² costs no compute or memory here. (On the meta device attention decomposes into
matmuls the counter sees; it does not see inside the fused CPU attention kernel, so a count on real CPU tensors
would miss the attention.) The Adam update (≈ 16 FLOPs per parameter) and the EMA
are left out: below 0.01 % of a step.

Projected (assumptions stated in the table): seconds per step and hours to a training length on one GPU, as
FLOPs / (dense bf16 peak × utilisation). Peaks are the vendors' dense (no sparsity) bf16 tensor-core figures;
the utilisation is an assumption for a conv UNet under bf16 autocast, not a measurement — measure it on the GPU
with ``bench --sections train --device cuda`` and put the measured s/step in its place.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..path import training_loss
from ..unet import VelocityUNet, count_parameters, preset
from .common import BenchContext, Section, Table

# dense bf16 tensor-core peaks (TFLOP/s): NVIDIA A100 SXM datasheet 312, H100 SXM datasheet 989
GPU_PEAK_TFLOPS = {"A100": 312.0, "H100": 989.0}
# the latent cache is encoded by an fp32 VAE, whose convolutions cuDNN runs in TF32 by default: dense TF32 peaks
GPU_TF32_PEAK_TFLOPS = {"A100": 156.0, "H100": 495.0}


@dataclass(frozen=True)
class Workload:
    """A training configuration of the paper (Tab. 9) to project: preset, global batch, latent side."""

    name: str
    preset: str
    batch: int
    latent: int = 128


@dataclass(frozen=True)
class FlopsConfig:
    presets: tuple[str, ...] = ("paper-113m", "paper-306m")
    latents: tuple[int, ...] = (64, 128)  # high-res latent sides: 512 px and 1024 px images with an /8 VAE
    channels: int = 4  # SD1.x/SDXL; SD3/Flux latents (16) change only the first and last conv
    # the paper's Tab. 9 runs; 100k iterations is the horizon of its Fig. 9 (it states no total step count)
    workloads: tuple[Workload, ...] = (Workload("FacesHQ", "paper-113m", 96), Workload("LHQ", "paper-306m", 128),
                                       Workload("Unsplash", "paper-306m", 768))
    steps: int = 100_000
    utilisation: float = 0.4
    cache_samples: int = 100_000


@dataclass(frozen=True)
class StepCount:
    preset: str
    latent: int
    parameters: int
    forward_flops: int
    step_flops: int  # forward + backward, per sample
    saved_bytes: int  # tensors saved for backward, per sample, fp32


def count_training_step(name: str, latent: int, channels: int = 4) -> StepCount:
    """FLOPs and saved-activation bytes of one CFM training step (batch 1) of preset ``name`` at ``latent``²."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        net = VelocityUNet(preset(name, channels))
        x1, z_up, noise = (torch.randn(1, channels, latent, latent) for _ in range(3))
        t = torch.rand(1)
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if not (tensor.requires_grad and tensor.is_leaf):  # weights are not activations
            saved[id(tensor)] = tensor.numel() * tensor.element_size()
        return tensor

    counter = FlopCounterMode(display=False)
    with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = training_loss(net, x1, z_up, "cfm", t=t, noise=noise).loss
        forward = counter.get_total_flops()
        loss.backward()
    return StepCount(name, latent, count_parameters(net), forward, counter.get_total_flops(), sum(saved.values()))


def count_vae_encode(pixels: int, channels: int = 4) -> int:
    """FLOPs of one VAE encode (posterior mean) of a ``pixels``² image, SD-architecture VAE with ``channels`` latent
    channels (4: SD1.x/SDXL with quant_conv; 16: SD3/Flux without), on the meta device."""
    from diffusers import AutoencoderKL
    from torch.utils.flop_counter import FlopCounterMode

    from .models import SD15_VAE_CONFIG

    extra = {"latent_channels": 16, "use_quant_conv": False, "use_post_quant_conv": False} if channels == 16 else {}
    with torch.device("meta"):
        vae = AutoencoderKL(**{**SD15_VAE_CONFIG, **extra})
        image = torch.randn(1, 3, pixels, pixels)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        vae.encode(image)
    return counter.get_total_flops()


def cache_bytes_per_sample(channels: int, latent: int) -> int:
    """The latent cache stores x1 and z_up per sample, fp32 (``cfm_core.train.data.LatentCache``)."""
    return 2 * channels * latent * latent * 4


def run_flops(ctx: BenchContext, cfg: FlopsConfig | None = None) -> Section:
    cfg = cfg or FlopsConfig()
    section = Section("flops", "Training-step FLOPs and activation memory (counted), GPU time (projected)")
    counts = {}
    table = Table("Counted per sample: one training step = CFM loss forward + backward (FlopCounterMode, meta "
                  "device)", ["preset", "parameters", "latent", "pixels", "forward GFLOP", "step GFLOP",
                              "saved activations MiB (fp32)"])
    for name in cfg.presets:
        for latent in cfg.latents:
            ctx.log(f"[bench] counting {name} at {latent}²")
            c = count_training_step(name, latent, cfg.channels)
            counts[(name, latent)] = c
            table.rows.append({"preset": name, "parameters": c.parameters, "latent": f"{latent}²",
                               "pixels": f"{latent * 8}²", "forward GFLOP": c.forward_flops / 1e9,
                               "step GFLOP": c.step_flops / 1e9, "saved activations MiB (fp32)":
                               c.saved_bytes / 2 ** 20})
    section.tables.append(table)
    projection = Table(f"Projected on one GPU at {cfg.utilisation:.0%} of the dense bf16 peak "
                       f"({', '.join(f'{k} {v:g} TFLOP/s' for k, v in GPU_PEAK_TFLOPS.items())}), "
                       f"{cfg.steps:,} steps", ["run", "preset", "batch", "latent", "TFLOP / step"]
                       + [f"{gpu} s / step" for gpu in GPU_PEAK_TFLOPS] + [f"{gpu} hours" for gpu in GPU_PEAK_TFLOPS])
    for w in cfg.workloads:
        c = counts.get((w.preset, w.latent)) or count_training_step(w.preset, w.latent, cfg.channels)
        flops = c.step_flops * w.batch
        row = {"run": w.name, "preset": w.preset, "batch": w.batch, "latent": f"{w.latent}²",
               "TFLOP / step": flops / 1e12}
        for gpu, peak in GPU_PEAK_TFLOPS.items():
            seconds = flops / (peak * 1e12 * cfg.utilisation)
            row[f"{gpu} s / step"] = seconds
            row[f"{gpu} hours"] = seconds * cfg.steps / 3600
        projection.rows.append(row)
    section.tables.append(projection)
    cache = Table(f"Latent cache size for {cfg.cache_samples:,} cached samples (computed: x1 + z_up, fp32)",
                  ["latent channels", "latent", "GiB"])
    for channels in (4, 16):
        for latent in cfg.latents:
            cache.rows.append({"latent channels": channels, "latent": f"{latent}²",
                               "GiB": cache_bytes_per_sample(channels, latent) * cfg.cache_samples / 2 ** 30})
    section.tables.append(cache)
    encode = Table(f"Building the cache: two VAE encodes per sample (the crop and its upsampled low-res), counted; "
                   f"hours for {cfg.cache_samples:,} samples projected at {cfg.utilisation:.0%} of the TF32 peak "
                   f"(fp32 VAE; {', '.join(f'{k} {v:g}' for k, v in GPU_TF32_PEAK_TFLOPS.items())} TFLOP/s)",
                   ["latent channels", "pixels", "encode GFLOP / image", "TFLOP / sample"]
                   + [f"{gpu} hours" for gpu in GPU_PEAK_TFLOPS])
    for channels in (4, 16):
        for latent in cfg.latents:
            flops = count_vae_encode(latent * 8, channels)
            row = {"latent channels": channels, "pixels": f"{latent * 8}²", "encode GFLOP / image": flops / 1e9,
                   "TFLOP / sample": 2 * flops / 1e12}
            for gpu, peak in GPU_TF32_PEAK_TFLOPS.items():
                row[f"{gpu} hours"] = 2 * flops * cfg.cache_samples / (peak * 1e12 * cfg.utilisation) / 3600
            encode.rows.append(row)
    section.tables.append(encode)
    section.notes += [
        "FLOPs count a multiply-add as 2; per-sample figures scale linearly with the batch. Saved activations "
        "are fp32 on the meta device; under bf16 autocast most are stored in bf16 (about half).",
        f"Projections assume {cfg.utilisation:.0%} utilisation of the dense bf16 peak; they are not "
        "measurements. Adam and EMA updates and data loading are not counted.",
    ]
    return section


def plot_flops(section: Section, path: str) -> None:
    from .plots import bar_chart

    bar_chart(section, path, "step GFLOP", lambda r: f"{r['preset']}\n{r['latent']}",
              "GFLOP per sample (forward + backward)")
