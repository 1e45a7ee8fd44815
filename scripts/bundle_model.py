"""Copy a trained model with chosen inference defaults, in fp16, e.g. into cfm_core/weights/.

usage: python scripts/bundle_model.py RUN/model.safetensors OUT.safetensors [--solver euler] [--steps 2]
       [--noise-step N] [--dtype fp16] [--contrast-reference-from TRAIN_DIR [--crop 128] | --contrast-reference none]
       [--noise-detail-from TRAIN_DIR [--noise-detail-scale S] | --noise-detail D | --noise-detail none]
The training summary keeps the noise step the model was trained with (``training.noise_step_trained``).
``--contrast-reference-from`` sets a pixel-space model's contrast reference (``cfm_core/contrast.py``) to the median
contrast of its training crops: 4 seeded ``--crop`` crops per image, σ around the per-channel mean in model units.
``--noise-detail-from`` sets the detail-adaptive noise reference (``cfm_core/augment.py``) to S × the median local
detail D of those crops' z_up (box-downsampled 2×, then made as ``upscale_image`` makes it).
"""
import argparse
import dataclasses

import torch

from cfm_core import load_model
from cfm_core.augment import local_detail
from cfm_core.contrast import contrast
from cfm_core.images import list_images, load_image
from cfm_core.pipeline import weights_free_space
from cfm_core.train.train import export_model
from cfm_core.upsample import make_low_res, resize_pixels


def training_crops(folder: str, crop: int, crops_per_image: int = 4, seed: int = 0):
    """Seeded ``crop`` crops of every image in ``folder`` as (1, 3, crop, crop) in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    for path in list_images(folder):
        image = load_image(path, keep_alpha=False).rgb * 2 - 1
        h, w = image.shape[-2:]
        if min(h, w) < crop:
            continue
        for _ in range(crops_per_image):
            top, left = (int(torch.randint(n - crop + 1, (1,), generator=gen)) for n in (h, w))
            yield image[None, :, top:top + crop, left:left + crop]


def median_contrast(folder: str, crop: int) -> float:
    """Median over seeded crops of sqrt(mean (x − per-channel mean)²), with x in the model's [-1, 1] pixels."""
    return float(torch.tensor([float(contrast(c)[0]) for c in training_crops(folder, crop)]).median())


def median_detail(model, folder: str, crop: int) -> float:
    """Median over the pixels of seeded crops of the local detail D of z_up (box 2× down, bilinear up, encode)."""
    space, values = weights_free_space(model), []
    for c in training_crops(folder, crop):
        low = make_low_res((c + 1) / 2, model.config.factor, "box") * 2 - 1
        values.append(local_detail(space.encode(resize_pixels(low, model.config.factor))).flatten())
    return float(torch.cat(values).median())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--solver", default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--noise-step", type=int, default=None)
    p.add_argument("--dtype", default="fp16", choices=("fp16", "bf16", "fp32"))
    p.add_argument("--contrast-reference-from", default=None, metavar="TRAIN_DIR")
    p.add_argument("--contrast-reference", default=None, choices=("none",), help="none: switch it off")
    p.add_argument("--noise-detail-from", default=None, metavar="TRAIN_DIR")
    p.add_argument("--noise-detail-scale", type=float, default=1.0, metavar="S")
    p.add_argument("--noise-detail", default=None, metavar="D|none",
                   help="the detail reference itself (what --noise-detail-from prints), or none: the same noise "
                        "everywhere")
    p.add_argument("--noise-contrast-gate", action="store_true",
                   help="detail-adaptive noise also scaled by min(1, contrast / contrast reference)²")
    p.add_argument("--crop", type=int, default=128, help="training crop size for the references")
    a = p.parse_args()
    src = load_model(a.src)
    cfg = src.config
    training = dict(cfg.training, noise_step_trained=cfg.training.get("noise_step_trained", cfg.noise_step))
    cfg = dataclasses.replace(cfg, default_solver=a.solver or cfg.default_solver,
                              default_steps=a.steps or cfg.default_steps,
                              noise_step=cfg.noise_step if a.noise_step is None else a.noise_step)
    if a.contrast_reference_from:
        cfg = dataclasses.replace(cfg, contrast_reference=round(median_contrast(a.contrast_reference_from, a.crop), 4))
    elif a.contrast_reference == "none":
        cfg = dataclasses.replace(cfg, contrast_reference=None)
    if a.noise_detail_from:
        detail = median_detail(src, a.noise_detail_from, a.crop)
        cfg = dataclasses.replace(cfg, noise_detail=round(a.noise_detail_scale * detail, 5))
        print(f"median local detail of z_up over the training crops: {detail:.5f}")
    elif a.noise_detail is not None:
        cfg = dataclasses.replace(cfg, noise_detail=None if a.noise_detail == "none" else float(a.noise_detail))
    cfg = dataclasses.replace(cfg, noise_contrast_gate=a.noise_contrast_gate)
    export_model(src.net.state_dict(), cfg, a.dst, a.dtype, training)
    print(f"wrote {a.dst}: solver {cfg.default_solver}, steps {cfg.default_steps}, noise step {cfg.noise_step}, "
          f"contrast reference {cfg.contrast_reference}, noise detail {cfg.noise_detail}"
          f"{', contrast-gated' if cfg.noise_contrast_gate else ''}")


if __name__ == "__main__":
    main()
