"""``python -m cfm_core convert-official IN.ckpt OUT.safetensors``: official checkpoint → our format, no code run."""
from __future__ import annotations

import argparse

from ..checkpoint import convert_official
from ..unet import count_parameters


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="official fm-boosting Lightning .ckpt")
    parser.add_argument("dst", help="output .safetensors")
    parser.add_argument("--online", action="store_true", help="take the online weights instead of the EMA ones")
    parser.add_argument("--overwrite", action="store_true", help="replace DST if it exists (never the input)")
    parser.add_argument("--dim-head", type=int, default=64,
                        help="attention head width the model was trained with (official configs: 64)")


def run(args: argparse.Namespace) -> int:
    model = convert_official(args.src, args.dst, use_ema=not args.online, dim_head=args.dim_head,
                             overwrite=args.overwrite)
    print(f"wrote {args.dst}: {count_parameters(model)} parameters, attention layout 'official'")
    return 0
