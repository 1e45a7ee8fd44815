"""A fresh set of renders and illustrations, never trained on, validated on or tested before: Debian wallpapers.

Round 13 had used its test set four times (docs/round13-selection-rule.md), so its result is also *reported* on
images that no round has seen: the 19 raster wallpapers of two Debian packages, which look like what users upscale
(smooth gradients, 3D renders, glossy illustrations, textures):

- ``ukui-wallpapers`` (20.04.3): all 12, CC BY-SA 3.0 (debian/copyright: Ubuntu Kylin community contributors),
- ``gnome-backgrounds`` (43.1): the 7 light (``-l``) variants of 4096² (the dark ones are twins; ``vnc`` is 256²),
  CC BY-SA 3.0 (Jakub Steiner and the GNOME artists, debian/copyright).

Each is shrunk with Lanczos so its long side is 640 px (like ``export_wallpaper_photos.py``), which puts the WebP/JPEG
compression below a pixel. All go to one folder; nothing is chosen by looking at results.
usage: python scripts/export_fresh_art.py OUT_DIR [--cache DIR]
"""
import argparse
import glob
import os

from export_wallpaper_photos import unpack  # scripts/ is on sys.path when this file runs
from PIL import Image

from cfm_core.checkpoint import atomic_write

PACKAGES = {"ukui-wallpapers": "usr/share/backgrounds/*.*", "gnome-backgrounds": "usr/share/backgrounds/gnome/*-l.webp"}
LONG_SIDE = 640
MIN_SIDE = 1024
FOLDER = "fresh-art"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--cache", default=os.path.join("runs", "downloads"))
    args = ap.parse_args()
    Image.MAX_IMAGE_PIXELS = None  # the wallpapers are up to 4096², from a signed Debian package
    written = 0
    for package, pattern in PACKAGES.items():
        for path in sorted(glob.glob(os.path.join(unpack(package, args.cache), pattern))):
            with Image.open(path) as im:
                rgb = im.convert("RGB")
            if min(rgb.size) < MIN_SIDE:
                continue
            scale = LONG_SIDE / max(rgb.size)
            small = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)), Image.Resampling.LANCZOS)
            name = f"{package.split('-')[0]}-{os.path.splitext(os.path.basename(path))[0]}.png"
            atomic_write(os.path.join(args.out, FOLDER, name), lambda tmp, im=small: im.save(tmp, "PNG"))
            written += 1
    print(f"wrote {written} images to {os.path.join(args.out, FOLDER)}")


if __name__ == "__main__":
    main()
