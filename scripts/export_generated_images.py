"""Generated images, illustrations and renders from ComfyUI's own workflow templates, split into train/val/test.

The bundled model's users upscale mostly the outputs of text-to-image models. ComfyUI's template browser ships
hundreds of such outputs as thumbnails, in five MIT-licensed PyPI wheels of Comfy-Org/workflow_templates (the
versions below, pinned so that the split never changes); they are images made by SD1.5, SDXL, SD3.5, Flux, HiDream,
Qwen-Image, the API models and others, plus renders, illustrations and a few UI screenshots.

Kept: still images (animated WebP previews of videos are left out) whose short side is at least 384 px, once each
(identical pictures in several wheels are kept once), except control maps that nobody upscales (file names with
canny, depth, pose, lineart, normal or mask). Each is shrunk with Lanczos by 1.5× (and further, to a 512 px short
side, when larger), which puts the WebP compression of the thumbnails below a pixel, as the other exports do for
JPEG. The split is fixed by a seeded shuffle of the sorted template names, before anything is trained or evaluated
(images of one template are near-twins, so a template goes wholly to one set): 24 templates to ``val-gen/`` and 24
to ``test-gen/`` (one image each), the rest to ``train/`` (prefixed ``gen-``).
usage: python scripts/export_generated_images.py OUT_DIR [--cache DIR]
"""
import argparse
import glob
import hashlib
import io
import os
import random
import re
import subprocess
import sys
import zipfile

from PIL import Image

from cfm_core.checkpoint import atomic_write

WHEELS = {
    "comfyui-workflow-templates-media-image": "0.3.160",
    "comfyui-workflow-templates-media-api": "0.3.84",
    "comfyui-workflow-templates-media-other": "0.3.229",
    "comfyui-workflow-templates-media-assets-01": "0.1.48",
    "comfyui-workflow-templates-media-assets-02": "0.1.24",
}
MIN_SIDE = 384
SHRINK = 1.5
MAX_SHORT_SIDE = 512
SKIP_WORDS = ("canny", "depth", "pose", "lineart", "normal", "mask")
N_VALIDATION = N_TEST = 24
SPLIT_SEED = 0


def download(cache: str) -> list[str]:
    """The pinned wheels in ``cache`` (downloaded once with pip)."""
    os.makedirs(cache, exist_ok=True)
    paths = []
    for name, version in WHEELS.items():
        pattern = os.path.join(cache, f"{name.replace('-', '_')}-{version}-*.whl")
        if not glob.glob(pattern):
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", cache,
                            f"{name}=={version}"], check=True)
        paths.append(sorted(glob.glob(pattern))[-1])
    return paths


def candidates(wheels: list[str]) -> dict[str, Image.Image]:
    """name → RGB image of every kept still image, each distinct picture once."""
    found, seen = {}, set()
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            for entry in sorted(zf.namelist()):
                stem, ext = os.path.splitext(os.path.basename(entry))
                if ext.lower() not in (".webp", ".png", ".jpg", ".jpeg") or any(w in stem.lower() for w in SKIP_WORDS):
                    continue
                try:
                    image = Image.open(io.BytesIO(zf.read(entry)))
                    if getattr(image, "n_frames", 1) > 1 or min(image.size) < MIN_SIDE:
                        continue
                    image = image.convert("RGB")
                except OSError:
                    continue
                digest = hashlib.sha1(image.resize((32, 32), Image.BILINEAR).tobytes()).hexdigest()
                if digest in seen or stem in found:
                    continue
                seen.add(digest)
                found[stem] = image
    return found


def shrink(image: Image.Image) -> Image.Image:
    scale = max(SHRINK, min(image.size) / MAX_SHORT_SIDE)
    return image.resize((round(image.width / scale), round(image.height / scale)), Image.LANCZOS)


def template(name: str) -> str:
    """The template an image belongs to: ``flux_schnell-2`` → ``flux_schnell`` (its images are near-twins)."""
    return re.sub(r"-\d+$", "", name)


def split(names: list[str]) -> dict[str, str]:
    """name → folder, by whole templates (near-twin images never straddle two sets); depends only on the sorted
    names and the seed. Validation and test take one image per template, the first of its sorted names."""
    groups: dict[str, list[str]] = {}
    for name in sorted(names):
        groups.setdefault(template(name), []).append(name)
    order = sorted(groups)
    random.Random(SPLIT_SEED).shuffle(order)
    folders = {}
    for i, key in enumerate(order):
        folder = "val-gen" if i < N_VALIDATION else "test-gen" if i < N_VALIDATION + N_TEST else "train"
        for j, name in enumerate(groups[key]):
            folders[name] = folder if folder == "train" or j == 0 else "unused"
    return folders


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--cache", default=os.path.join("runs", "downloads"))
    args = ap.parse_args()
    images = candidates(download(args.cache))
    counts: dict[str, int] = {}
    for name, folder in split(list(images)).items():
        if folder == "unused":
            continue
        os.makedirs(os.path.join(args.out, folder), exist_ok=True)
        filename = f"gen-{name}.png"
        small = shrink(images[name])
        atomic_write(os.path.join(args.out, folder, filename), lambda tmp, im=small: im.save(tmp, format="PNG"))
        counts[folder] = counts.get(folder, 0) + 1
    print(", ".join(f"{n} to {folder}/" for folder, n in sorted(counts.items())) + f" in {args.out}")


if __name__ == "__main__":
    main()
