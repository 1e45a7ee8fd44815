"""``python -m cfm_core evaluate``: PSNR / SSIM / SWD of CFM models against bicubic and bilinear on held-out images.

Protocol, per high-res image ``hr``:
  1. centre-crop to ``--crop N`` (square) if given, then centre-crop to a multiple of ``multiple`` = lcm over the
     models of (factor·d, d·UNet stride), d the latent downscale: the low-res image then encodes exactly and the
     UNet needs no padding;
  2. ``lr = make_low_res(hr, factor, kernel)`` for each kernel of ``--downsample`` (default ``box``: the official
     code's ``F.interpolate(mode="bilinear")`` without antialiasing, at 2× the 2×2 box average; also
     ``bilinear-aa``, ``bicubic-aa``, ``lanczos``, ``area``, see :mod:`cfm_core.upsample`). A user's image has no
     known kernel, so an upscaler is judged on several; every row is reported per kernel and as the mean over them;
  3. optionally degrade ``lr`` (``--degrade SPEC``, :mod:`cfm_core.train.degrade`, seeded per image);
  4. upscale with each method: bicubic / bilinear ``F.interpolate`` (clamped to [0, 1]) and each model × solver
     × steps × noise step through :func:`cfm_core.pipeline.upscale_image` (seed ``--seed``, batch index = image
     index, so every image gets its own, reproducible noise);
  5. PSNR and SSIM per image (:mod:`.metrics`), averaged over the images; SWD (Karras et al., ×1e3) over
     the whole set, with the same patch positions for the references and every method; seconds per image (wall
     clock of the upscale call, after one warm-up call per model); NFE per image.

SWD needs many patches. Karras samples 128 patches per image from 16k images; a held-out set here has a handful of
images, so the default is ``SWD_PATCHES`` = 8192 per image and level. With 128 per image on four 512² photos, the
high-res images against themselves at other positions scored 83 while bicubic scored 28: the sampling noise was
larger than the differences being measured. The first row of every table is that sampling floor ("high-res, other
patches"), so a reader can tell which SWD differences mean something.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from ..augment import mix64
from ..errors import CFMError
from ..model import CFMModel
from ..solvers import SOLVERS
from ..train.degrade import Degradation
from ..upsample import DOWNSAMPLE_KERNELS, make_low_res, parse_kernels
from .metrics import SWD_SCALE, image_descriptors, psnr, pyramid_levels, ssim, swd_from_descriptors

DEFAULT_KERNELS = ("box",)  # the paper's (official code's) low-res inputs
MEAN = "mean"  # the kernel of the rows averaged over the kernels
BASELINES = ("bicubic", "bilinear", "nearest")
MIN_SIDE = 16  # SWD's coarsest pyramid level; SSIM needs ≥ 11
METRICS = (("psnr", "PSNR (dB) ↑"), ("ssim", "SSIM ↑"), ("swd", "SWD ×1e3 ↓"))
SWD_PATCHES = 8192  # per image and pyramid level; see the module docstring
FLOOR = "high-res, other patches"


@dataclass(frozen=True)
class Setting:
    """One way to run a model; None means the model's own default."""

    solver: str | None = None
    steps: int | None = None


@dataclass
class Row:
    """The result of one method over the whole image set."""

    method: str  # "bicubic", "bilinear" or the model's label
    kind: str  # "floor" (SWD sampling floor; no PSNR/SSIM), "baseline" or "model"
    solver: str | None
    steps: int | None
    nfe: float  # network evaluations per image (0 for baselines)
    psnr: float  # mean over images, dB
    ssim: float  # mean over images
    swd: float  # over the set, mean over pyramid levels, ×1e3
    swd_levels: list[float] = field(default_factory=list)  # finest first, ×1e3
    seconds_per_image: float = 0.0
    images: int = 0
    kernel: str = ""  # how the low-res inputs were made; MEAN for the mean over kernels; "" for the floor
    noise_step: int | None = None  # models: the noise-augmentation step used

    @property
    def label(self) -> str:
        if self.kind != "model":
            return self.method
        return f"{self.method} {self.solver}×{self.steps}" + ("" if self.noise_step is None else f" n{self.noise_step}")


ModelEntry = tuple[str, CFMModel, Sequence[Setting | tuple]]


# ------------------------------------------------------------------------------------------------ data preparation

def crop_multiple(models: Sequence[CFMModel], factor: int) -> int:
    """Side lengths every method can take without padding: lcm of factor·d and d·stride over the models."""
    multiple = factor
    for model in models:
        d = model.config.latent.downscale
        multiple = math.lcm(multiple, factor * d, d * model.config.unet.stride)
    return multiple


def size_problem(height: int, width: int, crop: int | None, multiple: int) -> str | None:
    """Why an image of this size cannot be evaluated, or None."""
    need = max(crop or 0, multiple, MIN_SIDE)
    if min(height, width) < need:
        what = f"the crop {crop}" if crop and crop >= max(multiple, MIN_SIDE) else f"the minimum side {need}"
        return f"{width}×{height} is smaller than {what}"
    return None


def centre_crop(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    h, w = image.shape[-2:]
    top, left = (h - height) // 2, (w - width) // 2
    return image[..., top:top + height, left:left + width]


def prepare_high_res(image: torch.Tensor, multiple: int, crop: int | None = None) -> torch.Tensor:
    """(3, H, W) → centre crop to ``crop``² (if given), then down to multiples of ``multiple``."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise CFMError(f"evaluation images must be (3, H, W) RGB, got shape {tuple(image.shape)}")
    problem = size_problem(image.shape[1], image.shape[2], crop, multiple)
    if problem:
        raise CFMError(f"evaluation image {problem}; use larger images or a smaller --crop")
    if crop:
        image = centre_crop(image, crop, crop)
    h, w = image.shape[-2:]
    return centre_crop(image, h - h % multiple, w - w % multiple)


def downsample(hr: torch.Tensor, factor: int, kernel: str = "box") -> torch.Tensor:
    """(3, H, W) → (3, H/f, W/f) with one of :data:`cfm_core.upsample.DOWNSAMPLE_KERNELS`, clamped to [0, 1]."""
    return make_low_res(hr[None].float(), factor, kernel)[0].clamp(0, 1)


def baseline_upscale(lr: torch.Tensor, factor: int, mode: str) -> torch.Tensor:
    """(B, 3, h, w) → (B, 3, f·h, f·w) with a plain resize, clamped (bicubic overshoots)."""
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(lr, scale_factor=factor, mode=mode, **kwargs).clamp(0, 1)


# ------------------------------------------------------------------------------------------------ evaluation

def _settings(model: CFMModel, settings: Sequence[Setting | tuple]) -> list[Setting]:
    """Resolve defaults, fold regression models (one Euler step whatever is asked) and drop duplicates."""
    cfg = model.config
    out = []
    for s in settings or [Setting()]:
        s = s if isinstance(s, Setting) else Setting(*s)
        solver, steps = cfg.solve_plan(s.solver, s.steps or None)
        if solver not in SOLVERS:
            raise CFMError(f"solver={solver!r} is unknown; use one of {sorted(SOLVERS)}")
        if Setting(solver, steps) not in out:
            out.append(Setting(solver, steps))
    return out


def _timed(fn: Callable[[], tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, int, float]:
    start = time.perf_counter()
    image, nfe = fn()
    if image.device.type == "cuda":
        torch.cuda.synchronize(image.device)
    return image.cpu(), nfe, time.perf_counter() - start


def evaluate_models(images: Sequence[torch.Tensor], models: Sequence[ModelEntry] = (), *,
                    factor: int | None = None, kernels: str | Sequence[str] = DEFAULT_KERNELS,
                    crop: int | None = None, seed: int = 0, baselines: Sequence[str] = ("bicubic", "bilinear"),
                    degradation: Degradation | None = None, space=None, device: str | torch.device = "cpu",
                    tile: int | None = None, swd_patches: int = SWD_PATCHES,
                    noise_step: int | Sequence[int] | None = None,
                    log: Callable[[str], None] | None = None) -> list[Row]:
    """Evaluate baselines and models on high-res (3, H, W) images in [0, 1] (see the module docstring).

    ``models``: (label, model, settings) with settings a list of :class:`Setting` or (solver, steps) tuples.
    ``kernels``: how the low-res inputs are made; every method is scored per kernel, then (with several) a
    :data:`MEAN` row per method averages them. ``space``: the latent space for VAE models (weights-free spaces are
    built from the model's config). ``noise_step``: noise-augmentation step(s) for every model (default: each
    model's own); several give one row per step.
    """
    if not images:
        raise CFMError("no images to evaluate; pass a folder or files of high-res images")
    factors = {m.config.factor for _, m, _ in models}
    if len(factors) > 1 or (factor is not None and factors and factors != {factor}):
        raise CFMError(f"models upscale by {sorted(factors)} but the evaluation uses factor {factor}; evaluate "
                       "models of one factor at a time")
    factor = factor or (factors.pop() if factors else 2)
    bad = [b for b in baselines if b not in BASELINES]
    if bad:
        raise CFMError(f"baseline {bad[0]!r} is unknown; use some of {BASELINES}")
    log = log or (lambda message: None)
    multiple = crop_multiple([m for _, m, _ in models], factor)
    kernels = parse_kernels(kernels)
    noise_steps = list(noise_step) if isinstance(noise_step, Sequence) else [noise_step]
    hrs = [prepare_high_res(img.float().cpu(), multiple, crop) for img in images]
    levels = pyramid_levels(hrs, MIN_SIDE)
    swd_args = {"levels": levels, "seed": seed, "patches_per_image": swd_patches}
    reference = [image_descriptors(hr, i, **swd_args) for i, hr in enumerate(hrs)]
    rows = [_floor_row(hrs, reference, swd_args, seed, log)]

    def score(method: str, kind: str, setting: Setting, run: Callable[[int, torch.Tensor], tuple], lrs,
              kernel: str, noise: int | None = None) -> Row:
        psnrs, ssims, descriptors, nfes, seconds = [], [], [], [], []
        for i, (hr, lr) in enumerate(zip(hrs, lrs)):
            sr, nfe, sec = _timed(lambda i=i, lr=lr: run(i, lr[None].to(device)))
            sr = sr[0].float()
            psnrs.append(psnr(sr, hr))
            ssims.append(ssim(sr, hr))
            descriptors.append(image_descriptors(sr, i, **swd_args))
            nfes.append(nfe)
            seconds.append(sec)
        result = swd_from_descriptors(reference, descriptors, seed=seed)
        n = len(hrs)
        row = Row(method, kind, setting.solver, setting.steps, sum(nfes) / n, sum(psnrs) / n, sum(ssims) / n,
                  result.average, result.levels, sum(seconds) / n, n, kernel, noise)
        log(f"[{kernel}] {row.label}: PSNR {row.psnr:.2f} dB, SSIM {row.ssim:.4f}, SWD {row.swd:.2f}, "
            f"{row.seconds_per_image:.3f} s/image")
        return row

    from ..pipeline import upscale_image

    per_kernel: list[Row] = []
    warmed = set()
    for kernel in kernels:
        lrs = [downsample(hr, factor, kernel) for hr in hrs]
        if degradation is not None and not degradation.is_identity:
            lrs = [degradation.apply(lr, torch.Generator().manual_seed(mix64(seed, i))) for i, lr in enumerate(lrs)]
        per_kernel += [score(mode, "baseline", Setting(), lambda i, lr, mode=mode: (baseline_upscale(lr, factor, mode),
                                                                                    0), lrs, kernel)
                       for mode in baselines]
        for label, model, settings in models:
            model = model.to(device)
            for noise in noise_steps:
                noise = model.config.noise_step if noise is None else noise

                def run_model(i: int, lr: torch.Tensor, s: Setting, model=model, noise=noise):
                    out, result = upscale_image(model, lr, space, solver=s.solver, steps=s.steps, seed=seed,
                                                batch_indices=[i], tile=tile, noise_step=noise)
                    return out, result.nfe

                if label not in warmed:  # lazy initialisation is not upscaling time
                    run_model(0, lrs[0][None].to(device), Setting("euler", 1))
                    warmed.add(label)
                for s in _settings(model, settings):
                    per_kernel.append(score(label, "model", s, lambda i, lr, s=s, run=run_model: run(i, lr, s), lrs,
                                            kernel, noise))
    return rows + per_kernel + (mean_rows(per_kernel) if len(kernels) > 1 else [])


def mean_rows(rows: Sequence[Row]) -> list[Row]:
    """One :data:`MEAN` row per method (same method, solver, steps and noise step): the average over the kernels."""
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        groups.setdefault((r.method, r.kind, r.solver, r.steps, r.noise_step), []).append(r)
    out = []
    for (method, kind, solver, steps, noise), group in groups.items():
        n = len(group)

        def avg(name: str, group=group, n=n) -> float:
            return sum(getattr(r, name) for r in group) / n

        levels = [sum(values) / n for values in zip(*(r.swd_levels for r in group))]
        out.append(Row(method, kind, solver, steps, avg("nfe"), avg("psnr"), avg("ssim"), avg("swd"), levels,
                       avg("seconds_per_image"), group[0].images, MEAN, noise))
    return out


def _floor_row(hrs: list[torch.Tensor], reference: list, swd_args: dict, seed: int, log) -> Row:
    """SWD of the high-res images against themselves sampled at other positions: what sampling noise alone gives."""
    other = [image_descriptors(hr, i, **(swd_args | {"seed": mix64(seed, 0x5F1)})) for i, hr in enumerate(hrs)]
    result = swd_from_descriptors(reference, other, seed=seed)
    log(f"SWD sampling floor ({FLOOR}): {result.average:.2f}")
    return Row(FLOOR, "floor", None, None, 0.0, math.nan, math.nan, result.average, result.levels, 0.0, len(hrs))


# ------------------------------------------------------------------------------------------------ reporting

def format_table(rows: Sequence[Row]) -> str:
    """A markdown table, one line per method."""
    lines = [f"| low-res made by | method | solver | steps | noise step | NFE | "
             f"{' | '.join(title for _, title in METRICS)} | s/image |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        solver, steps = (r.solver, str(r.steps)) if r.kind == "model" else ("—", "—")
        noise = "—" if r.noise_step is None else str(r.noise_step)
        if r.kind == "floor":
            lines.append(f"| — | *{r.method}* | — | — | — | — | — | — | *{r.swd:.2f}* | — |")
            continue
        kernel = f"**{r.kernel}**" if r.kernel == MEAN else r.kernel
        lines.append(f"| {kernel} | {r.method} | {solver} | {steps} | {noise} | {r.nfe:g} | {r.psnr:.2f} | "
                     f"{r.ssim:.4f} | {r.swd:.2f} | {r.seconds_per_image:.4f} |")
    return "\n".join(lines)


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "inf" / "nan": strict JSON has no infinities
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: str, rows: Sequence[Row], settings: dict) -> None:
    """``{"settings": ..., "rows": [...]}``, written atomically."""
    from ..checkpoint import atomic_write

    payload = _json_safe({"format": "cfm-boost-evaluation", "version": 1, "settings": settings,
                          "rows": [asdict(r) | {"label": r.label} for r in rows]})

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2, allow_nan=False)
            fh.write("\n")

    atomic_write(path, write)


def plot_rows(rows: Sequence[Row], folder: str) -> list[str]:
    """``metrics_vs_nfe.png`` and ``metrics_vs_time.png`` in ``folder``: one line per model × solver × noise step over
    steps, baselines as dashed lines (NFE plot) or points (time plot); with several kernels, their means. Returns the
    written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..checkpoint import atomic_write

    if any(r.kernel == MEAN for r in rows):
        rows = [r for r in rows if r.kernel in (MEAN, "")]
    models: dict[tuple[str, str | None, int | None], list[Row]] = {}
    for r in rows:
        if r.kind == "model":
            models.setdefault((r.method, r.solver, r.noise_step), []).append(r)
    baselines = [r for r in rows if r.kind == "baseline"]
    floors = [r for r in rows if r.kind == "floor"]
    paths = []
    for x_name, x_label, x_of in (("nfe", "network evaluations per image (NFE)", lambda r: r.nfe),
                                  ("time", "seconds per image", lambda r: r.seconds_per_image)):
        fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 4), constrained_layout=True)
        for ax, (metric, title) in zip(axes, METRICS):
            for (method, solver, noise), group in models.items():
                group = sorted(group, key=x_of)
                ax.plot([x_of(r) for r in group], [getattr(r, metric) for r in group], "o-",
                        label=f"{method} ({solver}, noise {noise})")
            for i, b in enumerate(baselines):
                colour = f"C{(len(models) + i) % 10}"
                if x_name == "nfe":
                    ax.axhline(getattr(b, metric), color=colour, linestyle="--", label=b.method)
                else:
                    ax.plot([x_of(b)], [getattr(b, metric)], "s", color=colour, label=b.method)
            if metric == "swd" and floors:
                floor = ax.axhline(floors[0].swd, color="black", linestyle=":", label="sampling floor")
                ax.legend(handles=[floor], fontsize="small")
            if x_name == "time" and all(x_of(r) > 0 for r in rows if r.kind != "floor"):
                ax.set_xscale("log")
            ax.set_xlabel(x_label)
            ax.set_title(title)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize="small")
        path = os.path.join(folder, f"metrics_vs_{x_name}.png")
        atomic_write(path, lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=100))
        plt.close(fig)
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------------------------ CLI

def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="held-out high-res images: files, folders or glob patterns")
    parser.add_argument("--model", action="append", default=[], metavar="PATH",
                        help="a CFM .safetensors checkpoint (repeat for several)")
    parser.add_argument("--solvers", "--solver", nargs="+", choices=sorted(SOLVERS), default=None,
                        help="ODE solvers to try for every model (default: each model's own)")
    parser.add_argument("--steps", nargs="+", type=int, default=None,
                        help="integration steps to try, e.g. 1 2 4 8 (default: each model's own)")
    parser.add_argument("--factor", type=int, choices=(2, 4), default=None,
                        help="upscale factor (default: the models', else 2)")
    parser.add_argument("--crop", type=int, default=None, help="centre-crop every high-res image to N×N first")
    parser.add_argument("--downsample", nargs="+", default=list(DEFAULT_KERNELS), metavar="KERNEL",
                        help="how the low-res inputs are made: one or more of "
                             f"{', '.join(DOWNSAMPLE_KERNELS)}; several are reported each and as their mean "
                             "(default box, the paper's: the official code's non-antialiased bilinear)")
    parser.add_argument("--degrade", default=None, metavar="SPEC",
                        help="degrade the low-res inputs, e.g. 'blur=0.2-1.5,noise=0-0.03,jpeg=60-95,resize=random'")
    parser.add_argument("--baselines", nargs="*", choices=BASELINES, default=["bicubic", "bilinear"],
                        help="plain resizes to compare against (default: bicubic bilinear)")
    parser.add_argument("--seed", type=int, default=0, help="noise, SWD patches and degradations (default 0)")
    parser.add_argument("--device", default="cpu", help="torch device for the models (default cpu)")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    parser.add_argument("--vae", default=None, help="VAE (file or diffusers folder) for VAE-latent models")
    parser.add_argument("--tile", type=int, default=None, help="tile the velocity network (latent pixels)")
    parser.add_argument("--noise-step", type=int, nargs="+", default=None, metavar="N",
                        help="noise-augmentation step(s) in [0, 999] for every model, one row per step (default: "
                             "each model's own)")
    parser.add_argument("--max-images", type=int, default=None, help="use only the first N images (sorted)")
    parser.add_argument("--swd-patches", type=int, default=SWD_PATCHES,
                        help=f"7×7 patches per image and pyramid level (default {SWD_PATCHES}; fewer is faster but "
                             "noisier: compare against the sampling-floor row)")
    parser.add_argument("--out-json", default=None, help="write the results here (atomically)")
    parser.add_argument("--plots", default=None, metavar="DIR", help="write metric-vs-NFE/time plots here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out-json file or plots")


def load_eval_images(inputs: Sequence[str], crop: int | None, multiple: int, max_images: int | None = None,
                     warn: Callable[[str], None] = print) -> tuple[list[torch.Tensor], list[str], dict]:
    """Read the images, skipping (with a warning) unreadable ones and ones too small; returns images, their paths
    and the skip counts. Raises if nothing usable is left."""
    from ..images import list_images, load_image

    paths = list_images(list(inputs))
    if not paths:
        raise CFMError(f"no images found in {', '.join(inputs)}; pass a folder or files of .png/.jpg images")
    if max_images is not None:
        if max_images < 1:
            raise CFMError(f"max_images={max_images} must be ≥ 1 (None for every image)")
        paths = paths[:max_images]
    images, kept, skipped = [], [], {"unreadable": 0, "too_small": 0}
    for path in paths:
        try:
            rgb = load_image(path, keep_alpha=False).rgb
        except CFMError as exc:
            warn(f"warning: skipping {exc}")
            skipped["unreadable"] += 1
            continue
        problem = size_problem(rgb.shape[1], rgb.shape[2], crop, multiple)
        if problem:
            warn(f"warning: skipping {path}: {problem}")
            skipped["too_small"] += 1
            continue
        images.append(rgb)
        kept.append(path)
    if not images:
        raise CFMError(f"none of the {len(paths)} images is usable ({skipped['unreadable']} unreadable, "
                       f"{skipped['too_small']} smaller than {max(crop or 0, multiple, MIN_SIDE)} px); "
                       "pass other images or a smaller --crop")
    return images, kept, skipped


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import load_model

    if args.steps is not None and any(s < 1 for s in args.steps):
        raise CFMError(f"--steps {args.steps} must all be positive integers")
    if args.crop is not None and args.crop < MIN_SIDE:
        raise CFMError(f"--crop {args.crop} is too small; use at least {MIN_SIDE}")
    if not 1 <= args.swd_patches <= 8 * SWD_PATCHES:  # memory: 0.6 kB per patch, image, level and method
        raise CFMError(f"--swd-patches {args.swd_patches} must lie in [1, {8 * SWD_PATCHES}]")
    check_outputs(args)
    for n in args.noise_step or []:
        if not 0 <= n <= 999:
            raise CFMError(f"--noise-step {n} is outside [0, 999]; omit it to use each model's own")
    kernels = parse_kernels(args.downsample)
    degradation = Degradation.parse(args.degrade) if args.degrade else None
    dtype = getattr(torch, args.dtype)
    models = [(path, load_model(path, args.device, dtype)) for path in args.model]
    labels = _labels([path for path, _ in models])
    settings = [Setting(solver, steps) for solver in (args.solvers or [None]) for steps in (args.steps or [None])]
    factor = args.factor or (models[0][1].config.factor if models else 2)
    space = None
    if args.vae:
        from ..autoencoders import DiffusersVAE, space_from_spec

        latent = next((m.config.latent for _, m in models if m.config.latent.kind == "vae"), None)
        # a latent model's own space (family, scale, fingerprint checked); without one the scale cancels out
        space = (space_from_spec(latent, args.vae, device=args.device) if latent is not None
                 else DiffusersVAE.load(args.vae, scale_factor=1.0, device=args.device))
    multiple = crop_multiple([m for _, m in models], factor)

    def warn(message: str) -> None:
        print(message, file=sys.stderr)

    images, paths, skipped = load_eval_images(args.inputs, args.crop, multiple, args.max_images, warn)
    rows = evaluate_models(images, [(label, m, settings) for label, (_, m) in zip(labels, models)], factor=factor,
                           kernels=kernels, crop=args.crop, seed=args.seed,
                           baselines=args.baselines, degradation=degradation, space=space, device=args.device,
                           tile=args.tile, swd_patches=args.swd_patches, noise_step=args.noise_step, log=warn)
    print(format_table(rows))
    if args.out_json:
        write_json(args.out_json, rows, {
            "images": paths, "skipped": skipped, "factor": factor, "crop": args.crop, "multiple": multiple,
            "downsample": list(kernels),
            "degrade": degradation.to_spec() if degradation else None, "seed": args.seed,
            "noise_step": args.noise_step,
            "models": {label: path for label, (path, _) in zip(labels, models)}, "device": args.device,
            "dtype": args.dtype, "swd": {"scale": SWD_SCALE, "patches_per_image": args.swd_patches,
                                         "patch_size": 7, "projections": 128, "repeats": 4, "min_resolution": MIN_SIDE},
        })
        warn(f"wrote {args.out_json}")
    if args.plots:
        for path in plot_rows(rows, args.plots):
            warn(f"wrote {path}")
    return 0


PLOT_FILES = ("metrics_vs_nfe.png", "metrics_vs_time.png")


def check_outputs(args: argparse.Namespace) -> None:
    """Flags and output paths checked before the work (an evaluation can take hours), not when writing."""
    from ..checkpoint import check_destination, check_writable
    from ..devices import resolve_device

    if args.max_images is not None and args.max_images < 1:
        raise CFMError(f"--max-images {args.max_images} must be ≥ 1 (omit it to use every image)")
    if args.tile is not None and args.tile < 0:
        raise CFMError(f"--tile {args.tile} must be ≥ 0")
    resolve_device(args.device)
    if args.out_json:
        check_destination(args.out_json, overwrite=args.overwrite, inputs=tuple(args.model), what="--out-json")
        check_writable(os.path.dirname(os.path.abspath(args.out_json)), "--out-json")
    if args.plots:
        if os.path.exists(args.plots) and not os.path.isdir(args.plots):
            raise CFMError(f"--plots {args.plots!r} is a file; pass a folder for the plots")
        for name in PLOT_FILES:
            check_destination(os.path.join(args.plots, name), overwrite=args.overwrite, what="plot")
        check_writable(os.path.abspath(args.plots), "--plots")


def _labels(paths: Sequence[str]) -> list[str]:
    """Short unique labels: file names without extension, or the full paths when two names collide."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    return [s if stems.count(s) == 1 else p for s, p in zip(stems, paths)]
