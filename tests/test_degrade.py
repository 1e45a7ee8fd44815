"""Low-res degradations: spec parsing, determinism, shapes, what each op does, and bad specs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cfm_core.errors import CFMError
from cfm_core.train.degrade import RESIZE_KERNELS, Degradation, gaussian_blur, jpeg_roundtrip

FULL = "blur=0.2-1.5,noise=0-0.03,jpeg=60-95,resize=random"




@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """A 64×48 crop of skimage's chelsea, area-downsampled: (3, 48, 64) in [0, 1]."""
    from skimage import data

    image = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float() / 255
    return F.interpolate(image[None], size=(96, 128), mode="area")[0, :, 24:72, 32:96].contiguous()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_parse_reads_every_field_and_round_trips():
    d = Degradation.parse(FULL)
    assert d.blur == (0.2, 1.5) and d.noise == (0.0, 0.03) and d.jpeg == (60, 95)
    assert d.resize == RESIZE_KERNELS and d.rescale == (0.5, 1.0)
    assert Degradation.parse(d.to_spec()) == d
    fixed = Degradation.parse("resize=bicubic|area, rescale=0.7, blur=1")
    assert fixed.resize == ("bicubic", "area") and fixed.rescale == (0.7, 0.7) and fixed.blur == (1.0, 1.0)
    assert Degradation.parse(fixed.to_spec()) == fixed
    assert Degradation.parse("none").is_identity and Degradation.parse("").to_spec() == "none"


def test_same_seed_same_result_other_seed_other_result(photo):
    d = Degradation.parse(FULL)
    first, again = d.apply(photo, gen(7)), d.apply(photo, gen(7))
    assert torch.equal(first, again)
    assert not torch.equal(first, d.apply(photo, gen(8)))


@pytest.mark.parametrize("shape", [(3, 48, 64), (3, 37, 53), (2, 3, 20, 24)])
def test_shape_dtype_and_range_are_kept(shape):
    image = torch.rand(shape, generator=gen(0))
    out = Degradation.parse(FULL).apply(image, gen(1))
    assert out.shape == image.shape and out.dtype == image.dtype
    assert out.min() >= 0 and out.max() <= 1


def test_batch_images_draw_their_own_parameters():
    image = torch.rand(3, 32, 32, generator=gen(0))
    out = Degradation.parse("noise=0.05").apply(torch.stack([image, image]), gen(1))
    assert not torch.equal(out[0], out[1])


@pytest.mark.parametrize("spec", ["blur=1.0", "noise=0.05", "jpeg=30", "resize=bicubic,rescale=0.5",
                                  "resize=nearest,rescale=0.5"])
def test_each_op_changes_the_image(photo, spec):
    out = Degradation.parse(spec).apply(photo, gen(0))
    assert (out - photo).abs().mean() > 2e-3, spec


def test_identity_spec_leaves_the_image_alone(photo):
    assert torch.equal(Degradation.parse("none").apply(photo, gen(0)), photo)


def test_blur_matches_scipy_gaussian_filter(photo):
    from scipy.ndimage import gaussian_filter

    reference = gaussian_filter(photo.double().numpy(), sigma=(0, 1.3, 1.3), mode="mirror", truncate=3.0)
    # scipy's radius is int(3σ + 0.5) = 4 = ⌈3σ⌉ for σ = 1.3
    np.testing.assert_allclose(gaussian_blur(photo, 1.3).numpy(), reference, atol=1e-5)


def test_noise_has_the_configured_standard_deviation():
    grey = torch.full((3, 64, 64), 0.5)
    out = Degradation.parse("noise=0.05").apply(grey, gen(3))
    assert (out - grey).std().item() == pytest.approx(0.05, rel=0.03)


def test_lower_jpeg_quality_loses_more(photo):
    errors = [(jpeg_roundtrip(photo, q) - photo).abs().mean().item() for q in (95, 60, 20)]
    assert errors == sorted(errors) and errors[0] > 0, errors


@pytest.mark.parametrize("spec, part", [
    ("blur=abc", "blur=abc"),
    ("sharpen=1", "sharpen=1"),
    ("blur", "'blur'"),
    ("jpeg=50.5-90", "jpeg=50.5-90"),
    ("noise=0.5-0.1", "noise=0.5-0.1"),
    ("blur=1,blur=2", "blur=2"),
    ("resize=lanczos", "lanczos"),
    ("blur=50", "blur=50"),
    ("jpeg=0-90", "jpeg=0-90"),
    ("rescale=0.5", "rescale"),
])
def test_bad_specs_name_the_bad_part(spec, part):
    with pytest.raises(CFMError) as info:
        Degradation.parse(spec)
    assert part in str(info.value)
