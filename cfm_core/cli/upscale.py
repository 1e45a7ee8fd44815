"""``python -m cfm_core upscale INPUT... -o OUTPUT``: upscale images 2× or 4× with a CFM model.

What happens to each image, in order:

1. Load as 8-bit RGB (cfm_core.images.load_image), upright per its EXIF orientation: grey and palette images
   become RGB (the output is RGB); CMYK, 16-bit and float images are refused with a one-line error rather than
   silently converted.
2. Alpha: kept by default: the alpha channel is upscaled with bicubic interpolation and reattached (PNG/WebP).
   A fully opaque alpha channel is dropped (nothing is lost). --drop-alpha discards it; asking for JPEG with
   real transparency is an error.
3. Sizes that are not a multiple of the model's latent downscale (2 for the bundled model) are reflection-padded
   to the multiple and the output is cropped back, so the output is always exactly scale× the input.
4. --scale 4 with a 2× model runs the same model twice (stage k uses seed + k).

With one input a run that fails exits 2; with many, every failure is reported, the others are still written
and the exit code is 1. Files are written atomically: an interrupted run leaves no partial or temporary file.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..devices import DTYPES, resolve_device, resolve_dtype
from ..errors import CFMError

FORMATS = ("png", "jpg", "webp")
MAX_THREADS = 1024  # torch would try to start them all
MAX_OUTPUT_SIDE = 16384  # a 16k × 16k RGB output alone is 3 GB as float32; refuse beyond it
AUTO_TILE = 512  # default --tile: latents up to this per side run whole, larger ones in tiles of at most this
# image formats a user may type after -o that cannot be written (else "-o out.gif" would make a folder out.gif/)
UNWRITABLE_EXTENSIONS = (".gif", ".apng", ".avif", ".heic", ".heif", ".jxl", ".jp2", ".ico", ".tga", ".ppm",
                         ".pgm", ".pbm", ".pnm", ".exr", ".hdr", ".dds", ".psd", ".svg", ".pdf", ".raw", ".dng")


@dataclass(frozen=True)
class Job:
    """One input image and the files it produces."""

    source: str
    target: str
    compare: str | None = None


@dataclass(frozen=True)
class Settings:
    """The upscaling knobs shared by every image of a run."""

    stages: int
    solver: str | None
    steps: int | None
    seed: int
    noise_step: int | None
    tile: int | None  # None = automatic
    overlap: int
    drop_alpha: bool
    overwrite: bool = True  # False: never replace a file that appeared while the run was working
    contrast_norm: bool = True  # the model's contrast normalisation (pixel models that have one)


@dataclass(frozen=True)
class Upscaled:
    rgb: torch.Tensor  # (3, H·s, W·s) in [0, 1]
    alpha: torch.Tensor | None  # (1, H·s, W·s) in [0, 1], or None
    low_rgb: torch.Tensor  # the input, for --compare
    nfe: int


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 1)[1]
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (searched recursively) "
                        "or glob patterns (quote them)")
    parser.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                        help="output file (one input) or folder (several inputs, an existing folder, or a path "
                             "ending in '/'); outputs are named <stem>_x<scale>.<format>")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="output format (default: the extension of -o, else png)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--skip-existing", action="store_true",
                        help="skip inputs whose output already exists (resume a batch)")
    parser.add_argument("--scale", type=int, choices=(2, 4), default=None,
                        help="2 or 4 (4 = two 2× stages of a 2× model); default: the model's factor")
    parser.add_argument("--model", default=None, metavar="PATH",
                        help="a CFM .safetensors model (default: the bundled pixel-space 2× model)")
    parser.add_argument("--vae", default=None, metavar="PATH",
                        help="the VAE of a model trained in a VAE latent space: a VAE .safetensors, a diffusers "
                             "folder or a full model checkpoint with that VAE inside")
    parser.add_argument("--solver", default=None, help="ODE solver: euler, midpoint, heun, rk4, dopri5 "
                        "(default: the model's)")
    parser.add_argument("--steps", type=int, default=None, help="integration steps (default: the model's)")
    parser.add_argument("--seed", type=int, default=0, help="noise-augmentation seed (default 0); the same seed "
                        "gives the same output")
    parser.add_argument("--noise-step", type=int, default=None, metavar="N",
                        help="noise-augmentation step in [0, 999] (default: the model's); a detail-adaptive model "
                             "uses it where the image has detail and less where it is flat (`info` shows noise_detail)")
    parser.add_argument("--tile", type=int, default=None, metavar="N",
                        help=f"latent tile size (bounded memory, faster attention on big images); 0 = off "
                             f"(default: off up to {AUTO_TILE} latent pixels per side, tiles of at most {AUTO_TILE} "
                             "above)")
    parser.add_argument("--overlap", type=int, default=8, metavar="N", help="tile overlap in latent pixels")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto",
                        help="auto = cuda if available, else cpu")
    parser.add_argument("--dtype", choices=("auto", *DTYPES), default="auto",
                        help="auto = bf16 on CUDA GPUs that run it (else fp16), bf16 on CPUs with AVX512-BF16/AMX "
                             "(else fp32), fp32 on MPS; a VAE stays fp32 unless bf16 is asked for")
    parser.add_argument("--no-contrast-norm", action="store_true",
                        help="switch off the model's contrast normalisation (flat images are solved at the model's "
                             "reference contrast and faded back; pixel models that carry one, like the bundled)")
    parser.add_argument("--drop-alpha", action="store_true", help="discard the alpha channel of RGBA inputs")
    parser.add_argument("--compare", action="store_true",
                        help="also write <stem>_x<scale>_compare.<format>: bicubic | CFM side by side")
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="CPU threads for torch (default: torch's choice, one per core)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-image lines (errors only)")


def run(args: argparse.Namespace) -> int:
    from ..bundled import require_bundled_model
    from ..checkpoint import check_writable, read_config
    from ..images import list_images

    check_arguments(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    model_path = args.model or require_bundled_model()
    if os.path.isdir(model_path):
        raise CFMError(f"--model {model_path!r} is a folder; pass the CFM .safetensors file inside it")
    if not os.path.isfile(model_path):
        raise CFMError(f"--model {model_path!r} does not exist; pass a CFM .safetensors file (train one with "
                       "`python -m cfm_core train --help`) or leave --model out to use the bundled model")
    config = read_config(model_path)  # cheap: no weights; enough to name the outputs and check everything
    scale = args.scale or config.factor
    if scale % config.factor:
        raise CFMError(f"--scale {scale} is not a multiple of this model's factor {config.factor}; "
                       f"use --scale {config.factor}")
    sources = list_images(args.inputs)
    if not sources:
        raise CFMError(f"no images (.png, .jpg, .webp, ...) found in {' '.join(args.inputs)}")
    jobs = plan_jobs(sources, args.output, args.format, scale, args.compare)
    jobs = check_existing(jobs, args.overwrite, args.skip_existing, args.quiet)
    for folder in sorted({os.path.dirname(os.path.abspath(p)) for j in jobs for p in (j.target, j.compare) if p}):
        check_writable(folder)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    settings = Settings(stages=scale // config.factor, solver=args.solver, steps=args.steps, seed=args.seed,
                        noise_step=args.noise_step, tile=args.tile, overlap=args.overlap,
                        drop_alpha=args.drop_alpha, overwrite=args.overwrite,
                        contrast_norm=not args.no_contrast_norm)
    caveat = config.solver_caveat(config.solve_plan(args.solver, args.steps)[0])
    if caveat and not args.quiet:
        print(f"warning: {caveat}", file=sys.stderr)
    with torch.inference_mode():
        model, space = load(model_path, args.vae, device, dtype, vae_bf16=args.dtype == "bf16")
        return process(jobs, model, space, settings, quiet=args.quiet)


# ------------------------------------------------------------------------------------------- arguments, planning

def check_arguments(args: argparse.Namespace) -> None:
    """One-line errors for bad flag values, before anything is loaded."""
    from ..augment import alpha_bar
    from ..solvers import check_solver, check_steps

    if args.solver is not None:
        check_solver(args.solver)
    if args.steps is not None:
        check_steps(args.steps)
    if args.noise_step is not None:
        alpha_bar(args.noise_step)
    if not 0 <= args.threads <= MAX_THREADS:
        raise CFMError(f"--threads {args.threads} must lie in [1, {MAX_THREADS}] (or 0 for torch's default)")
    if args.tile is not None and args.tile < 0:
        raise CFMError(f"--tile {args.tile} must be ≥ 0 (0 turns tiling off)")
    if args.overlap < 0 or (args.tile and args.overlap >= args.tile):
        raise CFMError(f"--overlap {args.overlap} must be ≥ 0 and smaller than --tile")
    if not args.output.strip():
        raise CFMError("-o is empty; pass an output file (one input) or folder")
    if args.overwrite and args.skip_existing:
        raise CFMError("--overwrite and --skip-existing contradict each other; pass one")


def _image_extension(path: str) -> str | None:
    from ..images import IMAGE_EXTENSIONS

    ext = os.path.splitext(path)[1].lower()
    return ext if ext in IMAGE_EXTENSIONS else None


def plan_jobs(sources: list[str], output: str, fmt: str | None, scale: int, compare: bool) -> list[Job]:
    """Map inputs to output paths.

    ``-o`` is a file when there is one input and it has an image extension and is not an existing folder or a
    path ending in '/'; otherwise it is a folder, and the inputs' sub-folders (relative to their common
    folder) are mirrored in it.
    """
    ext = os.path.splitext(output)[1].lower()
    if ext in UNWRITABLE_EXTENSIONS and not os.path.isdir(output):
        raise CFMError(f"-o {output!r}: {ext} output is not supported; write .png, .jpg or .webp (or pass a folder)")
    as_folder = (output.endswith(("/", os.sep)) or os.path.isdir(output) or len(sources) > 1
                 or _image_extension(output) is None)
    if not as_folder:
        ext = _image_extension(output)
        if fmt is not None and ext.lstrip(".").replace("jpeg", "jpg") != fmt:
            raise CFMError(f"-o {output!r} has extension {ext} but --format is {fmt}; make them agree")
        jobs = [Job(sources[0], output, _suffixed(output, "_compare") if compare else None)]
    else:
        if len(sources) > 1 and _image_extension(output) and not os.path.isdir(output):
            raise CFMError(f"-o {output!r} looks like a file but {len(sources)} images were found; "
                           "pass a folder for the outputs")
        jobs = _folder_jobs(sources, output, "." + (fmt or "png"), scale, compare)
    inputs = {os.path.abspath(s) for s in sources}
    for job in jobs:
        for path in (job.target, job.compare):
            if path and os.path.abspath(path) in inputs:
                raise CFMError(f"output {path!r} would replace an input image; choose another -o")
    return jobs


def _folder_jobs(sources: list[str], folder: str, ext: str, scale: int, compare: bool) -> list[Job]:
    base = os.path.commonpath([os.path.dirname(os.path.abspath(s)) for s in sources])
    names: dict[str, list[str]] = {}
    for source in sources:
        sub = os.path.relpath(os.path.dirname(os.path.abspath(source)), base)
        stem = os.path.splitext(os.path.basename(source))[0]
        names.setdefault(os.path.normpath(os.path.join(folder, sub, stem)), []).append(source)
    jobs = []
    for stem_path, group in names.items():
        for source in group:  # cat.png and cat.jpg in one folder → cat_png_x2.png and cat_jpg_x2.png
            tag = "_" + os.path.splitext(source)[1].lstrip(".").lower() if len(group) > 1 else ""
            target = f"{stem_path}{tag}_x{scale}{ext}"
            jobs.append(Job(source, target, _suffixed(target, "_compare") if compare else None))
    return sorted(jobs, key=lambda j: j.source)


def _suffixed(path: str, suffix: str) -> str:
    root, ext = os.path.splitext(path)
    return root + suffix + ext


def check_existing(jobs: list[Job], overwrite: bool, skip_existing: bool, quiet: bool) -> list[Job]:
    """Refuse to replace existing files unless --overwrite; with --skip-existing drop those jobs instead."""
    if overwrite:
        return jobs
    existing = [j for j in jobs if any(p and os.path.exists(p) for p in (j.target, j.compare))]
    if existing and skip_existing:
        if not quiet:
            print(f"skipping {len(existing)} image(s) whose output exists", file=sys.stderr)
        return [j for j in jobs if j not in existing]
    if existing:
        first = next(p for p in (existing[0].target, existing[0].compare) if p and os.path.exists(p))
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise CFMError(f"output {first!r} already exists{more}; pass --overwrite to replace it or --skip-existing")
    return jobs


# ------------------------------------------------------------------------------------------- device, model

def load(model_path: str, vae_path: str | None, device: torch.device, dtype: torch.dtype, *,
         vae_bf16: bool | None = None):
    """The model on ``device`` in ``dtype`` and its latent space. A VAE stays fp32 unless ``vae_bf16`` (default:
    the model runs in bf16): fp16 VAEs can overflow to NaN."""
    from ..autoencoders import space_from_spec
    from ..checkpoint import load_model

    model = load_model(model_path, device=device, dtype=dtype)
    spec = model.config.latent
    if vae_path is not None and spec.kind != "vae":
        raise CFMError(f"--vae: this model works in the {spec.name!r} space and needs no VAE; drop --vae")
    vae_bf16 = dtype == torch.bfloat16 if vae_bf16 is None else vae_bf16
    vae_dtype = torch.bfloat16 if vae_bf16 else torch.float32
    extra = {"device": device, "dtype": vae_dtype} if spec.kind == "vae" else {}
    return model, space_from_spec(spec, vae_path, **extra)


# ------------------------------------------------------------------------------------------- one image

def auto_tile(latent_side: int, overlap: int, stride: int, limit: int = AUTO_TILE) -> int:
    """The default tile for a latent of ``latent_side``: 0 (whole) up to ``limit``, else the smallest tile that
    covers the side with as many ≤ ``limit`` tiles as needed, so little work is repeated in the overlaps.

    Why tile at all: memory is bounded by one tile, and self-attention cost grows with the square of the pixel
    count, so nine 348² tiles of a 1024² latent cost a fraction of one global attention."""
    if latent_side <= limit:
        return 0
    n = -(-(latent_side - overlap) // (limit - overlap))
    tile = -(-(latent_side + (n - 1) * overlap) // n)
    return -(-tile // stride) * stride  # whole network strides (TiledVelocity would round down)


def upscale_rgb(model, space, rgb: torch.Tensor, settings: Settings,
                callback: Callable | None = None) -> tuple[torch.Tensor, int]:
    """(3, H, W) → (3, s·H, s·W) through ``settings.stages`` stages of the model; returns the image and NFE."""
    from ..pipeline import pad_to_multiple, upscale_image

    factor, multiple = model.config.factor, model.config.latent.downscale
    x, nfe = rgb[None].to(model.device), 0
    for stage in range(settings.stages):
        h, w = x.shape[-2:]
        padded = pad_to_multiple(x, multiple)
        tile = settings.tile
        if tile is None:
            side = max(padded.shape[-2:]) * factor // multiple
            tile = auto_tile(side, settings.overlap, model.config.unet.stride)
        out, result = upscale_image(model, padded, space, solver=settings.solver, steps=settings.steps,
                                    seed=settings.seed + stage, noise_step=settings.noise_step, tile=tile,
                                    contrast_norm=settings.contrast_norm,
                                    overlap=settings.overlap, callback=callback)
        x, nfe = out[..., :h * factor, :w * factor].to(model.device), nfe + result.nfe
    return x[0].cpu(), nfe


def upscale_alpha(alpha: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic-resized alpha, clamped to [0, 1] (bicubic overshoots at hard edges)."""
    return F.interpolate(alpha[None].float(), size=size, mode="bicubic", align_corners=False)[0].clamp(0, 1)


def upscale_file(model, space, job: Job, settings: Settings, scale: int, fmt: str,
                 callback: Callable | None = None) -> Upscaled:
    from ..images import image_size, load_image

    w, h = image_size(job.source)  # from the header: a too-big image is refused before it is decoded
    if max(h, w) * scale > MAX_OUTPUT_SIDE:
        fix = "crop or downscale the image" + (", or use --scale 2" if scale > 2 else "")
        raise CFMError(f"{job.source}: the output would be {w * scale}×{h * scale}, over {MAX_OUTPUT_SIDE} px per "
                       f"side; {fix}")
    loaded = load_image(job.source, keep_alpha=not settings.drop_alpha)
    h, w = loaded.rgb.shape[-2:]
    alpha = loaded.alpha
    if alpha is not None and bool((alpha >= 1).all()):
        alpha = None  # fully opaque: dropping it loses nothing
    if alpha is not None and fmt in (".jpg", ".jpeg"):
        raise CFMError(f"{job.source} has transparency but JPEG cannot store it; use --format png/webp "
                       "or pass --drop-alpha")
    rgb, nfe = upscale_rgb(model, space, loaded.rgb, settings, callback)
    if alpha is not None:
        alpha = upscale_alpha(alpha, (h * scale, w * scale))
    return Upscaled(rgb=rgb, alpha=alpha, low_rgb=loaded.rgb, nfe=nfe)


def comparison(low_rgb: torch.Tensor, result: torch.Tensor, gap: int = 8) -> torch.Tensor:
    """Bicubic | CFM side by side under a label strip, as one (3, H', W') image in [0, 1]."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    from ..images import to_uint8

    h, w = result.shape[-2:]
    bicubic = F.interpolate(low_rgb[None], size=(h, w), mode="bicubic", align_corners=False)[0].clamp(0, 1)
    strip = max(16, min(48, h // 16))
    canvas = Image.new("RGB", (2 * w + gap, h + strip), (24, 24, 24))
    canvas.paste(Image.fromarray(to_uint8(bicubic)), (0, strip))
    canvas.paste(Image.fromarray(to_uint8(result)), (w + gap, strip))
    draw = ImageDraw.Draw(canvas)
    try:
        font = ImageFont.load_default(size=int(strip * 0.7))
    except TypeError:  # Pillow < 10.1: one fixed-size bitmap font
        font = ImageFont.load_default()
    for x, label in ((0, "bicubic"), (w + gap, "CFM")):
        draw.text((x + 4, strip // 8), label, fill=(235, 235, 235), font=font)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).float() / 255


def save(path: str, rgb: torch.Tensor, alpha: torch.Tensor | None = None, *, overwrite: bool = True) -> None:
    """:func:`cfm_core.images.save_image` (atomic) with OS errors turned into a one-line CFMError."""
    from ..images import save_image

    try:
        save_image(path, rgb, alpha, overwrite=overwrite)
    except OSError as exc:
        raise CFMError(f"cannot write {path!r} ({exc.strerror or exc}); check that the folder is writable") from None


# ------------------------------------------------------------------------------------------- the batch

def _out_of_memory(exc: RuntimeError, source: str) -> CFMError | None:
    """torch's out-of-memory errors (CUDA, MPS, CPU allocator) as a one-line CFMError; None for other errors."""
    from ..devices import is_out_of_memory

    if not is_out_of_memory(exc):
        return None
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # let the next image start from a clean slate
    return CFMError(f"{source}: out of memory; pass --tile 256 (or smaller) to bound memory")


def steps_per_image(model, settings: Settings) -> int | None:
    """Steps the progress bar counts for one image (None for adaptive solvers, whose count is unknown)."""
    from ..solvers import SOLVERS

    solver, steps = model.config.solve_plan(settings.solver, settings.steps or None)
    if SOLVERS[solver][1] == 0:
        return None
    return steps * settings.stages


def process_one(job: Job, model, space, settings: Settings, bar) -> str:
    """Upscale and write one job; returns its summary line. Every failure is a CFMError."""
    start = time.perf_counter()
    fmt = os.path.splitext(job.target)[1].lower()
    try:
        done = upscale_file(model, space, job, settings, settings.stages * model.config.factor, fmt,
                            callback=lambda info: bar.update(1))
    except RuntimeError as exc:
        error = _out_of_memory(exc, job.source)
        if error is None:
            raise
        raise error from None
    save(job.target, done.rgb, done.alpha, overwrite=settings.overwrite)
    if job.compare:
        try:
            save(job.compare, comparison(done.low_rgb, done.rgb), overwrite=settings.overwrite)
        except BaseException:  # e.g. disk full: take the main output back, so a rerun does not find half a job
            os.unlink(job.target)
            raise
    (h, w), (oh, ow) = done.low_rgb.shape[-2:], done.rgb.shape[-2:]
    return f"{job.source}: {w}×{h} → {ow}×{oh}, {done.nfe} NFE, {time.perf_counter() - start:.2f} s → {job.target}"


def process(jobs: list[Job], model, space, settings: Settings, *, quiet: bool = False) -> int:
    """Upscale every job. With one job a failure is raised (exit 2); with many each failure is reported, the
    others still run, and the exit code is 1."""
    from tqdm import tqdm

    if not jobs and not quiet:
        print("nothing to do", file=sys.stderr)
    failures = 0
    total = steps_per_image(model, settings)
    # disable=None: bars only when stderr is a terminal, so logs and pipes get the one-line summaries alone
    with tqdm(jobs, desc="images", unit="img", disable=True if quiet or len(jobs) < 2 else None) as images:
        for job in images:
            with tqdm(total=total, desc=os.path.basename(job.source), unit="step", leave=False,
                      disable=True if quiet else None) as bar:
                try:
                    summary = process_one(job, model, space, settings, bar)
                except CFMError as exc:
                    message = str(exc) if job.source in str(exc) else f"{job.source}: {exc}"
                    if len(jobs) == 1:
                        raise CFMError(message) from None
                    failures += 1
                    tqdm.write(f"error: {message}", file=sys.stderr)
                    continue
            if not quiet:
                tqdm.write(summary)
    if failures:
        print(f"{failures} of {len(jobs)} images failed; the others were written", file=sys.stderr)
        return 1
    return 0
