"""The extra-photo export reads the raw image formats inside the scikit-learn and SciPy 1.9 wheels correctly."""
import bz2
import io
import os
import pickle
import zipfile

import numpy as np
from helpers import load_script
from PIL import Image


def _jpeg(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buf, "JPEG")
    return buf.getvalue()


def test_from_wheels_decodes_scipy_raw_arrays(tmp_path):
    rng = np.random.default_rng(0)
    face = rng.integers(0, 256, (768, 1024, 3), dtype=np.uint8)
    ascent = rng.integers(0, 256, (512, 512)).tolist()  # scipy stores a pickled nested list
    sk, sp = tmp_path / "sk.whl", tmp_path / "sp.whl"
    with zipfile.ZipFile(sk, "w") as whl:
        whl.writestr("sklearn/datasets/images/china.jpg", _jpeg("red"))
        whl.writestr("sklearn/datasets/images/flower.jpg", _jpeg("blue"))
    with zipfile.ZipFile(sp, "w") as whl:
        whl.writestr("scipy/misc/face.dat", bz2.compress(face.tobytes()))
        whl.writestr("scipy/misc/ascent.dat", pickle.dumps(ascent))
    photos = load_script("export_extra_photos").from_wheels(str(sk), str(sp))
    assert sorted(photos) == ["scipy-ascent.png", "scipy-face.png", "sklearn-china.jpg", "sklearn-flower.jpg"]
    assert photos["sklearn-china.jpg"] == _jpeg("red")  # copied byte for byte, not re-encoded
    assert np.array_equal(np.asarray(photos["scipy-face.png"]), face)
    grey = np.asarray(photos["scipy-ascent.png"])
    assert grey.shape == (512, 512, 3) and np.array_equal(grey[..., 1], np.array(ascent, dtype=np.uint8))


def test_ascent_unpickling_refuses_anything_but_plain_data():
    import pytest

    script = load_script("export_extra_photos")
    assert script._plain_unpickle(pickle.dumps([[1, 2], [3, 4]])) == [[1, 2], [3, 4]]
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        script._plain_unpickle(pickle.dumps(os.system))


def test_wallpaper_split_is_fixed_disjoint_and_sized():
    script = load_script("export_wallpaper_photos")
    names = [f"{p.split('-')[0]}-{n}.png" for p, photos in script.PACKAGES.items() for n in photos]
    assert len(names) == len(set(names)) == 26
    split = script.split(names)
    assert split == script.split(list(reversed(names)))  # depends on the names, not on the order they come in
    assert sum(v == "val-new" for v in split.values()) == 10
    assert sum(v == "heldout-new" for v in split.values()) == 16


def test_wallpaper_shrink_puts_the_long_side_at_640(tmp_path):
    script = load_script("export_wallpaper_photos")
    for size in [(2560, 1600), (1365, 1074), (2056, 3088)]:
        Image.new("RGB", size, "green").save(tmp_path / "w.jpg")
        small = script.shrink(str(tmp_path / "w.jpg"))
        assert max(small.size) == 640
        assert abs(small.width / small.height - size[0] / size[1]) < 0.01
