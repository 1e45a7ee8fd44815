"""Reading and writing images: the one place that knows about files, modes and folders."""
from __future__ import annotations

import contextlib
import fnmatch
import glob
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .errors import CFMError, first_line

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
MAX_PIXELS = 64 * 1024 * 1024  # refuse decompression bombs / images too big to upscale on one machine


@dataclass
class LoadedImage:
    rgb: torch.Tensor  # (3, H, W) float32 in [0, 1]
    alpha: torch.Tensor | None  # (1, H, W) float32 in [0, 1], or None
    path: str


def list_images(inputs: list[str] | str, recursive: bool = True) -> list[str]:
    """Files, folders (searched recursively) and glob patterns → sorted unique image paths.

    Folders are walked without entering a folder twice (a link to itself or to a parent would otherwise loop
    for ever); hidden files and folders (name starting with '.', e.g. an unfinished ``.tmp-*`` write) are skipped,
    as ``glob`` does."""
    inputs = [inputs] if isinstance(inputs, str) else list(inputs)
    found: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            found += [p for p in _walk_files(item, recursive) if p.lower().endswith(IMAGE_EXTENSIONS)]
        elif os.path.isfile(item):
            found.append(item)
        else:
            matches = _glob(item)
            if not matches:
                raise CFMError(f"input {item!r} is neither a file, a folder nor a matching glob pattern")
            found += [p for p in matches if os.path.isfile(p)]
    return sorted(dict.fromkeys(os.path.normpath(p) for p in found))


def _walk_files(folder: str, recursive: bool = True) -> list[str]:
    """Non-hidden regular files under ``folder``, entering each real folder once (links to folders are followed)."""
    files: list[str] = []
    seen: set[str] = set()
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        files += [os.path.join(root, n) for n in sorted(names)  # regular files only: reading a FIFO blocks
                  if not n.startswith(".") and os.path.isfile(os.path.join(root, n))]
    return files


def _glob(pattern: str) -> list[str]:
    """``glob`` for patterns; a ``**`` pattern is matched against a loop-safe walk of its fixed leading folder
    (``glob``'s own ``**`` follows folder links without end)."""
    if "**" not in pattern:
        return glob.glob(pattern)
    parts = pattern.replace(os.sep, "/").split("/")
    fixed = 0
    while fixed < len(parts) - 1 and not glob.has_magic(parts[fixed]):
        fixed += 1
    root = "/".join(parts[:fixed]) or ("/" if pattern.startswith("/") else "")
    if root and not os.path.isdir(root):
        return []
    return [path for path in _walk_files(root or ".")
            if _matches(parts[fixed:], os.path.relpath(path, root or ".").split(os.sep))]


def _matches(parts: list[str], names: list[str]) -> bool:
    """Glob components against path components; ``**`` spans any number of folders, including none."""
    if not parts:
        return not names
    if parts[0] == "**":
        return any(_matches(parts[1:], names[i:]) for i in range(len(names) + 1))
    return bool(names) and fnmatch.fnmatch(names[0], parts[0]) and _matches(parts[1:], names[1:])


def load_image(path: str, *, keep_alpha: bool = True) -> LoadedImage:
    """An RGB image in [0, 1], refusing modes whose conversion would silently lose information."""
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    if os.path.isdir(path):
        raise CFMError(f"{path}: is a folder, not an image; pass the folder itself as an input to use its images")
    try:
        with _no_bomb_warning(), Image.open(path) as opened:  # the size is checked just below
            _check_size_and_frames(path, opened)  # from the header, before decoding anything
            mode = opened.mode
            if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                raise CFMError(f"{path}: colour mode {mode} is not supported; convert the image to RGB first")
            if _more_than_8_bits(opened):  # checked before decoding: Pillow cuts 48-bit RGB to 8 bits silently
                raise CFMError(f"{path}: 16-bit or float images are not supported; save it as 8-bit RGB")
            opened.load()
            im = _upright(opened)
            mode = im.mode
            alpha = None
            if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                alpha = torch.from_numpy(np.asarray(rgba)[..., 3:].copy()).permute(2, 0, 1).float() / 255
                im = rgba
            rgb = np.asarray(im.convert("RGB"))
    except CFMError:
        raise
    except Image.DecompressionBombError:
        raise CFMError(f"{path}: image is larger than {MAX_PIXELS} pixels; downscale it first") from None
    except (UnidentifiedImageError, OSError, ValueError, EOFError) as exc:
        raise CFMError(f"{path}: not a readable image ({first_line(exc)})") from None
    tensor = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255
    return LoadedImage(rgb=tensor, alpha=alpha if keep_alpha else None, path=path)


def image_size(path: str) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with _no_bomb_warning(), Image.open(path) as opened:  # callers check the size
            return opened.size
    except Image.DecompressionBombError:  # Pillow's own limit (twice its MAX_IMAGE_PIXELS), met in Image.open
        raise CFMError(f"{path}: image is larger than {MAX_PIXELS} pixels; downscale it first") from None
    except (UnidentifiedImageError, OSError, ValueError, EOFError) as exc:
        raise CFMError(f"{path}: not a readable image ({first_line(exc)})") from None


@contextlib.contextmanager
def _no_bomb_warning():
    """Pillow warns between 1× and 2× its pixel limit; we refuse such images ourselves, with a clearer message."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def _check_size_and_frames(path: str, im) -> None:
    """Refuse images too big to decode (the header gives the size) and animations, whose other frames would be lost."""
    w, h = im.size
    if w * h > MAX_PIXELS:
        raise CFMError(f"{path}: image is {w}×{h} = {w * h / 1e6:.0f} MP, over the limit of {MAX_PIXELS / 1e6:.0f} MP; "
                       "crop or downscale it first")
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        kind = "a multi-page TIFF" if im.format == "TIFF" else f"an animated {im.format or 'image'}"
        raise CFMError(f"{path}: is {kind} with {frames} frames; only still images are supported — export the "
                       "frame you want as PNG first")


def _more_than_8_bits(im) -> bool:
    """True for samples wider than 8 bits: 16-bit grey/RGB(A) PNG and TIFF, 32-bit int and float images."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F") or im.info.get("bits", 8) > 8:
        return True
    bits = getattr(im, "tag_v2", {}).get(258)  # TIFF BitsPerSample
    if bits and max(bits if isinstance(bits, tuple) else (bits,)) > 8:
        return True
    for tile in im.tile:  # the raw mode Pillow decodes from, e.g. "RGB;16B" for a 48-bit PNG
        args = tile[3]  # (not "BGR;16": that is 16 bits per *pixel*, a 5-6-5 BMP)
        raw = args if isinstance(args, str) else args[0] if isinstance(args, tuple) and args else ""
        if isinstance(raw, str) and raw.endswith((";16B", ";16L", ";16N")):
            return True
    return False


def _upright(im):
    """Apply the EXIF orientation (phone photos), which the saved output would otherwise lose.

    Best effort: a damaged EXIF block leaves the image as stored rather than refusing it."""
    from PIL import ImageOps

    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - Pillow raises many types for malformed EXIF; orientation is optional
        return im


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] → (H, W, C) uint8, rounded."""
    return (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def save_image(path: str, rgb: torch.Tensor, alpha: torch.Tensor | None = None, *, overwrite: bool = True) -> None:
    """Write (3, H, W) [+ (1, H, W) alpha] atomically; the format follows the extension. ``overwrite=False``
    refuses to replace a file that exists when the image is ready (see :func:`cfm_core.checkpoint.atomic_write`)."""
    from PIL import Image

    from .checkpoint import atomic_write

    array = to_uint8(torch.cat([rgb, alpha]) if alpha is not None else rgb)
    image = Image.fromarray(array, "RGBA" if alpha is not None else "RGB")
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP",
           ".tif": "TIFF", ".tiff": "TIFF"}.get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise CFMError(f"output {path!r} has an unknown image extension; use .png, .jpg or .webp")
    if fmt == "JPEG" and alpha is not None:
        raise CFMError(f"output {path!r}: JPEG cannot store alpha; write .png or pass --drop-alpha")
    options = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}  # Pillow's defaults (75/80) blur fine detail

    def write(tmp: str) -> None:
        image.save(tmp, format=fmt, **options)
        os.chmod(tmp, _new_file_mode())  # the temporary file is private (0600); give the result the usual mode

    atomic_write(path, write, overwrite=overwrite)


def _new_file_mode() -> int:
    """0666 minus the process umask: the mode ``open()`` would have given a new file."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask
