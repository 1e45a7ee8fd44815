"""Fresh validation and held-out photographs from three Debian wallpaper packages (none of them ever trained on).

Round 4 of the bundled model (README, *How the defaults were chosen*) needed a
held-out set nobody had looked at and a validation set that resembles it. The 26 photographs (artwork left out)
among the wallpapers of these packages are used, each with the licence its debian/copyright gives:

- ``lomiri-wallpapers-16.04``: 13 photos, CC BY 4.0 / CC BY-SA 4.0 / CC0 1.0 (analogpattern and umang are
  artwork and left out),
- ``lomiri-wallpapers-20.04``: Kleiber by Lukas Baubkus, CC BY-SA 3.0 (the other three are artwork),
- ``mate-backgrounds``: the 12 photos in ``nature/``, GPL-2+.

Each is shrunk with Lanczos so its long side is 640 px (2× to 9×), which puts JPEG blocking and camera noise below
a pixel, like the other photos. The split is fixed by a seeded shuffle of the sorted names, not by looking: the first
10 go to ``val-new/``, the other 16 to ``heldout-new/``. Nothing here goes to train/.
usage: python scripts/export_wallpaper_photos.py OUT_DIR [--cache DIR]
"""
import argparse
import glob
import os
import random
import subprocess

from PIL import Image

from cfm_core.checkpoint import atomic_write

PACKAGES = {
    "lomiri-wallpapers-16.04": ["Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Picture_0B_by_freespace",
                                "Picture_1A_by_freespace", "Wine_by_Jakkub_Mede", "aitzgorri_by_Aitzol_Berasategi",
                                "free_by_Peter_Nerlich", "friends_by_Aitzol_Berasategi",
                                "greentock_by_Peter_Nerlich", "life_by_Aitzol_Berasategi",
                                "picosdeeuropa_by_Aitzol_Berasategi", "seeding_by_Clements_Engelhardt",
                                "sunset_by_Aitzol_Berasategi"],
    "lomiri-wallpapers-20.04": ["Kleiber_by_Lukas_Baubkus"],
    "mate-backgrounds": ["Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops",
                         "Storm", "TwoWings", "Wood", "YellowFlower"],
}
LONG_SIDE = 640
N_VALIDATION = 10
SPLIT_SEED = 0


def unpack(package: str, cache: str) -> str:
    """Download ``package``'s .deb into ``cache`` once and unpack it; the unpacked root."""
    os.makedirs(cache, exist_ok=True)
    pattern = os.path.join(cache, f"{package}_*.deb")
    if not glob.glob(pattern):
        subprocess.run(["apt-get", "download", package], cwd=cache, check=True)
    root = os.path.join(cache, package)
    if not os.path.isdir(root):
        subprocess.run(["dpkg-deb", "-x", sorted(glob.glob(pattern))[-1], root], check=True)
    return root


def shrink(path: str) -> Image.Image:
    with Image.open(path) as im:
        rgb = im.convert("RGB")
    scale = LONG_SIDE / max(rgb.size)
    return rgb.resize((round(rgb.width * scale), round(rgb.height * scale)), Image.Resampling.LANCZOS)


def split(names: list[str]) -> dict[str, str]:
    """name → "val-new" or "heldout-new", by a seeded shuffle of the sorted names."""
    order = sorted(names)
    random.Random(SPLIT_SEED).shuffle(order)
    return {name: "val-new" if i < N_VALIDATION else "heldout-new" for i, name in enumerate(order)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--cache", default=os.path.join("runs", "downloads"))
    args = ap.parse_args()
    sources = {}
    for package, photos in PACKAGES.items():
        root = unpack(package, args.cache)
        for photo in photos:
            found = glob.glob(os.path.join(root, "usr/share/**", f"{photo}.jpg"), recursive=True)
            if len(found) != 1:
                raise SystemExit(f"{package}: expected one {photo}.jpg, found {len(found)}; has the package changed?")
            sources[f"{package.split('-')[0]}-{photo}.png"] = found[0]
    folders = split(list(sources))
    for name, folder in sorted(folders.items()):
        atomic_write(os.path.join(args.out, folder, name), lambda tmp, src=sources[name]: shrink(src).save(tmp, "PNG"))
    held_out = sum(folder == "heldout-new" for folder in folders.values())
    print(f"wrote {len(folders) - held_out} validation and {held_out} held-out photos to {args.out}")


if __name__ == "__main__":
    main()
