"""Write a random-weight VAE of one family (sd15, sdxl, sd3, flux) in one of the layouts users have, for tests and
for checks in a real ComfyUI. No weights are downloaded: the architecture is the family's published diffusers
config (AutoencoderKL; SD3/Flux: 16 latent channels, no quant_conv/post_quant_conv), the weights are random.

Layouts (what users hold):
  ldm         a single-file VAE with the original LDM keys (vae-ft-mse-840000, sdxl_vae, Flux's ae.safetensors)
  diffusers   a single-file VAE with diffusers keys (a copied vae/diffusion_pytorch_model.safetensors)
  folder      a diffusers pipeline folder: model_index.json + vae/config.json + vae weights
  checkpoint  a full model checkpoint with the VAE inside (``first_stage_model.``, Flux: ``vae.``) beside a few
              tensors of the family's diffusion model and text encoders (tiny stand-ins at the real key names)

``--small`` shrinks every block to 32 channels (same keys and depth, 8× downscale) for fast tests; without it the
widths are the published ones (128, 256, 512, 512), which ComfyUI's VAELoader needs (it hard-codes them).

usage: .venv/bin/python scripts/make_family_vae.py --family flux --layout ldm OUT.safetensors [--small] [--seed N]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

import torch

PUBLISHED_WIDTHS = (128, 256, 512, 512)
SMALL_WIDTHS = (32, 32, 32, 32)
# the published diffusers VAE configs (vae/config.json of SD1.5, SDXL, SD3.5, FLUX.1)
FAMILY_CONFIGS = {
    "sd15": {"latent_channels": 4, "scaling_factor": 0.18215, "pipeline": "StableDiffusionPipeline"},
    "sdxl": {"latent_channels": 4, "scaling_factor": 0.13025, "pipeline": "StableDiffusionXLPipeline"},
    "sd3": {"latent_channels": 16, "scaling_factor": 1.5305, "shift_factor": 0.0609, "use_quant_conv": False,
            "use_post_quant_conv": False, "pipeline": "StableDiffusion3Pipeline"},
    "flux": {"latent_channels": 16, "scaling_factor": 0.3611, "shift_factor": 0.1159, "use_quant_conv": False,
             "use_post_quant_conv": False, "pipeline": "FluxPipeline"},
}
# a few tensors of what sits beside the VAE in each family's full checkpoint (real key names, tiny shapes)
CHECKPOINT_NEIGHBOURS = {
    "sd15": ("model.diffusion_model.input_blocks.0.0.weight",
             "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"),
    "sdxl": ("model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.label_emb.0.0.weight",
             "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight"),
    "sd3": ("model.diffusion_model.joint_blocks.0.context_block.attn.qkv.weight",
            "text_encoders.clip_l.transformer.text_model.embeddings.token_embedding.weight"),
    "flux": ("model.diffusion_model.double_blocks.0.img_attn.qkv.weight",
             "model.diffusion_model.img_in.weight"),
}
CHECKPOINT_PREFIX = {"sd15": "first_stage_model.", "sdxl": "first_stage_model.", "sd3": "first_stage_model.",
                     "flux": "vae."}
LAYOUTS = ("ldm", "diffusers", "folder", "checkpoint")


def build_vae(family: str, *, small: bool = True, seed: int = 0):
    """A random-weight diffusers AutoencoderKL with the family's published architecture (widths shrunk if small)."""
    from diffusers import AutoencoderKL

    cfg = {k: v for k, v in FAMILY_CONFIGS[family].items() if k != "pipeline"}
    widths = SMALL_WIDTHS if small else PUBLISHED_WIDTHS
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=widths, layers_per_block=2,
                            norm_num_groups=32, sample_size=512 if small else 1024, **cfg)
        with torch.no_grad():  # random init leaves the posterior mean nearly constant; make it depend on the input
            for p in vae.parameters():
                p.add_(torch.randn_like(p) * 0.02)
    return vae.eval()


def diffusers_to_ldm(sd: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """The original LDM key layout of a diffusers AutoencoderKL state dict (what ComfyUI and ae.safetensors use)."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    top = DIFFUSERS_TO_LDM_MAPPING["vae"]
    attention = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for key, value in sd.items():
        if key in top:
            out[top[key]] = value
            continue
        key = key.replace("conv_shortcut", "nin_shortcut")
        if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            out[f"encoder.down.{m[1]}.block.{m[2]}.{m[3]}"] = value
        elif m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.+)", key):
            out[f"encoder.down.{m[1]}.downsample.{m[2]}"] = value
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            out[f"decoder.up.{levels - 1 - int(m[1])}.block.{m[2]}.{m[3]}"] = value
        elif m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
            out[f"decoder.up.{levels - 1 - int(m[1])}.upsample.{m[2]}"] = value
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
            out[f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"] = value
        elif m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", key):
            name = attention[m[2]]
            out[f"{m[1]}.mid.attn_1.{name}.{m[3]}"] = value[..., None, None] if value.ndim == 2 else value
        else:
            raise AssertionError(f"unmapped diffusers VAE key {key}")
    return out


def save_layout(vae, family: str, layout: str, out: str, *, dtype: torch.dtype = torch.float32,
                metadata: dict[str, str] | None = None) -> str:
    """Write ``vae`` at ``out`` in ``layout``; returns the path to pass as ``--vae`` (the folder for ``folder``)."""
    from safetensors.torch import save_file

    sd = {k: v.detach().to(dtype).contiguous() for k, v in vae.state_dict().items()}
    if layout == "folder":
        vae.save_pretrained(os.path.join(out, "vae"), safe_serialization=True)
        with open(os.path.join(out, "model_index.json"), "w") as fh:
            json.dump({"_class_name": FAMILY_CONFIGS[family]["pipeline"], "vae": ["diffusers", "AutoencoderKL"]}, fh)
        return out
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    if layout == "diffusers":
        save_file(sd, out, metadata=metadata)
        return out
    ldm = diffusers_to_ldm(sd, len(vae.config.block_out_channels))
    if layout == "ldm":
        save_file(ldm, out, metadata=metadata)
        return out
    if layout != "checkpoint":
        raise SystemExit(f"--layout {layout!r} is unknown; use one of {LAYOUTS}")
    prefix = CHECKPOINT_PREFIX[family]
    full = {prefix + k: v for k, v in ldm.items()}
    full.update({k: torch.zeros(4, 4, dtype=dtype) for k in CHECKPOINT_NEIGHBOURS[family]})
    save_file(full, out, metadata=metadata)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="file to write (a folder for --layout folder)")
    ap.add_argument("--family", required=True, choices=tuple(FAMILY_CONFIGS))
    ap.add_argument("--layout", default="ldm", choices=LAYOUTS)
    ap.add_argument("--small", action="store_true", help="32-channel blocks (tests); default: published widths")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fp16", action="store_true", help="store the tensors in fp16")
    args = ap.parse_args(argv)
    vae = build_vae(args.family, small=args.small, seed=args.seed)
    path = save_layout(vae, args.family, args.layout, args.out, dtype=torch.float16 if args.fp16 else torch.float32)
    print(f"{path}: random {args.family} VAE, {args.layout} layout, "
          f"{sum(p.numel() for p in vae.parameters()):,} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
