"""Write the photographs that ship inside scikit-image (and one inside matplotlib) into train/, heldout/ and val/.

Licences (from scikit-image's data docstrings): astronaut, hubble_deep_field, rocket: public domain (NASA/SpaceX);
camera, chelsea, coffee, retina, brick, grass, gravel: CC0; coins, immunohistochemistry: no known copyright
restrictions. Held out from training: chelsea, coffee, rocket (and motorcycle_left, used for evaluation only and
never redistributed: its licence is not stated).
val/ (used to choose inference settings, never trained on or reported as held out): matplotlib's grace_hopper.jpg
(US Navy photo, public domain), scikit-image's cell (CC0) and moon (licence not stated; evaluation only), the grey
ones saved as RGB.
flat-val/ (a smooth image to check that the model leaves flat content flat while choosing settings; cell and moon
are the flat *test* images from round 6 on): scikit-image's clock_motion (CC0, a motion-blurred wall clock by Stefan
van der Walt), saved as RGB.
usage: python scripts/export_skimage_photos.py OUT_DIR
"""
import os
import shutil
import sys

import skimage

from cfm_core.checkpoint import atomic_write  # an interrupted export leaves no half-written photo behind

TRAIN = ["astronaut.png", "camera.png", "brick.png", "grass.png", "gravel.png", "coins.png",
         "hubble_deep_field.jpg", "retina.jpg", "ihc.png"]
HELDOUT = ["chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png"]
VAL_GREY = ["cell.png", "moon.png"]
FLAT_VAL = ["clock_motion.png"]


def main(out: str) -> None:
    src = os.path.join(os.path.dirname(skimage.__file__), "data")
    for split, names in (("train", TRAIN), ("heldout", HELDOUT)):
        os.makedirs(os.path.join(out, split), exist_ok=True)
        for name in names:
            atomic_write(os.path.join(out, split, name), lambda tmp, f=name: shutil.copyfile(os.path.join(src, f), tmp))
    export_validation(src, os.path.join(out, "val"))
    export_grey(src, os.path.join(out, "flat-val"), FLAT_VAL)
    print(f"wrote {len(TRAIN)} training, {len(HELDOUT)} held-out, {len(VAL_GREY) + 1} validation and {len(FLAT_VAL)} "
          f"flat validation photos to {out}")


def export_validation(skimage_data: str, folder: str) -> None:
    import matplotlib

    os.makedirs(folder, exist_ok=True)
    hopper = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    atomic_write(os.path.join(folder, "grace_hopper.jpg"), lambda tmp: shutil.copyfile(hopper, tmp))
    export_grey(skimage_data, folder, VAL_GREY)


def export_grey(skimage_data: str, folder: str, names: list[str]) -> None:
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    for name in names:
        with Image.open(os.path.join(skimage_data, name)) as grey:
            rgb = grey.convert("RGB")
        atomic_write(os.path.join(folder, name), lambda tmp, image=rgb: image.save(tmp, format="PNG"))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "data/skimage")
