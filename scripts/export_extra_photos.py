"""Add the photographs shipped inside scikit-learn, SciPy 1.9 and Debian's KDE wallpapers to train/ and val/.

The second training round of the bundled models (README, "A second round that was not shipped") used these on top
of ``export_skimage_photos.py``. Everything comes from PyPI and Debian, the only networks this project assumes:

- scikit-learn wheel, ``sklearn/datasets/images``: china.jpg, flower.jpg (CC BY 2.0, Flickr users danielbuechele
  and vultilion, per the README.txt beside them), 640×427.
- SciPy 1.9.3 wheel, ``scipy/misc``: face.dat (raccoon, public domain per scipy.misc.face's docstring, 1024×768) and
  ascent.dat (public domain per scipy.misc.ascent's docstring, grey 512×512, saved as RGB).
- Debian ``plasma-workspace-wallpapers`` (5.27): the eleven photographs among the wallpapers, each one's
  metadata.json says LGPLv3. They are 2560×1600 JPEGs; each is shrunk 3× (Lanczos) so JPEG blocking and camera noise
  fall below a pixel, as in the scikit-image photos.

val/ gets EveningGlow, FallenLeaf (KDE) and flower.jpg, so the validation set holds colour photographs and not only
the grey cell/moon images; everything else goes to train/. Held-out images are not touched.
usage: python scripts/export_extra_photos.py OUT_DIR [--cache DIR]
"""
import argparse
import bz2
import glob
import io
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from cfm_core.checkpoint import atomic_write

KDE_PHOTOS = ["BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey", "Kite",
              "OneStandsOut", "Path", "summer_1am"]
VALIDATION = {"kde-EveningGlow.png", "kde-FallenLeaf.png", "sklearn-flower.jpg"}
KDE_SHRINK = 3


def download(cache: str) -> dict[str, str]:
    """The two wheels and the .deb, fetched once into ``cache``."""
    os.makedirs(cache, exist_ok=True)
    files = {"sklearn": "scikit_learn-*.whl", "scipy": "scipy-1.9.3-*.whl", "kde": "plasma-workspace-wallpapers_*.deb"}
    if not glob.glob(os.path.join(cache, files["sklearn"])) or not glob.glob(os.path.join(cache, files["scipy"])):
        # scikit-learn 1.9 ships manylinux_2_28 wheels only, SciPy 1.9.3 manylinux2014: ask for either tag.
        platforms = ["--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64"]
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
                        "3.11", *platforms, "-d", cache, "scikit-learn==1.9.1", "scipy==1.9.3"], check=True)
    if not glob.glob(os.path.join(cache, files["kde"])):
        subprocess.run(["apt-get", "download", "plasma-workspace-wallpapers"], cwd=cache, check=True)
    return {k: sorted(glob.glob(os.path.join(cache, v)))[-1] for k, v in files.items()}


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # ascent.dat is a nested list of ints: nothing to import
        raise pickle.UnpicklingError(f"ascent.dat asks for {module}.{name}; refusing (expected plain lists)")


def _plain_unpickle(data: bytes):
    return _NoGlobals(io.BytesIO(data)).load()


def from_wheels(sklearn_whl: str, scipy_whl: str) -> dict[str, Image.Image | bytes]:
    """scikit-learn's JPEGs as their original bytes; SciPy's raw arrays decoded to images."""
    out: dict[str, Image.Image | bytes] = {}
    with zipfile.ZipFile(sklearn_whl) as whl:
        for name in ("china", "flower"):
            out[f"sklearn-{name}.jpg"] = whl.read(f"sklearn/datasets/images/{name}.jpg")
    with zipfile.ZipFile(scipy_whl) as whl:
        face = np.frombuffer(bz2.decompress(whl.read("scipy/misc/face.dat")), dtype=np.uint8).reshape(768, 1024, 3)
        out["scipy-face.png"] = Image.fromarray(face)
        ascent = np.array(_plain_unpickle(whl.read("scipy/misc/ascent.dat")), dtype=np.uint8)
        out["scipy-ascent.png"] = Image.fromarray(ascent).convert("RGB")
    return out


def from_deb(deb: str, workdir: str) -> dict[str, Image.Image]:
    root = os.path.join(workdir, "kde")
    if not os.path.isdir(root):
        subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
    out = {}
    for name in KDE_PHOTOS:
        src = os.path.join(root, "usr/share/wallpapers", name, "contents/images/2560x1600.jpg")
        with Image.open(src) as im:
            small = im.convert("RGB").resize((2560 // KDE_SHRINK, 1600 // KDE_SHRINK), Image.Resampling.LANCZOS)
        out[f"kde-{name}.png"] = small
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--cache", default=os.path.join("runs", "downloads"))
    args = ap.parse_args()
    got = download(args.cache)
    photos = {**from_wheels(got["sklearn"], got["scipy"]), **from_deb(got["kde"], args.cache)}
    counts = {"train": 0, "val": 0}
    for name, photo in sorted(photos.items()):
        split = "val" if name in VALIDATION else "train"
        os.makedirs(os.path.join(args.out, split), exist_ok=True)
        path = os.path.join(args.out, split, name)
        if isinstance(photo, bytes):  # JPEGs from the wheel are copied byte for byte, not re-encoded
            Image.open(io.BytesIO(photo)).verify()
            atomic_write(path, lambda tmp, data=photo: Path(tmp).write_bytes(data))
        else:
            # a half-written photo would be skipped as broken by `train`, silently shrinking the data set
            atomic_write(path, lambda tmp, image=photo: image.save(tmp, format="PNG"))
        counts[split] += 1
    print(f"wrote {counts['train']} training and {counts['val']} validation photos to {args.out}")


if __name__ == "__main__":
    main()
