"""Copy a trained model with chosen inference defaults, in fp16, e.g. into cfm_core/weights/.

usage: python scripts/bundle_model.py RUN/model.safetensors OUT.safetensors [--solver euler] [--steps 2]
       [--noise-step N] [--dtype fp16] [--contrast-reference-from TRAIN_DIR [--crop 128] | --contrast-reference none]
The training summary keeps the noise step the model was trained with (``training.noise_step_trained``).
``--contrast-reference-from`` sets a pixel-space model's contrast reference (``cfm_core/contrast.py``) to the median
contrast of its training crops: 4 seeded ``--crop`` crops per image, σ around the per-channel mean in model units.
"""
import argparse
import dataclasses

import torch

from cfm_core import load_model
from cfm_core.contrast import contrast
from cfm_core.images import list_images, load_image
from cfm_core.train.train import export_model


def median_contrast(folder: str, crop: int, crops_per_image: int = 4, seed: int = 0) -> float:
    """Median over seeded crops of sqrt(mean (x − per-channel mean)²), with x in the model's [-1, 1] pixels."""
    gen = torch.Generator().manual_seed(seed)
    sigmas = []
    for path in list_images(folder):
        image = load_image(path, keep_alpha=False).rgb * 2 - 1
        h, w = image.shape[-2:]
        if min(h, w) < crop:
            continue
        for _ in range(crops_per_image):
            top, left = (int(torch.randint(n - crop + 1, (1,), generator=gen)) for n in (h, w))
            sigmas.append(float(contrast(image[None, :, top:top + crop, left:left + crop])[0]))
    return float(torch.tensor(sigmas).median())


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
    p.add_argument("--crop", type=int, default=128, help="training crop size for --contrast-reference-from")
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
    export_model(src.net.state_dict(), cfg, a.dst, a.dtype, training)
    print(f"wrote {a.dst}: solver {cfg.default_solver}, steps {cfg.default_steps}, noise step {cfg.noise_step}, "
          f"contrast reference {cfg.contrast_reference}")


if __name__ == "__main__":
    main()
