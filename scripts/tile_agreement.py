"""How close tiled inference is to untiled inference for a model: PSNR and max |Δ| between the two outputs.

usage: python scripts/tile_agreement.py IMAGE [--model PATH] [--side 512] [--tiles 256 128] [--overlap 8]
The image's centre square is resized to --side² and upscaled 2× whole and with each tile size (latent pixels).
"""
import argparse

import numpy as np
import torch
from PIL import Image

from cfm_core import bundled
from cfm_core.checkpoint import load_model
from cfm_core.evaluate.metrics import psnr
from cfm_core.pipeline import upscale_image


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("image")
    p.add_argument("--model", default=bundled.BUNDLED_MODEL_PATH)
    p.add_argument("--side", type=int, default=512)
    p.add_argument("--tiles", type=int, nargs="+", default=[256, 128])
    p.add_argument("--overlap", type=int, default=8)
    a = p.parse_args()
    torch.set_num_threads(1)
    photo = Image.open(a.image).convert("RGB")
    w, h = photo.size
    s = min(w, h)
    square = photo.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    crop = np.asarray(square.resize((a.side, a.side), Image.BICUBIC)).copy()
    image = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255
    model = load_model(a.model)
    whole, _ = upscale_image(model, image)
    for tile in a.tiles:
        tiled, _ = upscale_image(model, image, tile=tile, overlap=a.overlap)
        print(f"tile {tile} latent px, overlap {a.overlap}: PSNR {psnr(tiled, whole):.1f} dB vs untiled, "
              f"max |Δ| {float((tiled - whole).abs().max()):.2f}")


if __name__ == "__main__":
    main()
