"""Write the redistributable photographs that ship inside scikit-image into train/ and heldout/ folders.

Licences (from scikit-image's data docstrings): astronaut, hubble_deep_field, rocket: public domain (NASA/SpaceX);
camera, chelsea, coffee, retina, brick, grass, gravel: CC0; coins, immunohistochemistry: no known copyright
restrictions. Held out from training: chelsea, coffee, rocket (and motorcycle_left, used for evaluation only and
never redistributed: its licence is not stated).
usage: python scripts/export_skimage_photos.py OUT_DIR
"""
import os
import shutil
import sys

import skimage

TRAIN = ["astronaut.png", "camera.png", "brick.png", "grass.png", "gravel.png", "coins.png",
         "hubble_deep_field.jpg", "retina.jpg", "ihc.png"]
HELDOUT = ["chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png"]


def main(out: str) -> None:
    src = os.path.join(os.path.dirname(skimage.__file__), "data")
    for split, names in (("train", TRAIN), ("heldout", HELDOUT)):
        os.makedirs(os.path.join(out, split), exist_ok=True)
        for name in names:
            shutil.copy(os.path.join(src, name), os.path.join(out, split, name))
    print(f"wrote {len(TRAIN)} training and {len(HELDOUT)} held-out photos to {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "data/skimage")
