"""``python -m cfm_core train``: a folder of images → a self-describing CFM model.

Defaults follow the official training: Adam (no weight decay), lr 3e-5 with a 1000-step linear warm-up, EMA
0.999 with a 1000-step copy phase and power-3/4 warm-up, no gradient clipping, bf16 autocast where supported.

Multi-process training uses ``torchrun`` + DistributedDataParallel (gloo on CPU, nccl on GPU): it ships with
torch, so it adds no dependency and no launcher config, and it is what rented multi-GPU boxes already run.
Every sample, its t and its noise are functions of (seed, step, position in the global batch), so the same
global batch gives the same loss curve with any number of processes, and ``--resume`` continues exactly.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import platform
import sys
import time
from dataclasses import replace

import torch
import torch.distributed as dist

from ..augment import DEFAULT_NOISE_STEP, batch_stable_noise, mix64
from ..autoencoders import DiffusersVAE, LatentSpace, PixelSpace, SpaceToDepth
from ..checkpoint import atomic_write, save_model
from ..devices import cpu_has_native_bf16
from ..errors import CFMError, first_line
from ..model import CFMConfig, CFMModel
from ..path import OBJECTIVES, PREDICTIONS, WEIGHTINGS, training_loss
from ..unet import PRESETS, preset
from ..upsample import DOWNSAMPLE_KERNELS, parse_kernels
from .data import LatentCache, LatentSource, PairSource, PairSpec, scan_images
from .ema import EMA

STATE_FILE = "train_state.pt"
MODEL_FILE = "model.safetensors"
LOG_FILE = "log.jsonl"


def configure(p: argparse.ArgumentParser) -> None:
    from ..vae_families import FAMILIES

    g = p.add_argument_group("data")
    g.add_argument("--data", nargs="+", required=True, help="folder(s), files or globs of training images")
    g.add_argument("--crop", type=int, default=128, help="square high-res crop size in pixels (default 128)")
    g.add_argument("--factor", type=int, default=2, choices=(2, 4), help="upscale factor (default 2)")
    g.add_argument("--downsample", nargs="+", default=["bilinear-aa"], metavar="KERNEL",
                   help="how low-res inputs are made from the crops: one kernel, or several (space or comma "
                        f"separated) of which each crop draws one; {', '.join(DOWNSAMPLE_KERNELS)} (default "
                        "bilinear-aa)")
    g.add_argument("--low-contrast", type=float, default=0.0, metavar="P",
                   help="probability that a crop is faded towards its mean colour (contrast × 0.02–1, log-uniform) "
                        "so the model learns to leave flat images flat (default 0)")
    g.add_argument("--grain", type=float, default=0.0, metavar="P",
                   help="probability that a crop gets Gaussian grain (σ 0.5–12 grey levels, log-uniform) so the "
                        "model learns not to sharpen sensor noise (default 0)")
    g.add_argument("--soft", type=float, default=0.0, metavar="P",
                   help="probability that a crop is blurred (Gaussian σ 0.4–3 px, log-uniform) so the model learns "
                        "to add no detail to soft or already-upscaled images (default 0)")
    g.add_argument("--degrade", default=None,
                   help="low-res degradations for real-world SR, e.g. 'blur=0.2-1.5,noise=0-0.03,jpeg=60-95'")
    g.add_argument("--cache-dir", default=None, help="latent cache folder for VAE spaces (default OUT/cache)")
    g.add_argument("--cache-size", type=int, default=None, help="cached samples (default 32 per image)")
    g = p.add_argument_group("latent space")
    g.add_argument("--space", default="pixels", help="pixels | s2d2 | s2d4 | vae (needs --vae) (default pixels)")
    g.add_argument("--vae", default=None,
                   help="the VAE: a VAE .safetensors (LDM or diffusers keys, with or without quant_conv), a diffusers "
                        "folder, or a full model checkpoint with the VAE inside (only its VAE tensors are read)")
    g.add_argument("--vae-family", default=None, choices=tuple(FAMILIES),
                   help="the VAE's family, when the file does not say: sd15 (SD1.x/SD2.x, ×0.18215), sdxl "
                        "(×0.13025), sd3 (SD3/SD3.5, ×1.5305, shift 0.0609), flux (Flux.1, ×0.3611, shift 0.1159)")
    g.add_argument("--vae-name", default=None, help="label stored in the model for the VAE (default: the family)")
    g.add_argument("--scale-factor", type=float, default=None,
                   help="latent scale factor of a VAE outside the families (default: the family's)")
    g.add_argument("--shift-factor", type=float, default=None,
                   help="latent shift of a VAE outside the families (default: the family's, else 0)")
    g = p.add_argument_group("model")
    g.add_argument("--preset", default="small", choices=sorted(PRESETS), help="UNet architecture (default small)")
    g.add_argument("--model-channels", type=int, default=None)
    g.add_argument("--channel-mult", default=None, help="comma list, e.g. 1,2,2,4")
    g.add_argument("--num-res-blocks", type=int, default=None)
    g.add_argument("--attention-resolutions", default=None, help="comma list of downsample factors, or 'none'")
    g.add_argument("--num-heads", type=int, default=None)
    g.add_argument("--dim-head", type=int, default=None)
    g.add_argument("--objective", default="cfm", choices=OBJECTIVES, help="cfm (default), fm, l2 or l1")
    g.add_argument("--noise-step", type=int, default=DEFAULT_NOISE_STEP,
                   help=f"noise augmentation step of 1000 (default {DEFAULT_NOISE_STEP}, as official)")
    g.add_argument("--sigma-min", type=float, default=0.0)
    g.add_argument("--prediction", default="velocity", choices=PREDICTIONS,
                   help="network output: velocity (official) or residual x̂1 − z_up (easier for small nets)")
    g.add_argument("--weighting", default="velocity", choices=WEIGHTINGS,
                   help="loss over t: velocity MSE (official) or x1 (= MSE of x̂1; equal weight for few-step times)")
    g.add_argument("--t-grid", type=int, default=0, metavar="N",
                   help="draw a share of the training times from the Euler grid {0, 1/N, …, (N−1)/N}, where an "
                        "N-step (and N/2-, N/4-step) solve evaluates the network (default 0: all uniform)")
    g.add_argument("--t-grid-fraction", type=float, default=0.5, metavar="P",
                   help="the share of training times on the --t-grid (default 0.5)")
    g.add_argument("--default-steps", type=int, default=4, help="integration steps stored as the model's default")
    g.add_argument("--default-solver", default="euler", help="solver stored as the model's default")
    g.add_argument("--init-from", default=None, help="start from this CFM .safetensors (fine-tuning)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=int, default=8, help="per-process micro-batch (default 8)")
    g.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step (default 1)")
    g.add_argument("--lr", type=float, default=3e-5, help="Adam learning rate (default 3e-5, as official)")
    g.add_argument("--warmup", type=int, default=1000, help="linear warm-up steps (default 1000)")
    g.add_argument("--lr-schedule", default="constant", choices=LR_SCHEDULES,
                   help="after warm-up: constant (official) or cosine decay to --lr-min at --max-steps")
    g.add_argument("--decay-from", type=int, default=None,
                   help="step where the cosine decay starts (default: end of warm-up; with --resume e.g. the "
                        "step it stopped at, to anneal a constant-lr run)")
    g.add_argument("--lr-min", type=float, default=0.0, help="learning rate the cosine decay ends at (default 0)")
    g.add_argument("--ema-decay", type=float, default=0.999)
    g.add_argument("--ema-start", type=int, default=1000, help="steps of plain copy before averaging")
    g.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="autocast precision (auto: bf16 on GPUs that support it, fp32 on CPU)")
    g.add_argument("--grad-checkpointing", action="store_true", help="trade compute for activation memory")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("run")
    g.add_argument("--out", required=True, help="run folder: state, log, loss curve, exported model")
    g.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    g.add_argument("--max-steps", type=int, default=10000)
    g.add_argument("--max-minutes", type=float, default=None, help="stop (and save) after this wall time")
    g.add_argument("--save-every", type=int, default=500, help="checkpoint every N steps (default 500)")
    g.add_argument("--log-every", type=int, default=10)
    g.add_argument("--export", default=None, help="also write the EMA model here (.safetensors)")
    g.add_argument("--overwrite", action="store_true", help="let --export replace an existing file")
    g.add_argument("--export-dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    g.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    g.add_argument("--quiet", action="store_true")


# ------------------------------------------------------------------ setup helpers

def build_space(args: argparse.Namespace, device: torch.device) -> LatentSpace:
    if args.space == "pixels":
        return PixelSpace()
    if args.space.startswith("s2d"):
        try:
            return SpaceToDepth(int(args.space[3:]))
        except ValueError:
            raise CFMError(f"--space {args.space!r}: write s2dN with an integer N, e.g. s2d2") from None
    if args.space == "vae":
        if not args.vae:
            raise CFMError("--space vae needs --vae PATH (a diffusers AutoencoderKL file or folder)")
        return DiffusersVAE.load(args.vae, family=args.vae_family, scale_factor=args.scale_factor,
                                 shift_factor=args.shift_factor, name=args.vae_name, device=device)
    raise CFMError(f"--space {args.space!r} is unknown; use pixels, s2d2, s2d4 or vae")


def _int_list(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise CFMError(f"{text!r} is not a comma-separated list of integers") from None


def build_config(args: argparse.Namespace, space: LatentSpace) -> CFMConfig:
    overrides = {k: v for k, v in {
        "model_channels": args.model_channels, "channel_mult": _int_list(args.channel_mult),
        "num_res_blocks": args.num_res_blocks, "attention_resolutions": _int_list(args.attention_resolutions),
        "num_heads": args.num_heads, "dim_head": args.dim_head}.items() if v is not None}
    unet = preset(args.preset, space.spec.channels, **overrides)
    return CFMConfig(unet=unet, latent=space.spec, factor=args.factor, noise_step=args.noise_step,
                     objective=args.objective, sigma_min=args.sigma_min, default_solver=args.default_solver,
                     default_steps=1 if args.objective in ("l1", "l2") else args.default_steps,
                     upsample="psu", prediction=args.prediction)


def fold_context_input(state: dict, channels: int) -> dict:
    """A regression network for a residual-prediction start: move its x_t input weights onto z_up.

    A regression model only ever saw x_t = z_up, so it may read z_up through either half of its first conv
    (input ``cat[x_t, z_up]``). Folding W_x into W_z gives the same output for x_t = z_up, and none of the
    augmentation noise in x_t reaches the output: the start model predicts x̂1 from z_up (and t) alone, one Euler
    step from t = 0 is exactly the regression output, and training adds what x_t tells about x1.
    """
    key = "input_blocks.0.0.weight"
    w = state[key].clone()
    w[:, channels:] += w[:, :channels]
    w[:, :channels] = 0
    return {**state, key: w}


def training_times(n: int, gen: torch.Generator, grid: int = 0, fraction: float = 0.5) -> torch.Tensor:
    """The times t of a global batch of ``n``: uniform on [0, 1), and with ``grid`` N > 0 a share ``fraction`` of
    them moved onto the Euler grid {0, 1/N, …, (N−1)/N}, the only times an N-step solve (and an N/2-, N/4-, …
    step one) evaluates the network at. ``grid`` 0 draws exactly the uniform times of earlier versions."""
    t = torch.rand(n, generator=gen)
    if grid:
        on = torch.rand(n, generator=gen) < fraction
        t = torch.where(on, torch.randint(grid, (n,), generator=gen) / grid, t)
    return t


def pick_device(name: str) -> torch.device:
    from ..devices import resolve_device

    return resolve_device(name)


def pick_precision(name: str, device: torch.device) -> str:
    if name != "auto":
        return name
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def slow_cpu_autocast(precision: str, device: torch.device) -> str | None:
    """A warning when ``precision`` would be emulated on this CPU, else None.

    Without AVX512-BF16 or AMX, CPU autocast to bf16/fp16 converts in software: measured on an AVX2-only EPYC with
    the bundled model's UNet (batch 8 of 128-px crops, 1 thread) 49.6 s per training step against 2.3 s in fp32.
    """
    if device.type != "cpu" or precision == "fp32":
        return None
    if cpu_has_native_bf16():
        return None
    return (f"warning: --precision {precision} on this CPU (no AVX512-BF16/AMX) is emulated and can be 20x slower "
            "than fp32; use --precision fp32 (or auto)")


LR_SCHEDULES = ("constant", "cosine")


def learning_rate(step: int, base: float, warmup: int, schedule: str = "constant", *, total: int = 0,
                  decay_from: int | None = None, minimum: float = 0.0) -> float:
    """Linear warm-up to ``base``; then constant, or cosine from ``base`` at ``decay_from`` to ``minimum`` at
    ``total``: lr = min + (base − min)·½(1 + cos π·p), p = (step − decay_from)/(total − decay_from) clipped to [0, 1].
    """
    lr = base * min(1.0, (step + 1) / warmup) if warmup > 0 else base
    if schedule == "constant":
        return lr
    start = warmup if decay_from is None else decay_from
    if step < start or total <= start:
        return lr
    progress = min(1.0, (step - start) / (total - start))
    return minimum + (lr - minimum) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ------------------------------------------------------------------ state

def _save_state(path: str, state: dict) -> None:
    try:
        atomic_write(path, lambda tmp: torch.save(state, tmp))
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise CFMError(f"disk full while writing {path}; the previous checkpoint is intact — free space and "
                           "rerun with --resume") from None
        raise


STATE_KEYS = ("step", "net", "ema", "optim", "config")


def _load_state(path: str) -> dict:
    """A saved training state, read with torch's weights-only loader (no code from the file runs) and checked."""
    import pickle

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        with open(path, "rb") as fh:
            head = fh.read(4)
        if head != b"PK\x03\x04" and head[:1] != b"\x80":  # neither a torch zip nor a legacy torch pickle
            raise CFMError(f"training state {path!r} is not a torch file; pass the --out folder of a training "
                           "run") from None
        raise CFMError(f"training state {path!r} holds objects other than tensors and numbers, so it was not loaded "
                       "(nothing from it ran); it is not a cfm_core train_state.pt — start a new --out") from None
    except Exception as exc:
        raise CFMError(f"training state {path!r} is unreadable ({first_line(exc)}); it is damaged — start a new "
                       "--out") from None
    if not isinstance(state, dict):
        raise CFMError(f"training state {path!r} holds a {type(state).__name__}, not a cfm_core training state; "
                       "start a new --out")
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        raise CFMError(f"training state {path!r} lacks {missing} (has {sorted(map(str, state))[:6]}); it is "
                       "damaged or not a cfm_core train_state.pt — start a new --out")
    bad = [k for k in ("net", "ema", "optim") if not isinstance(state[k], dict)]
    if bad or isinstance(state["step"], bool) or not isinstance(state["step"], int) or state["step"] < 0:
        raise CFMError(f"training state {path!r} has a malformed {(bad or ['step'])[0]!r} entry; it is damaged — "
                       "start a new --out")
    return state


def _state_config(state: dict, path: str) -> CFMConfig:
    try:
        return CFMConfig.from_dict(json.loads(state["config"]))
    except CFMError as exc:
        raise CFMError(f"training state {path!r} has an invalid config ({exc}); start a new --out") from None
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise CFMError(f"training state {path!r} has a broken config ({first_line(exc)}); start a new --out") from None


def export_model(weights: dict, config: CFMConfig, path: str, dtype: str, summary: dict, *,
                 overwrite: bool = True) -> None:
    """Write ``weights`` (a UNet state dict, e.g. the EMA's) as a self-describing model with ``summary``."""
    model = CFMModel(replace(config, training=summary))
    _load_weights(model.net, weights, path)
    dt = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    try:
        save_model(model, path, dtype=dt, overwrite=overwrite)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise CFMError(f"disk full while writing {path}; nothing was overwritten — free space and retry") from None
        raise


def _load_weights(module: torch.nn.Module, weights: dict, what: str) -> None:
    try:
        module.load_state_dict(weights)
    except (RuntimeError, TypeError, KeyError, ValueError) as exc:
        raise CFMError(f"the saved weights for {what!r} do not fit the run's architecture ({first_line(exc)}); the "
                       "training state is damaged — start a new --out") from None


def read_log(log_path: str) -> tuple[list[dict], list[str]]:
    """The records of a run's log.jsonl and their raw lines; lines that are not a JSON record with a step (a line
    cut off by a crash, an edit) are skipped."""
    records, lines = [], []
    with open(log_path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("step"), int):
                records.append(rec)
                lines.append(line if line.endswith("\n") else line + "\n")
    return records, lines


def plot_loss(log_path: str, png_path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in read_log(log_path)[0] if isinstance(r.get("loss"), (int, float))]
    steps, losses = [r["step"] for r in records], [r["loss"] for r in records]
    if not steps:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, losses, lw=0.8)
    ax.set(xlabel="step", ylabel="loss", yscale="log", title="training loss")
    fig.tight_layout()
    atomic_write(png_path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


# ------------------------------------------------------------------ the loop

def check_arguments(args: argparse.Namespace) -> None:
    """One-line errors for flag values that would fail later (a division by --save-every 0 after the first step)."""
    for flag, value, low in (("--batch-size", args.batch_size, 1), ("--grad-accum", args.grad_accum, 1),
                             ("--max-steps", args.max_steps, 1), ("--save-every", args.save_every, 1),
                             ("--log-every", args.log_every, 1), ("--crop", args.crop, 1),
                             ("--warmup", args.warmup, 0), ("--ema-start", args.ema_start, 0),
                             ("--t-grid", args.t_grid, 0),
                             ("--threads", args.threads if args.threads is not None else 0, 0),
                             ("--cache-size", args.cache_size if args.cache_size is not None else 1, 1)):
        if value < low:
            raise CFMError(f"{flag} {value} must be ≥ {low}")
    if (args.threads or 0) > 1024:
        raise CFMError(f"--threads {args.threads} is more than 1024; use at most one per CPU core")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise CFMError(f"--lr {args.lr:g} must be a positive number")
    if not 0.0 <= args.t_grid_fraction <= 1.0:
        raise CFMError(f"--t-grid-fraction {args.t_grid_fraction:g} is not a probability; use a value in [0, 1]")
    if args.t_grid and args.objective in ("l1", "l2"):
        raise CFMError(f"--t-grid has no effect on --objective {args.objective} (it trains at t = 0 only); drop it")
    if not 0.0 <= args.ema_decay <= 1.0:
        raise CFMError(f"--ema-decay {args.ema_decay:g} must lie in [0, 1] (official 0.999)")
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise CFMError(f"--max-minutes {args.max_minutes:g} must be positive")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise CFMError(f"--out {args.out!r} is a file; pass a folder for the run")
    out = os.path.realpath(args.out)
    for folder in (d for d in args.data if os.path.isdir(d)):
        if os.path.commonpath([out, os.path.realpath(folder)]) == os.path.realpath(folder):
            raise CFMError(f"--out {args.out!r} lies inside --data {folder!r}: the run's loss.png would become a "
                           "training image; put the run elsewhere")
    if args.export:
        from ..checkpoint import check_destination

        run_files = tuple(os.path.join(args.out, name) for name in (STATE_FILE, LOG_FILE))
        check_destination(args.export, overwrite=args.overwrite, inputs=(*run_files, args.init_from or ""),
                          what="--export")


def check_schedule(args: argparse.Namespace) -> None:
    if args.lr_schedule == "constant" and (args.decay_from is not None or args.lr_min):
        raise CFMError("--decay-from/--lr-min only apply to a decaying rate; add --lr-schedule cosine")
    if not 0.0 <= args.lr_min < args.lr:
        raise CFMError(f"--lr-min {args.lr_min:g} must be ≥ 0 and below --lr {args.lr:g}")
    if args.decay_from is not None and not 0 <= args.decay_from < args.max_steps:
        raise CFMError(f"--decay-from {args.decay_from} must lie in [0, --max-steps {args.max_steps})")


class Trainer:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        check_arguments(args)
        check_schedule(args)
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = pick_device(args.device)
        if self.world > 1:
            if self.device.type == "cuda":
                self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        if args.threads:
            torch.set_num_threads(args.threads)
        self.precision = pick_precision(args.precision, self.device)
        slow = slow_cpu_autocast(self.precision, self.device)
        if slow and self.rank == 0:
            print(slow, file=sys.stderr)
        self.space = build_space(args, self.device)
        self.config = build_config(args, self.space)
        os.makedirs(args.out, exist_ok=True)
        self._lock = _lock_run(args.out) if self.rank == 0 else None
        try:
            self._setup()
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Let go of the run folder's lock (the process may go on: tests, notebooks)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _setup(self) -> None:
        args = self.args
        self.state_path = os.path.join(args.out, STATE_FILE)
        torch.manual_seed(args.seed)  # the initial weights are part of the run's reproducibility
        self.model = CFMModel(self.config).to(self.device)
        self.model.net.gradient_checkpointing = args.grad_checkpointing
        self.step = 0
        if args.init_from:
            self._init_from(args.init_from)
        self.ema = EMA(self.model.net, args.ema_decay, args.ema_start)
        self.optim = torch.optim.Adam(self.model.net.parameters(), lr=args.lr, weight_decay=0.0)
        if args.resume:
            self._resume()
        elif os.path.exists(self.state_path):
            raise CFMError(f"--out {args.out!r} already holds a run; pass --resume to continue it or pick a new --out")
        self.net = self.model.net
        if self.world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(self.model.net)
        self.source = self._data()

    def _init_from(self, path: str) -> None:
        from ..checkpoint import load_model
        src = load_model(path)
        if src.config.unet != self.config.unet:
            raise CFMError(f"--init-from {path!r} has architecture {src.config.unet} but the flags build "
                           f"{self.config.unet}; pass matching --preset/architecture flags")
        state = src.net.state_dict()
        if src.config.objective in ("l1", "l2") and self.config.prediction == "residual":
            state = fold_context_input(state, self.config.unet.latent_channels)
        self.model.net.load_state_dict(state)

    def _resume(self) -> None:
        if not os.path.isfile(self.state_path):
            raise CFMError(f"--resume: no {STATE_FILE} in {self.args.out!r}; drop --resume to start a new run")
        if self.rank == 0:
            _remove_stale_temporaries(self.args.out)
        state = _load_state(self.state_path)
        saved = _state_config(state, self.state_path)
        if (saved.unet, saved.latent, saved.prediction) != (self.config.unet, self.config.latent,
                                                            self.config.prediction):
            raise CFMError(f"--resume: the run in {self.args.out!r} has architecture {saved.unet.to_dict()} in "
                           f"space {saved.latent.name!r} with prediction {saved.prediction!r}; pass the same "
                           "model/space/--prediction flags as when it started")
        _load_weights(self.model.net, state["net"], self.state_path)
        _load_weights(self.ema.model, state["ema"], self.state_path)
        _load_weights(self.optim, state["optim"], self.state_path)
        self.step = int(state["step"])
        self.elapsed_before = float(state.get("elapsed", 0.0))
        self._truncate_log()

    def _truncate_log(self) -> None:
        """Drop log lines written after the saved state (a crash between saves), so the curve has no repeats."""
        path = os.path.join(self.args.out, LOG_FILE)
        if self.rank or not os.path.isfile(path):
            return
        records, lines = read_log(path)
        kept = [line for rec, line in zip(records, lines) if rec["step"] <= self.step]

        def write(tmp: str) -> None:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.writelines(kept)

        atomic_write(path, write)

    def _data(self):
        a = self.args
        spec = PairSpec(crop=a.crop, factor=a.factor, downsample=parse_kernels(a.downsample),
                        low_contrast=a.low_contrast, grain=a.grain, soft=a.soft)
        degradation = None
        if a.degrade:
            from .degrade import Degradation
            degradation = Degradation.parse(a.degrade)
        unit = a.factor * self.space.spec.downscale * self.config.unet.stride
        if a.crop % unit:
            raise CFMError(f"--crop {a.crop} must be a multiple of {unit} (factor × latent downscale × UNet stride)")
        paths = scan_images(a.data, a.crop)
        self.num_images = len(paths)
        pairs = PairSource(paths, spec, a.seed, degradation)
        if self.space.spec.kind != "vae":
            return LatentSource(pairs, self.space, self.device)
        cache = LatentCache(a.cache_dir or os.path.join(a.out, "cache"), pairs, self.space,
                            a.cache_size or 32 * len(paths), a.seed, self.device)
        if self.rank == 0:
            cache.build(progress=not a.quiet)
        if self.world > 1:
            dist.barrier()
        return cache

    # one optimisation step over the global batch (world × grad_accum × batch_size samples)
    def _step(self) -> float:
        a, B = self.args, self.args.batch_size
        G = B * a.grad_accum * self.world
        first = self.step * G
        gen = torch.Generator().manual_seed(mix64(a.seed, self.step, 0x71))
        t_all = training_times(G, gen, a.t_grid, a.t_grid_fraction)
        lr = learning_rate(self.step, a.lr, a.warmup, a.lr_schedule, total=a.max_steps, decay_from=a.decay_from,
                           minimum=a.lr_min)
        for group in self.optim.param_groups:
            group["lr"] = lr
        self.optim.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for micro in range(a.grad_accum):
            positions = [(micro * self.world + self.rank) * B + j for j in range(B)]
            x1, z_up = self.source.batch([first + p for p in positions])
            noise = batch_stable_noise(tuple(x1.shape), mix64(a.seed, self.step), positions, self.device)
            sync = (contextlib.nullcontext() if self.world == 1 or micro == a.grad_accum - 1
                    else self.net.no_sync())
            with sync, self._autocast():
                res = training_loss(self.net, x1, z_up, self.config.objective, noise_step=self.config.noise_step,
                                    sigma_min=self.config.sigma_min, t=t_all[positions], noise=noise,
                                    prediction=self.config.prediction, weighting=a.weighting)
                (res.loss / a.grad_accum).backward()
            total += res.loss.detach() / a.grad_accum
        if self.world > 1:
            dist.all_reduce(total)
            total /= self.world
        self.optim.step()
        self.step += 1
        self.ema.update(self.model.net, self.step)
        return float(total)

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def save(self, elapsed: float) -> None:
        if self.rank:
            return
        state = {"step": self.step, "net": self.model.net.state_dict(), "ema": self.ema.model.state_dict(),
                 "optim": self.optim.state_dict(), "config": json.dumps(self.config.to_dict()),
                 "args": json.dumps(vars(self.args)), "elapsed": elapsed}
        _save_state(self.state_path, state)

    def summary(self, elapsed: float, last_loss: float) -> dict:
        a = self.args
        return {"steps": self.step, "global_batch": a.batch_size * a.grad_accum * self.world, "lr": a.lr,
                "lr_schedule": a.lr_schedule, "decay_from": a.decay_from, "objective": a.objective,
                "weighting": a.weighting, "crop": a.crop, "downsample": ",".join(parse_kernels(a.downsample)),
                "degrade": a.degrade, "low_contrast": a.low_contrast, "grain": a.grain, "soft": a.soft,
                "t_grid": a.t_grid, "t_grid_fraction": a.t_grid_fraction if a.t_grid else None,
                "images": self.num_images, "seed": a.seed,
                "init_from": a.init_from,
                "seconds": round(elapsed, 1), "final_loss": round(last_loss, 6), "precision": self.precision,
                "processes": self.world, "device": str(self.device), "machine": platform.processor() or
                platform.machine(), "torch": torch.__version__, "data": [os.path.basename(os.path.normpath(d))
                                                                         for d in a.data]}

    def run(self) -> dict:
        a = self.args
        _stop_on_sigterm()
        start = time.time() - getattr(self, "elapsed_before", 0.0)
        session_start = time.time()
        log_path = os.path.join(a.out, LOG_FILE)
        from tqdm import tqdm
        bar = tqdm(total=a.max_steps, initial=self.step, disable=a.quiet or self.rank > 0, desc="train")
        last_loss, window, t_window = float("nan"), [], time.time()
        self.net.train()
        try:
            while self.step < a.max_steps:
                if a.max_minutes is not None and time.time() - session_start > a.max_minutes * 60:
                    break
                loss = self._step()
                if loss != loss:
                    raise CFMError(f"loss became NaN at step {self.step}; lower --lr or use --precision fp32")
                last_loss = loss
                window.append(loss)
                bar.update(1)
                if self.step % a.log_every == 0 and self.rank == 0:
                    dt = time.time() - t_window
                    rate = len(window) * a.batch_size * a.grad_accum * self.world / max(dt, 1e-9)
                    rec = {"step": self.step, "loss": sum(window) / len(window), "lr": self.optim.param_groups[0]["lr"],
                           "samples_per_s": round(rate, 3), "elapsed": round(time.time() - start, 1)}
                    with open(log_path, "a") as fh:
                        fh.write(json.dumps(rec) + "\n")
                    bar.set_postfix(loss=f"{rec['loss']:.4f}", sps=f"{rate:.2f}")
                    window, t_window = [], time.time()
                if self.step % a.save_every == 0:
                    self.save(time.time() - start)
        except KeyboardInterrupt as exc:
            self.stop_signal = getattr(exc, "signum", 2)  # SIGINT unless the SIGTERM handler raised it
            print(f"\ninterrupted at step {self.step}; saving so that --resume continues", file=sys.stderr)
        finally:
            bar.close()
        elapsed = time.time() - start
        self.save(elapsed)
        summary = self.summary(elapsed, last_loss)
        if self.rank == 0:
            weights = self.ema.model.state_dict()
            export_model(weights, self.config, os.path.join(a.out, MODEL_FILE), a.export_dtype, summary)
            if a.export:
                export_model(weights, self.config, a.export, a.export_dtype, summary, overwrite=a.overwrite)
            if os.path.isfile(log_path):
                plot_loss(log_path, os.path.join(a.out, "loss.png"))
        if self.world > 1:
            dist.barrier()
            dist.destroy_process_group()
        return summary


def _stop_on_sigterm() -> None:
    """SIGTERM (preemption, `kill`, a job scheduler) stops like Ctrl-C: save, export, exit, --resume later."""
    import signal
    import threading

    def stop(signum, frame):
        interrupt = KeyboardInterrupt()
        interrupt.signum = signum  # the exit code says which: 130 for Ctrl-C, 143 for SIGTERM
        raise interrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)  # background jobs start with SIGINT ignored


LOCK_FILE = ".train.lock"


def _lock_run(folder: str):
    """Hold an exclusive lock on the run folder for the process's life: a second train on the same --out would
    write the same state and log files. POSIX only (elsewhere the check is skipped)."""
    try:
        import fcntl
    except ImportError:
        return None
    handle = open(os.path.join(folder, LOCK_FILE), "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise CFMError(f"--out {folder!r} is in use by another train process; wait for it to finish or pick "
                       "another --out") from None
    except OSError:  # a file system without locks (some network mounts): run unguarded, as before
        handle.close()
        return None
    return handle


def _remove_stale_temporaries(folder: str) -> None:
    """Delete ``.tmp-*`` files a killed save left behind (under the run lock, so none is being written)."""
    ours = (STATE_FILE, MODEL_FILE, LOG_FILE, "loss.png")
    for name in os.listdir(folder):
        if name.startswith(".tmp-") and name.endswith(ours):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, name))


def _remove_if_empty(folder: str) -> None:
    """Take back an --out folder this run created when it failed before writing anything into it."""
    with contextlib.suppress(OSError):
        entries = os.listdir(folder)
        if set(entries) <= {LOCK_FILE}:
            for name in entries:
                os.unlink(os.path.join(folder, name))
            os.rmdir(folder)


def run(args: argparse.Namespace) -> int:
    created = not os.path.exists(args.out)
    try:
        trainer = Trainer(args)
    except BaseException:
        if created and int(os.environ.get("RANK", "0")) == 0:
            _remove_if_empty(args.out)
        raise
    try:
        summary = trainer.run()
    finally:
        trainer.release()
    if int(os.environ.get("RANK", "0")) == 0 and not args.quiet:
        print(json.dumps(summary))
    signum = getattr(trainer, "stop_signal", None)
    return 128 + signum if signum else 0  # stopped by a signal: saved, but the run did not finish
