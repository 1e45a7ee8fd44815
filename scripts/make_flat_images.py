"""Flat, grainy or soft 8-bit versions of images: validation sets for the failure modes of smooth images.

Natural flat images (astronomy, microscopy, fog, night shots) have three things at once: low contrast, sensor grain
of a grey level or two, and 8-bit steps. Each input image is faded towards its mean colour to ``--contrast`` of its
own contrast, given Gaussian grain of ``--grain`` grey levels (of 255, per pixel and channel, seeded by the file
name) and rounded to 8 bits. ``--blur S`` first softens the image with a Gaussian of S pixels (an image with no
detail at its own resolution: optically soft, or already upscaled), and the names get ``-b<S>``. One PNG per image
and setting: ``<stem>[-b<blur>]-c<contrast>-g<grain>.png``. Made from validation images only, so nothing here is a
training or test image.
usage: python scripts/make_flat_images.py OUT_DIR IMAGE... [--contrast 0.1 0.25] [--grain 0 1.5] [--blur 0 2]
                                          [--overwrite]
"""
import argparse
import hashlib
import itertools
import os
import sys

import numpy as np
from PIL import Image

from cfm_core.checkpoint import atomic_write


def flat_version(rgb: np.ndarray, contrast: float, grain: float, seed: int, blur: float = 0.0) -> np.ndarray:
    """uint8 (H, W, 3): ``rgb`` blurred, faded to ``contrast`` about its channel means, plus grain, rounded, clipped."""
    x = rgb.astype(np.float64)
    if blur > 0:
        from scipy.ndimage import gaussian_filter

        x = gaussian_filter(x, sigma=(blur, blur, 0), mode="reflect")
    mean = x.mean((0, 1), keepdims=True)
    y = mean + contrast * (x - mean)
    if grain > 0:
        y = y + grain * np.random.default_rng(seed).standard_normal(y.shape)
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("images", nargs="+")
    p.add_argument("--contrast", type=float, nargs="+", default=[0.1, 0.25])
    p.add_argument("--grain", type=float, nargs="+", default=[0.0, 1.5])
    p.add_argument("--blur", type=float, nargs="+", default=[0.0])
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    if any(not 0 < c <= 1 for c in a.contrast) or any(g < 0 for g in a.grain + a.blur):
        print("error: --contrast must be in (0, 1], --grain and --blur >= 0", file=sys.stderr)
        return 2
    os.makedirs(a.out, exist_ok=True)
    made = 0
    for path in a.images:
        try:
            rgb = np.asarray(Image.open(path).convert("RGB"))
        except OSError as exc:
            print(f"error: cannot read {path}: {exc}", file=sys.stderr)
            return 2
        stem = os.path.splitext(os.path.basename(path))[0]
        for b, c, g in itertools.product(a.blur, a.contrast, a.grain):
            name = f"{stem}{f'-b{b:g}' if b else ''}-c{c:g}-g{g:g}.png"
            dst = os.path.join(a.out, name)
            if os.path.exists(dst) and not a.overwrite:
                print(f"error: {dst} exists; pass --overwrite to replace it", file=sys.stderr)
                return 2
            seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
            img = Image.fromarray(flat_version(rgb, c, g, seed, b))
            atomic_write(dst, lambda f, img=img: img.save(f, format="PNG"))
            made += 1
    print(f"{made} images in {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
